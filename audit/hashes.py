"""Civitai-compatible file hashes in one pass, and the check of hashes embedded in the metadata.

The hashes are those of the Civitai model scanner (civitai/model-scanner @ 0b4705951885b5947f5291d73cc5a571c2303147,
``orchestrator/ModelScanner/Tasks/HashTask.cs``, test vectors in ``orchestrator/ModelScannerTests/HashTaskTests.cs``)
plus AutoV3, which Civitai shows beside them:

  - SHA256: the whole file; AutoV2: its first 10 hex characters;
  - AutoV1: SHA-256 of the 0x10000 bytes at offset 0x100000, first 8 hex characters; None when the file is
    shorter than 0x200000 bytes (the scanner's own rule);
  - AutoV3: SHA-256 of every byte after the 8-byte length prefix and the JSON header, i.e. the tensor data.
    This is what kohya-ss/sd-scripts writes as ``sshs_model_hash`` (``library/train_util.py``,
    ``addnet_hash_safetensors``) and what the ModelSpec ``hash_sha256`` key holds with a ``0x`` prefix
    (Stability-AI/ModelSpec @ 02f627930582cd4ccc9c330835bb66ca9dddc715, README.md);
  - BLAKE3 and CRC32: the whole file. The CRC32 is written in the scanner's byte order: .NET
    ``Crc32.GetCurrentHash`` returns the little-endian bytes, so b"hello world" (CRC 0x0D4A1185) gives
    "85114A0D".

All digests are fed from ONE sequential read of the file in chunks of a few MiB (memory stays at one chunk).
SHA-256 costs most and two of them run over almost the same bytes (whole file and tensor data), so from two
chunks on the work is split over two threads: the calling thread hashes the whole file with SHA-256 and CRC32,
a worker thread hashes the tensor data with SHA-256 and the whole file with BLAKE3. hashlib, ISA-L (the CRC32)
and blake3 release the GIL on large buffers, so the two run in parallel; bench/hashes.py measures both paths.
The same pass feeds the zip search of the polyglot probe when the container left it pending.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from blake3 import blake3

try:  # ISA-L's CRC32: the same values as zlib's, about 6x faster (14 vs 2.2 GB/s measured)
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - isal is a dependency; a platform without its wheel keeps zlib's
    _crc32 = zlib.crc32

from audit import findings as _findings
from audit.container import (
    SPEC_MAX_HEADER_BYTES,
    SafetensorsFile,
    _check_same,
    _ident,
    _preadv_into,
)
from audit.errors import AuditError
from audit.findings import Finding
from audit.record import HashCheck, Hashes

__all__ = ["CHUNK_SIZE", "EMPTY_SHA256", "check_embedded", "check_stated", "compute", "compute_path"]

#: Read size of the single pass: 1-4 MiB measured equal on 2 cores, 8 MiB slower; any size gives the same hashes.
CHUNK_SIZE = 4 << 20
AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000
AUTOV1_MIN_SIZE = 2 * 0x100000
#: SHA-256 of empty input: what a writer gets when it hashes nothing (written by ai-toolkit as a placeholder).
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_HEX = frozenset("0123456789abcdef")
_SHOWN = 80  # at most this many characters of a metadata value in a message
_KEPT = 128  # at most this many characters of a metadata value kept in a HashCheck


# ---------------------------------------------------------------------------------------------------------
# the single pass


class _Digests:
    """The running digests of one pass; ``group_a`` and ``group_b`` touch disjoint state (one thread each)."""

    def __init__(self, size: int, data_start: int | None) -> None:
        self.data_start = data_start
        self.sha = hashlib.sha256()
        self.crc = 0
        self.v1 = hashlib.sha256() if size >= AUTOV1_MIN_SIZE else None
        self.data = hashlib.sha256() if data_start is not None else None
        self.b3 = blake3()

    def group_a(self, view: memoryview, pos: int) -> None:
        """Whole-file SHA-256, CRC32 and the AutoV1 window."""
        self.sha.update(view)
        self.crc = _crc32(view, self.crc)
        if self.v1 is not None:
            lo = max(pos, AUTOV1_OFFSET)
            hi = min(pos + len(view), AUTOV1_OFFSET + AUTOV1_LENGTH)
            if lo < hi:
                self.v1.update(view[lo - pos : hi - pos])

    def group_b(self, view: memoryview, pos: int) -> None:
        """Tensor-data SHA-256 (AutoV3) and whole-file BLAKE3."""
        if self.data is not None:
            skip = self.data_start - pos
            if skip <= 0:
                self.data.update(view)
            elif skip < len(view):
                self.data.update(view[skip:])
        self.b3.update(view)

    def result(self) -> Hashes:
        sha = self.sha.hexdigest().upper()
        return Hashes(
            sha256=sha,
            autov1=self.v1.hexdigest()[:8].upper() if self.v1 is not None else None,
            autov2=sha[:10],
            autov3=self.data.hexdigest().upper() if self.data is not None else None,
            blake3=self.b3.hexdigest().upper(),
            crc32=self.crc.to_bytes(4, "little").hex().upper(),
            data_offset=self.data_start,
        )


def _default_threads() -> int:
    """2 when this process may run on two or more CPUs, else 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return 2 if n >= 2 else 1


def _run(chunks: Iterable[memoryview], size: int, data_start: int | None, threads: int | None,
         chunk_size: int, observe: Callable[[memoryview, int], None] | None = None) -> Hashes:
    """Feed every digest from each chunk, in order, and ``observe(view, pos)`` too when given (in the calling
    thread). ``chunks`` may reuse one buffer: each chunk is fully consumed (both groups finished) before the
    next is requested."""
    if threads is None:
        threads = _default_threads()
    if threads not in (1, 2):
        raise ValueError("threads must be 1, 2 or None")
    d = _Digests(size, data_start)
    pos = 0
    if threads == 1 or size < 2 * chunk_size:  # a thread costs more than it saves on one or two chunks
        for view in chunks:
            d.group_a(view, pos)
            d.group_b(view, pos)
            if observe is not None:
                observe(view, pos)
            pos += len(view)
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora-audit-hash") as worker:
            for view in chunks:
                pending = worker.submit(d.group_b, view, pos)
                try:
                    d.group_a(view, pos)
                    if observe is not None:
                        observe(view, pos)
                finally:
                    pending.result()  # the buffer is reused by the next chunk: wait even if group_a failed
                pos += len(view)
    return d.result()


def compute(sf: SafetensorsFile, *, threads: int | None = None, chunk_size: int = CHUNK_SIZE) -> Hashes:
    """All hashes of an open, validated safetensors file, read through ``sf`` in one sequential pass.

    The bytes hashed are the bytes the container validated: a file that changed since it was opened raises
    ``AuditError("LA122")``. ``threads`` is 1, 2, or None for 2 when this process may use two CPUs (see the
    module docstring); a batch that already runs one worker process per CPU should pass 1. When the file was
    opened with its zip search left pending (``open_safetensors(zip_scan=False)``), the same pass feeds it.
    """
    observe = sf.zip_scan.feed if sf.zip_scan is not None else None
    result = _run(sf.iter_range(0, sf.size, chunk_size), sf.size, sf.data_start, threads, chunk_size, observe)
    sf.check_unchanged()
    return result


# ---------------------------------------------------------------------------------------------------------
# any file


def _open_regular(path: str) -> tuple[int, tuple[int, int, int, int]]:
    """Open a regular file without following a symlink or blocking on a FIFO; (fd, identity)."""
    try:
        st0 = os.lstat(path)
    except OSError as exc:
        raise AuditError("LA101", f"cannot stat the file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st0.st_mode):
        raise AuditError("LA100", "path is not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise AuditError("LA101", f"cannot open the file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (st0.st_dev, st0.st_ino):
            raise AuditError("LA122", "file was replaced between lstat and open")
    except BaseException:
        os.close(fd)
        raise
    return fd, _ident(st)


def _chunks(fd: int, ident, size: int, chunk_size: int) -> Iterator[memoryview]:
    """``[0, size)`` as memoryviews of one reused buffer; a short read is LA122 (changed) or LA118."""
    buf = bytearray(min(chunk_size, max(size, 1)))
    view = memoryview(buf)
    pos = 0
    while pos < size:
        want = min(len(buf), size - pos)
        got = _preadv_into(fd, view[:want], pos)
        if got < want:
            _check_same(fd, ident)
            raise AuditError("LA118", f"short read: got {got} of {want} bytes at offset {pos}")
        yield view[:want]
        pos += want


def compute_path(path: str | os.PathLike, *, threads: int | None = None, chunk_size: int = CHUNK_SIZE) -> Hashes:
    """The same hashes for any regular file, read once, without validating it as safetensors.

    AutoV3 (and ``data_offset``) are given when the first 8 bytes read as a safetensors length prefix that
    fits in the file and under the format's 100 MB header limit, and are None otherwise. The JSON header is NOT
    validated here: for a file that is not safetensors, a value that happens to fit is hashed all the same,
    as Civitai and kohya would. Prefer :func:`compute` on an opened :class:`SafetensorsFile`.
    """
    fd, ident = _open_regular(os.fsdecode(os.fspath(path)))
    try:
        size = ident[2]
        data_start = None
        if size >= 8:
            prefix = bytearray(8)
            if _preadv_into(fd, memoryview(prefix), 0) == 8:
                (n,) = struct.unpack("<Q", prefix)
                if n <= min(SPEC_MAX_HEADER_BYTES, size - 8):
                    data_start = 8 + n
        result = _run(_chunks(fd, ident, size, chunk_size), size, data_start, threads, chunk_size)
        _check_same(fd, ident)
        return result
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# embedded hashes

#: Metadata keys that claim the SHA-256 of the tensor data (AutoV3), and whether ``0x`` is their canonical form.
#: ``sshs_model_hash``: kohya-ss/sd-scripts writes bare hex, so a ``0x`` there is a quirk (LA308).
#: ``modelspec.hash_sha256``: the ModelSpec README asks for a ``0x`` prefix, so bare and prefixed both match.
_TENSOR_HASH_KEYS = (("sshs_model_hash", False), ("modelspec.hash_sha256", True))
#: kohya's 8-hex AutoV1-style hash over an in-memory re-serialisation of the tensors with only the ss_*
#: metadata: no byte range of the file on disk reproduces it, so it is recorded and never judged.
#: ``ss_sd_model_hash`` / ``ss_new_sd_model_hash`` hash the TRAINING checkpoint, not this file: not read here.
_LEGACY_KEY = "sshs_legacy_hash"


def _shown(value: str) -> str:
    """A quoted, escaped rendering of at most ``_SHOWN`` characters of an attacker-controlled value."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}...({len(value)} chars)"


def _verdict(value: str, computed: str, prefix_canonical: bool) -> str:
    if len(value) not in (64, 66):  # cheap bound before lower(): a value may be megabytes long
        return "malformed"
    s = value.lower()
    prefixed = s.startswith("0x")
    digits = s[2:] if prefixed else s
    if len(digits) != 64 or not _HEX.issuperset(digits):
        return "malformed"
    if digits == computed.lower():
        return "match-with-prefix" if prefixed and not prefix_canonical else "match"
    if digits == EMPTY_SHA256:
        return "placeholder"
    return "mismatch"


def check_embedded(metadata: dict[str, str] | None, hashes: Hashes) -> tuple[list[HashCheck], list[Finding]]:
    """Check the tensor-data hashes a writer put into ``__metadata__`` against the computed AutoV3.

    Verdicts: ``match``; ``match-with-prefix`` (LA308, info: ``0x`` where the writer's convention has none);
    ``mismatch`` (LA306); ``placeholder`` (LA307: the SHA-256 of empty input); ``malformed`` (LA306: not 64 hex
    digits, optionally ``0x``-prefixed); ``unverifiable`` (no AutoV3 to compare with, and always for
    ``sshs_legacy_hash``; no finding). Comparison is case-insensitive. ``HashCheck.value`` keeps at most
    128 characters of the value as written.
    """
    checks: list[HashCheck] = []
    found: list[Finding] = []
    if not metadata:
        return checks, found
    for key, prefix_canonical in _TENSOR_HASH_KEYS:
        value = metadata.get(key)
        if not isinstance(value, str):
            continue
        where = "__metadata__." + key
        if hashes.autov3 is None:
            checks.append(HashCheck(key, value[:_KEPT], "autov3", "unverifiable"))
            continue
        verdict = _verdict(value, hashes.autov3, prefix_canonical)
        checks.append(HashCheck(key, value[:_KEPT], "autov3", verdict))
        short = hashes.autov3[:12]
        if verdict == "match-with-prefix":
            found.append(_findings.make(
                "LA308", f"{key} is written with a 0x prefix; without it, it matches AutoV3 {short}", where))
        elif verdict == "mismatch":
            found.append(_findings.make(
                "LA306", f"{key} {_shown(value)} does not match the tensor data's SHA-256 (AutoV3 {short})",
                where))
        elif verdict == "placeholder":
            found.append(_findings.make(
                "LA307", f"{key} is the SHA-256 of empty input, a placeholder; AutoV3 is {short}", where))
        elif verdict == "malformed":
            found.append(_findings.make(
                "LA306", f"{key} is malformed (not 64 hex digits, optionally 0x-prefixed): {_shown(value)}",
                where))
    legacy = metadata.get(_LEGACY_KEY)
    if isinstance(legacy, str):
        checks.append(HashCheck(_LEGACY_KEY, legacy[:_KEPT], "autov1", "unverifiable"))
    return checks, found


# ---------------------------------------------------------------------------------------------------------
# hashes stated by sidecar files

#: Hex lengths a sidecar may state per hash. Civitai's API lists AutoV3 with 12 characters (its display form),
#: compared as a prefix; every other hash is compared whole.
_STATED_LENGTHS = {"sha256": (64,), "autov1": (8,), "autov2": (10,), "autov3": (12, 64), "blake3": (64,),
                   "crc32": (8,)}
_FILES_INDEX = re.compile(r"files\[(\d+)\]")


def _stated_verdict(value: str, computed: str | None, kind: str) -> str:
    if computed is None:
        return "unverifiable"
    if len(value) not in _STATED_LENGTHS[kind]:  # before lower(): bounded work whatever the caller passes
        return "malformed"
    digits = value.lower()
    if not _HEX.issuperset(digits):
        return "malformed"
    return "match" if computed.lower().startswith(digits) else "mismatch"


def check_stated(stated: list[tuple[str, str]], hashes: Hashes,
                 against: Callable[[str], str | None]) -> tuple[list[HashCheck], list[Finding]]:
    """Check the file hashes a sidecar states (``(field, value)`` pairs, e.g. from ``audit.sidecars.hashes``).

    ``against(field)`` names the :class:`Hashes` attribute a field states; fields it does not name are skipped.
    A Civitai sidecar lists every file of a model version (``files[i]``), so per sidecar the entries of the
    file indices with at least one matching hash are kept and the other files' entries dropped; when no index
    matches, every entry is kept and one LA313 says that none of the listed files is this one. A mismatch or a
    malformed value inside a matching entry is an LA313 of its own. Comparison is case-insensitive and exact,
    except AutoV3 stated with 12 characters (Civitai's display form), which is compared as a prefix. A hash the
    file has none of (AutoV1 below 2 MiB) is ``unverifiable``.
    """
    groups: dict[str, list[tuple[int | None, HashCheck]]] = {}
    for field, value in stated:
        kind = against(field)
        if kind not in _STATED_LENGTHS or not isinstance(value, str):
            continue
        m = _FILES_INDEX.search(field)
        source, index = (field[: m.start()], int(m.group(1))) if m else (field, None)
        verdict = _stated_verdict(value, getattr(hashes, kind), kind)
        groups.setdefault(source, []).append((index, HashCheck(field, value[:_KEPT], kind, verdict)))
    checks: list[HashCheck] = []
    found: list[Finding] = []
    for source, items in groups.items():
        matched = {i for i, c in items if c.verdict == "match"}
        if matched:
            items = [(i, c) for i, c in items if i in matched]
        checks.extend(c for _, c in items)
        bad = [c for _, c in items if c.verdict in ("mismatch", "malformed")]
        if not matched and any(c.verdict == "mismatch" for c in bad):
            listed = len({i for i, _ in items})
            what = f"none of the {listed} files it lists matches" if listed > 1 else "the hashes it states do not match"
            name = source.rstrip(":.")
            found.append(_findings.make("LA313", f"{name}: {what} this file (SHA256 {hashes.sha256[:12]})", name))
            bad = [c for c in bad if c.verdict == "malformed"]
        for c in bad:
            if c.verdict == "malformed":
                lengths = " or ".join(map(str, _STATED_LENGTHS[c.against]))
                message = f"{c.field} is malformed (not {lengths} hex digits): {_shown(c.value)}"
            else:
                message = (f"{c.field} {_shown(c.value)} does not match the file's {c.against} "
                           f"{getattr(hashes, c.against)[:12]}, though another hash of the same entry does")
            found.append(_findings.make("LA313", message, c.field))
    return checks, found
