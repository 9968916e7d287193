"""The validating safetensors reader.

Every file is hostile until proven otherwise. :func:`open_safetensors` validates the whole header before it
touches the data, bounds every size before allocating anything sized by the file, and turns each failure into
an :class:`~audit.errors.AuditError` with one stable code (LA100-LA125 in rules/findings.yaml). Non-fatal
oddities (LA150-LA163) become :class:`~audit.findings.Finding` records on the result.

Design rules (see the security reference, section c):
  - ``lstat`` first: only regular files, never symlinks; FIFOs are refused without being opened, and the
    file is opened ``O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC`` and re-checked with ``fstat``;
  - no mmap: every read is a bounded ``os.preadv`` loop, so a file truncated while it is open gives a coded
    error (LA118/LA122), never SIGBUS;
  - the JSON header is parsed strictly (serde_json semantics, which is what the reference parser uses):
    no duplicate keys (also escaped twins), no NaN/Infinity, no lone surrogates, nesting depth checked by
    a bracket scan *before* ``json.loads`` so no RecursionError can occur;
  - the ``safetensors`` library is not used to validate: it accepts duplicate keys and other inputs
    the format disallows;
  - nothing is ever unpickled; the pickle polyglot probe is a static opcode walk.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import re
import stat
import struct
import unicodedata
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from audit import findings as _findings
from audit.dtypes import ACCEPTED_DTYPES, DTYPE_BITS, check_decodable, decode
from audit.errors import AuditError
from audit.findings import Finding

__all__ = [
    "Limits",
    "TensorInfo",
    "SafetensorsFile",
    "open_safetensors",
    "sniff",
    "describe_kind",
    "parse_nested_json",
    "SPEC_MAX_HEADER_BYTES",
]

#: The format's own hard limit on the header length (safetensors ``MAX_HEADER_SIZE``).
SPEC_MAX_HEADER_BYTES = 100_000_000
_U64_MAX = 2**64 - 1
_FIELDS = ("dtype", "shape", "data_offsets")
_FIELD_SET = frozenset(_FIELDS)
_READ_CHUNK = 8 << 20
_MAX_FINDINGS_PER_CODE = 20


@dataclass(frozen=True)
class Limits:
    """Caps applied while reading a file. Every one is configurable; defaults suit LoRA adapters."""

    max_file_bytes: int = 8 * 2**30
    max_header_bytes: int = 16 * 2**20  # never above SPEC_MAX_HEADER_BYTES, whatever is set here
    max_tensors: int = 100_000
    max_rank: int = 8
    max_name_bytes: int = 4096
    max_nested_json_depth: int = 64
    max_nested_json_bytes: int = 2**20


@dataclass(frozen=True)
class TensorInfo:
    """One validated header entry. ``start``/``end`` are ABSOLUTE byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


_new_object = object.__new__


def _tensor_info(name, dtype, shape, numel, start, end) -> TensorInfo:
    """Fast constructor for validated entries (a frozen dataclass __init__ is ~3x slower)."""
    info = _new_object(TensorInfo)
    info.__dict__.update(name=name, dtype=dtype, shape=shape, numel=numel, start=start, end=end)
    return info


# ---------------------------------------------------------------------------------------------------------
# small helpers


def _show(value: str, limit: int = 120) -> str:
    """A quoted, escaped, truncated rendering of an attacker-controlled string for a message."""
    s = value if len(value) <= limit else value[:limit]
    if not (s.isprintable() and "'" not in s and "\\" not in s):
        out = []
        for ch in s:
            if ch == "'" or ch == "\\":
                out.append("\\" + ch)
            elif ch.isprintable():
                out.append(ch)
            else:
                cp = ord(ch)
                out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
        s = "".join(out)
    tail = f"...({len(value)} chars)" if len(value) > limit else ""
    return f"'{s}'{tail}"


def _where(name: str, limit: int = 256) -> str:
    """The ``where`` of a finding: the raw name (renderers escape it), cut to a bounded length."""
    return name if len(name) <= limit else name[:limit]


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show_json(value) -> str:
    """Render a scalar JSON value from the header (shape element, offset...) for a message."""
    if isinstance(value, str):
        return _show(value, 40)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value == 0.0 and str(value).startswith("-"):
            return "-0"
        return repr(value)
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 200 else f"<{value.bit_length()}-bit integer>"
        return text
    return f"<{_json_type(value)}>"


class _Sink:
    """Collects findings, at most a fixed number per code plus one summary line for the rest."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._count: dict[str, int] = {}

    def add(self, code: str, message: str, where: str | None = None) -> None:
        n = self._count.get(code, 0) + 1
        self._count[code] = n
        if n <= _MAX_FINDINGS_PER_CODE:
            self.items.append(_findings.make(code, message, where))

    def result(self) -> list[Finding]:
        out = list(self.items)
        for code, n in self._count.items():
            if n > _MAX_FINDINGS_PER_CODE:
                out.append(_findings.make(code, f"... and {n - _MAX_FINDINGS_PER_CODE} more of the same kind"))
        return out


# ---------------------------------------------------------------------------------------------------------
# bounded reads


def _preadv_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` with a pread loop; returns the number of bytes read (short at EOF)."""
    got = 0
    total = len(view)
    while got < total:
        try:
            n = os.preadv(fd, [view[got:]], offset + got)
        except InterruptedError:  # pragma: no cover - retried by Python already (PEP 475)
            continue
        except OSError as exc:
            raise AuditError("LA101", f"read failed at byte {offset + got}: {exc.strerror or exc}") from None
        if n == 0:
            break
        got += n
    return got


def _pread_bytes(fd: int, offset: int, length: int) -> bytearray:
    """Read up to ``length`` bytes (short at EOF) into a new bytearray."""
    buf = bytearray(length)
    got = _preadv_into(fd, memoryview(buf), offset)
    if got < length:
        del buf[got:]
    return buf


def _ident(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_same(fd: int, ident: tuple[int, int, int, int]) -> None:
    try:
        now = _ident(os.fstat(fd))
    except OSError as exc:
        raise AuditError("LA101", f"fstat failed: {exc.strerror or exc}") from None
    if now != ident:
        what = []
        if now[:2] != ident[:2]:
            what.append("inode")
        if now[2] != ident[2]:
            what.append(f"size {ident[2]} -> {now[2]}")
        if now[3] != ident[3]:
            what.append("mtime")
        raise AuditError("LA122", "file changed while it was being read (" + ", ".join(what) + ")")


# ---------------------------------------------------------------------------------------------------------
# content sniffing

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x7fELF", "elf"),
    (b"\x93NUMPY", "npy"),
    (b"GGUF", "gguf"),
    (b"%PDF-", "pdf"),
)
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

_DESCRIPTIONS = {
    "empty": "an empty file",
    "safetensors": "safetensors",
    "zip": "a zip archive",
    "json": "JSON text",
    "text": "plain text",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "hdf5": "an HDF5 file",
    "gzip": "gzip-compressed data",
    "7z": "a 7z archive",
    "rar": "a RAR archive",
    "xz": "xz-compressed data",
    "zstd": "zstd-compressed data",
    "bzip2": "bzip2-compressed data",
    "tar": "a tar archive",
    "elf": "an ELF executable",
    "npy": "a NumPy .npy array",
    "gguf": "a GGUF model file",
    "pdf": "a PDF document",
    "unknown": "unrecognised binary data",
}

_TEXT_BAD = re.compile(b"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def describe_kind(kind: str) -> str:
    """Human phrase for a :func:`sniff` result, e.g. ``"a pickle (protocol 2)"``, ``"a zip archive"``."""
    if kind.startswith("pickle"):
        return "a " + kind
    return _DESCRIPTIONS.get(kind, kind)


def _pickle_plausible(head: bytes) -> bool:
    """Whether ``head`` parses as the start of a pickle stream (several opcodes, or a complete pickle)."""
    stream = io.BytesIO(head)
    count = 0
    try:
        for op, _arg, _pos in pickletools.genops(stream):
            count += 1
            if op.name == "STOP":
                return count >= 2
            if count >= 32:
                return True
    except Exception:
        # ran out of data (the head is only the first bytes of the file) after a sane start
        return count >= 3 and stream.tell() >= len(head)
    return False


def sniff(head: bytes) -> str:
    """Content type from the leading bytes of a file (pass at least 512 bytes when the file has them).

    Returns one of ``"empty"``, ``"safetensors"``, ``"pickle (protocol N)"`` (N in 0..5; ``"pickle (protocol
    2, legacy torch checkpoint)"`` for the pre-1.6 torch format), ``"zip"``, ``"json"``, ``"text"``, ``"png"``,
    ``"jpeg"``, ``"gif"``, ``"webp"``, ``"hdf5"``, ``"gzip"``, ``"7z"``, ``"rar"``, ``"xz"``, ``"zstd"``, ``"bzip2"``,
    ``"tar"``, ``"elf"``, ``"npy"``, ``"gguf"``, ``"pdf"`` or ``"unknown"``. :func:`describe_kind` words it.
    Nothing is executed: pickles are recognised by a static opcode walk over ``head``.
    """
    head = bytes(head)
    if not head:
        return "empty"
    if len(head) >= 9:
        (n,) = struct.unpack_from("<Q", head)
        if 0 < n <= SPEC_MAX_HEADER_BYTES and head[8 : 8 + 64].lstrip(b" \t\r\n")[:1] == b"{":
            return "safetensors"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "pickle (protocol 2, legacy torch checkpoint)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and _pickle_plausible(head):
        return f"pickle (protocol {head[1]})"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[257:262] == b"ustar":
        return "tar"
    # text: valid UTF-8 (a multi-byte character may be cut at the end of head) without control bytes
    text = None
    if not _TEXT_BAD.search(head):
        for cut in range(4):
            try:
                text = head[: len(head) - cut].decode("utf-8")
                break
            except UnicodeDecodeError:
                continue
    if text is not None:
        body = text.lstrip("\ufeff \t\r\n")
        if body[:1] in ("{", "["):
            return "json"
        if _pickle_plausible(head):
            return "pickle (protocol 0)"
        return "text"
    if _pickle_plausible(head):
        return "pickle (protocol 1)"
    return "unknown"


# ---------------------------------------------------------------------------------------------------------
# zip structure (for the disguised-checkpoint check and the polyglot probe)

_ZIP_METHODS = frozenset({0, 1, 6, 8, 9, 12, 14, 19, 93, 95, 96, 97, 98, 99})


def _printable_name(raw: bytes) -> bool:
    return bool(raw) and all(0x20 <= b != 0x7F for b in raw)


def _find_eocd(fd: int, lo: int, size: int) -> tuple[int, list[str]] | None:
    """Locate a plausible End-Of-Central-Directory record in the last 64 KiB + 22 bytes of ``[lo, size)``.

    Returns ``(offset of the record, first member names)``. Plausible means: consistent disk fields and,
    when the archive has members, a central-directory header signature ``PK\\x01\\x02`` exactly
    ``cd_size`` bytes before the record (which also finds archives embedded at an offset, as zip readers do).
    """
    start = max(lo, size - (0xFFFF + 22))
    tail = bytes(_pread_bytes(fd, start, size - start))
    i = len(tail)
    while True:
        i = tail.rfind(b"PK\x05\x06", 0, i)
        if i < 0 or i + 22 > len(tail):
            if i < 0:
                return None
            continue
        disk, cd_disk, n_disk, n_total, cd_size, _cd_off, comment = struct.unpack_from("<HHHHIIH", tail, i + 4)
        pos = start + i
        if comment > size - (pos + 22) or disk != cd_disk or n_disk != n_total:
            continue
        if n_total == 0 and cd_size == 0:
            return pos, []
        if cd_size == 0xFFFFFFFF or n_total == 0xFFFF:
            # zip64: the real record is described by a locator just before this one
            if pos >= 20 and bytes(_pread_bytes(fd, pos - 20, 4)) == b"PK\x06\x07":
                return pos, []
            continue
        cd_start = pos - cd_size
        if cd_start < 0 or n_total == 0:
            continue
        if bytes(_pread_bytes(fd, cd_start, 4)) != b"PK\x01\x02":
            continue
        return pos, _central_names(fd, cd_start, min(cd_size, 1 << 20))


def _central_names(fd: int, cd_start: int, cd_len: int, max_names: int = 64) -> list[str]:
    cd = bytes(_pread_bytes(fd, cd_start, cd_len))
    names: list[str] = []
    p = 0
    while p + 46 <= len(cd) and cd[p : p + 4] == b"PK\x01\x02" and len(names) < max_names:
        nlen, xlen, clen = struct.unpack_from("<HHH", cd, p + 28)
        names.append(cd[p + 46 : p + 46 + nlen].decode("utf-8", "replace"))
        p += 46 + nlen + xlen + clen
    return names


def _local_header_at(fd: int, pos: int, size: int) -> str | None:
    """If a plausible zip local file header starts at ``pos``, return its member name."""
    if pos + 30 > size:
        return None
    hdr = bytes(_pread_bytes(fd, pos, 30))
    if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
        return None
    version, _flags, method = struct.unpack_from("<HHH", hdr, 4)
    nlen, _xlen = struct.unpack_from("<HH", hdr, 26)
    if (version & 0xFF) > 100 or method not in _ZIP_METHODS or not (1 <= nlen <= 1024) or pos + 30 + nlen > size:
        return None
    raw = bytes(_pread_bytes(fd, pos + 30, nlen))
    if not _printable_name(raw):
        return None
    return raw.decode("utf-8", "replace")


def _zip_member_names(fd: int, size: int, max_names: int = 64) -> list[str]:
    """Member names of a zip archive starting at byte 0 (central directory, else local headers)."""
    found = _find_eocd(fd, 0, size)
    if found is not None and found[1]:
        return found[1]
    names: list[str] = []
    pos = 0
    while len(names) < max_names and pos + 30 <= size:
        name = _local_header_at(fd, pos, size)
        if name is None:
            break
        names.append(name)
        hdr = bytes(_pread_bytes(fd, pos, 30))
        flags = struct.unpack_from("<H", hdr, 6)[0]
        csize = struct.unpack_from("<I", hdr, 18)[0]
        nlen, xlen = struct.unpack_from("<HH", hdr, 26)
        if flags & 0x08 or csize == 0xFFFFFFFF:  # sizes follow the data: cannot walk on without inflating
            break
        pos += 30 + nlen + xlen + csize
    return names


# ---------------------------------------------------------------------------------------------------------
# JSON helpers

_JSON_WS = re.compile(r"[ \t\r\n]*")
_BOM_LEAD = re.compile(rb"[ \t\r\n]*\xef\xbb\xbf")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _DupDict(dict):
    """A JSON object that had a repeated key; ``dups`` lists the repeated keys."""

    __slots__ = ("dups",)


class _JsonState:
    __slots__ = ("dup",)

    def __init__(self) -> None:
        self.dup = False

    def hook(self, pairs):
        d = dict(pairs)
        if len(d) != len(pairs):
            self.dup = True
            seen: set[str] = set()
            dups = []
            for k, _v in pairs:
                if k in seen and k not in dups:
                    dups.append(k)
                seen.add(k)
            d = _DupDict(d)
            d.dups = dups
        return d


class _JsonConstant(ValueError):
    pass


def _reject_constant(name: str):
    raise _JsonConstant(name)


def _parse_int(text: str):
    # serde rejects "-0" for unsigned fields; a float makes every integer check fail on it
    return -0.0 if text == "-0" else int(text)


_DEPTH_DELTA = np.zeros(256, dtype=np.int8)
_DEPTH_DELTA[[0x7B, 0x5B]] = 1
_DEPTH_DELTA[[0x7D, 0x5D]] = -1


def _structure_scan(raw, depth_limit: int, chunk: int = 1 << 20) -> tuple[int, int]:
    """Bracket scan of JSON bytes outside strings, with numpy, in O(n).

    Returns ``(max_depth, root_keys)``: the deepest nesting of ``{``/``[`` (stops early once above
    ``depth_limit``) and the number of ``:`` at depth 1 (keys of a root object). Exact for valid JSON;
    for invalid JSON the numbers are only used to reject, and ``json.loads`` rejects such input anyway.
    Works chunk by chunk (bounded memory) carrying the in-string state and backslash-run parity.
    """
    a_all = np.frombuffer(raw, dtype=np.uint8)
    n = a_all.size
    parity = 0  # inside a string at the start of the chunk
    bs_carry = 0  # parity of the backslash run that ends the previous chunk
    depth = 0
    max_depth = 0
    keys = 0
    for lo in range(0, n, chunk):
        a = a_all[lo : lo + chunk]
        q = np.flatnonzero(a == 0x22)
        bs = a == 0x5C
        has_bs = bool(bs.any())
        if q.size and (has_bs or bs_carry):
            # a quote is escaped when the run of backslashes right before it has odd length
            runlen = np.zeros(q.size, dtype=np.int64)
            if has_bs:
                d = np.diff(bs.view(np.int8), prepend=np.int8(0), append=np.int8(0))
                starts = np.flatnonzero(d == 1)
                ends = np.flatnonzero(d == -1)  # exclusive ends
                k = np.minimum(np.searchsorted(ends, q), ends.size - 1)
                hit = ends[k] == q
                runlen = np.where(hit, ends[k] - starts[k] + ((starts[k] == 0) & bs_carry), 0)
            if bs_carry and q[0] == 0:
                runlen[0] = 1  # preceded only by the previous chunk's run
            q = q[(runlen & 1) == 0]
        # backslash run at the end of this chunk, for the next one
        if has_bs and a[-1] == 0x5C:
            non = np.flatnonzero(~bs)
            bs_carry = (a.size - 1 - int(non[-1])) & 1 if non.size else (bs_carry + a.size) & 1
        else:
            bs_carry = 0
        folded = a | 0x20  # '[' -> '{', ']' -> '}'
        pos = np.flatnonzero((folded == 0x7B) | (folded == 0x7D) | (a == 0x3A))
        if q.size:
            # a position is inside a string when an odd number of unescaped quotes precede it
            outside = ((np.searchsorted(q, pos) + parity) & 1) == 0
            pos = pos[outside]
            parity = (parity + q.size) & 1
        elif parity:
            continue  # the whole chunk is inside one string
        if not pos.size:
            continue
        c = a[pos]
        run = np.cumsum(_DEPTH_DELTA[c], dtype=np.int64)
        run += depth
        max_depth = max(max_depth, int(run.max()))
        if max_depth > depth_limit:
            return max_depth, keys
        keys += int(np.count_nonzero((c == 0x3A) & (run == 1)))
        depth = int(run[-1])
    return max_depth, keys


def _find_lone_surrogate(obj) -> str | None:
    """First string (key or value) in a parsed JSON tree holding a lone surrogate, iteratively."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if _SURROGATE.search(x):
                return x
        elif isinstance(x, dict):
            for k, v in x.items():
                if _SURROGATE.search(k):
                    return k
                stack.append(v)
        elif isinstance(x, list):
            stack.extend(x)
    return None


def _find_dup(obj) -> tuple[str, list] | None:
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, _DupDict):
            return x.dups[0], x.dups
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return None


def parse_nested_json(value: str, limits: Limits = Limits()) -> object:
    """Parse JSON stored inside a metadata string (``ss_tag_frequency``, ``ss_network_args``...).

    Strict like the header: size cap (``limits.max_nested_json_bytes``, UTF-8 bytes), depth cap checked by a
    bracket scan before ``json.loads`` (so no RecursionError), no NaN/Infinity, no duplicate keys, no lone
    surrogates. Any failure raises ``AuditError("LA159", ...)``.
    """
    if not isinstance(value, str):
        raise AuditError("LA159", f"nested JSON must be a string, got {_json_type(value)}")
    cap = limits.max_nested_json_bytes
    if len(value) > cap:
        raise AuditError("LA159", f"nested JSON value has {len(value)} characters; the cap is {cap} bytes")
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) > cap:
        raise AuditError("LA159", f"nested JSON value is {len(raw)} bytes; the cap is {cap}")
    depth, _ = _structure_scan(raw, limits.max_nested_json_depth)
    if depth > limits.max_nested_json_depth:
        raise AuditError("LA159", f"nested JSON deeper than {limits.max_nested_json_depth} levels")
    state = _JsonState()
    try:
        obj = json.loads(value, object_pairs_hook=state.hook, parse_constant=_reject_constant)
    except _JsonConstant as exc:
        raise AuditError("LA159", f"nested JSON uses the non-standard literal {exc.args[0]}") from None
    except json.JSONDecodeError as exc:
        raise AuditError("LA159", f"nested JSON is invalid: {exc.msg} at character {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        raise AuditError("LA159", f"nested JSON is invalid: {type(exc).__name__}") from None
    if state.dup:
        dup = _find_dup(obj)
        key = dup[0] if dup else "?"
        raise AuditError("LA159", f"nested JSON has a duplicate key {_show(key, 60)}")
    if _ESCAPED_SURROGATE.search(value) and _find_lone_surrogate(obj) is not None:
        raise AuditError("LA159", "nested JSON holds a lone surrogate escape")
    return obj


# ---------------------------------------------------------------------------------------------------------
# name and text checks

# C0 (but tab, LF, CR are allowed in metadata values), DEL, C1, and the bidi controls.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CTRL_META = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + _BIDI + "]")
_CTRL_NAME = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI + "]")
# Invisible characters: every format character (Unicode category Cf) plus blank-looking fillers,
# variation selectors and the combining grapheme joiner.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f\U000e0100-\U000e01ef]"
)
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")


def _path_like(name: str) -> bool:
    if name[:1] in ("/", "\\", "~") or _DRIVE.match(name):
        return True
    if ".." in name:
        parts = re.split(r"[\\/]", name)
        return ".." in parts and len(parts) > 1
    return False


def _confusable_key(name: str) -> str:
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", name))


# ---------------------------------------------------------------------------------------------------------
# polyglot probes


class _Hole:
    """Stands for a long run of bytes the pickle walk steps over without reading them."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def decode(self, *_args, **_kw) -> str:
        return ""


class _ProbeBudget(Exception):
    pass


class _ProbeStream:
    """Read-only file-like view over the fd for ``pickletools.genops``, with bounded memory.

    Reads of up to 1 MiB are real (16 MiB in total); a longer length-prefixed argument is stepped over
    (a :class:`_Hole` of the right length), as the unpickler would consume it. Lines are read up to 64 KiB.
    """

    REAL_MAX = 1 << 20

    def __init__(self, fd: int, size: int, budget: int = 16 << 20) -> None:
        self.fd = fd
        self.size = size
        self.pos = 0
        self.budget = budget
        self._win = b""  # read-ahead window: bytes [_win_at, _win_at + len(_win))
        self._win_at = 0

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1):
        left = self.size - self.pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        if n > self.REAL_MAX:
            self.pos += n
            return _Hole(n)
        off = self.pos - self._win_at
        if not (0 <= off and off + n <= len(self._win)):
            want = min(max(n, 1 << 16), self.size - self.pos)
            if want > self.budget:
                raise _ProbeBudget()
            self.budget -= want
            self._win = bytes(_pread_bytes(self.fd, self.pos, want))
            self._win_at = self.pos
            off = 0
        data = self._win[off : off + n]
        self.pos += len(data)
        return data

    def readline(self, _limit: int = -1):
        chunk = self.read(min(65536, self.size - self.pos))
        if isinstance(chunk, _Hole):  # pragma: no cover - 64 KiB is below REAL_MAX
            return b""
        i = chunk.find(b"\n")
        if i >= 0:
            self.pos -= len(chunk) - (i + 1)
            return chunk[: i + 1]
        return chunk


_IDENT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
# fail in a plain pickle.load: unregistered extension codes, no persistent_load, no out-of-band buffers
_STOP_OPS = frozenset({"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "NEXT_BUFFER"})
_STRING_OPERANDS = (pickletools.pyunicode, pickletools.pystring, pickletools.anyobject)
_STR_TYPES = (pickletools.pyunicode, pickletools.pystring)


def _pickle_probe(fd: int, size: int, max_ops: int = 200_000) -> tuple[int, str, str] | None:
    """Static walk of the file as a pickle program from byte 0, as ``pickle.load`` would run it.

    Emulates the unpickler's stack, marks and memo just enough to stop where CPython would fail (unknown
    opcode, stack underflow, missing MARK, missing memo entry, unsupported protocol, persistent ids or
    extension codes). Returns ``(offset, opcode name, global)`` of the first import it reaches (GLOBAL / INST
    with an importable dotted name, STACK_GLOBAL with two string operands), else None. Never unpickles.
    """
    markobject = pickletools.markobject
    stack: list = []  # (StackObject, value)
    memo: dict = {}
    count = 0
    try:
        for op, arg, pos in pickletools.genops(_ProbeStream(fd, size)):
            count += 1
            if count > max_ops:
                return None
            name = op.name
            if name == "STOP":
                return None
            if name in _STOP_OPS:
                return None
            if name == "PROTO":
                if arg > pickle.HIGHEST_PROTOCOL:
                    return None
                continue
            if name in _PUT_OPS:
                if not stack or stack[-1][0] is markobject:
                    return None
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                continue
            if name in _GET_OPS:
                if arg not in memo:
                    return None
                stack.append(memo[arg])
                continue
            if name == "DUP":
                if not stack:
                    return None
                stack.append(stack[-1])
                continue
            before = op.stack_before
            numtopop = len(before)
            if markobject in before or (name == "POP" and stack and stack[-1][0] is markobject):
                idx = len(stack) - 1
                while idx >= 0 and stack[idx][0] is not markobject:
                    idx -= 1
                if idx < 0:
                    return None
                del stack[idx:]
                numtopop = before.index(markobject) if markobject in before else 0
            if len(stack) < numtopop:
                return None
            popped = stack[len(stack) - numtopop :] if numtopop else []
            if numtopop:
                del stack[-numtopop:]
            if name in ("GLOBAL", "INST"):
                module, _, qual = str(arg).partition(" ")
                if not (_IDENT_PATH.match(module) and _IDENT_PATH.match(qual)):
                    return None
                return pos, name, f"{module}.{qual}"
            if name == "STACK_GLOBAL":
                (t1, v1), (t2, v2) = popped
                if t1 not in _STRING_OPERANDS or t2 not in _STRING_OPERANDS:
                    return None
                if isinstance(v1, str) and isinstance(v2, str):
                    if not (_IDENT_PATH.match(v1) and _IDENT_PATH.match(v2)):
                        return None
                    return pos, name, f"{v1}.{v2}"
                return pos, name, "<computed name>"
            for t in op.stack_after:
                stack.append((t, arg if t in _STR_TYPES and isinstance(arg, str) else None))
    except Exception:
        return None
    return None


# ---------------------------------------------------------------------------------------------------------
# the file object


class SafetensorsFile:
    """A validated safetensors file. Use as a context manager; reads are bounded ``pread`` loops.

    Attributes: ``path``, ``size``, ``header_len`` (N), ``data_start`` (8 + N), ``metadata`` (``dict[str, str]``
    or None), ``tensors`` (name -> :class:`TensorInfo`, in header order), ``findings`` (LA15x/LA16x).
    """

    def __init__(self, *, fd: int, path: str, ident, header_len: int, metadata, tensors, findings) -> None:
        self._fd: int | None = fd
        self._ident = ident
        self.path = path
        self.size = ident[2]
        self.header_len = header_len
        self.data_start = 8 + header_len
        self.metadata: dict[str, str] | None = metadata
        self.tensors: dict[str, TensorInfo] = tensors
        self.findings: list[Finding] = findings
        self.zip_scan: ZipHeaderScan | None = None  # see open_safetensors(zip_scan=False)

    # -- lifecycle
    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover
            pass

    def __repr__(self) -> str:
        return f"<SafetensorsFile {self.path!r} tensors={len(self.tensors)} size={self.size}>"

    # -- reads
    def _require_fd(self) -> int:
        if self._fd is None:
            raise ValueError("I/O operation on a closed SafetensorsFile")
        return self._fd

    def check_unchanged(self) -> None:
        """Raise ``AuditError("LA122")`` if the file's size, mtime or inode changed since it was opened."""
        _check_same(self._require_fd(), self._ident)

    def read_range(self, start: int, end: int) -> bytearray:
        """Bytes ``[start, end)`` of the file (absolute offsets), one bounded pread loop, no extra copy."""
        fd = self._require_fd()
        if not (0 <= start <= end <= self.size):
            raise ValueError(f"range [{start}, {end}) outside the file (size {self.size})")
        length = end - start
        buf = bytearray(length)
        got = _preadv_into(fd, memoryview(buf), start) if length else 0
        if got < length:
            _check_same(fd, self._ident)
            raise AuditError("LA118", f"short read: got {got} of {length} bytes at offset {start}")
        _check_same(fd, self._ident)
        return buf

    def iter_range(self, start: int, end: int, chunk_size: int = _READ_CHUNK):
        """Yield ``[start, end)`` in chunks as memoryviews of ONE reused buffer (valid until the next chunk).

        Meant for streaming hashes and value scans; memory stays at ``chunk_size``.
        """
        fd = self._require_fd()
        if not (0 <= start <= end <= self.size):
            raise ValueError(f"range [{start}, {end}) outside the file (size {self.size})")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        buf = bytearray(min(chunk_size, max(end - start, 1)))
        view = memoryview(buf)
        pos = start
        while pos < end:
            want = min(len(buf), end - pos)
            got = _preadv_into(fd, view[:want], pos)
            if got < want:
                _check_same(fd, self._ident)
                raise AuditError("LA118", f"short read: got {got} of {want} bytes at offset {pos}")
            yield view[:want]
            pos += want
        _check_same(fd, self._ident)

    def read_bytes(self, name: str) -> bytearray:
        """The raw bytes of tensor ``name`` (a bytearray: bytes-like, filled in place, not copied).

        A short read raises LA118; a file that changed since it was opened raises LA122.
        """
        info = self.tensors[name]
        return self.read_range(info.start, info.end)

    def read_array(self, name: str) -> np.ndarray:
        """Tensor ``name`` decoded to float64 and reshaped to its declared shape.

        Decodes F64 F32 F16 BF16, the five F8 formats, F4, the integer types and BOOL (as 0/1).
        C64 and the F6 formats raise ``AuditError("LA163")`` (complex / no defined packing order); a
        zero-element tensor whose shape numpy cannot represent raises ``AuditError("LA155")``.
        """
        info = self.tensors[name]
        check_decodable(info.dtype)  # LA163 before any read
        arr = decode(self.read_bytes(name), info.dtype, info.numel)
        try:
            return arr.reshape(info.shape)
        except ValueError:
            if info.numel == 0:
                raise AuditError(
                    "LA155", f"tensor {_show(name)}: zero-element shape {list(info.shape)} cannot be represented"
                ) from None
            raise AuditError("LA124", f"tensor {_show(name)}: shape {list(info.shape)} cannot be represented") from None

    def bool_non01_count(self, name: str) -> int:
        """Number of bytes other than 0 and 1 in a BOOL tensor (LA160 when non-zero)."""
        info = self.tensors[name]
        if info.dtype != "BOOL":
            raise ValueError(f"tensor {_show(name)} is {info.dtype}, not BOOL")
        raw = np.frombuffer(self.read_bytes(name), dtype=np.uint8)
        return int(np.count_nonzero(raw > 1))


# ---------------------------------------------------------------------------------------------------------
# opening and validation


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink (not followed)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def open_safetensors(path, limits: Limits = Limits(), *, probes: bool = True,
                     zip_scan: bool = True) -> SafetensorsFile:
    """Open and fully validate a safetensors file; raise a coded :class:`AuditError` on any failure.

    ``probes`` runs the two polyglot probes (zip structures in the data, pickle program from byte 0); the
    search for a zip local file header reads the whole data region once. With ``zip_scan=False`` that search
    is left to a pass that reads the file anyway: ``sf.zip_scan`` is then a :class:`ZipHeaderScan` to feed
    every chunk of the file (None when nothing is left to search). The caller owns the result and must close
    it (or use ``with``).
    """
    p = os.fsdecode(os.fspath(path))
    try:
        st0 = os.lstat(p)
    except OSError as exc:
        raise AuditError("LA101", f"cannot stat the file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st0.st_mode):
        raise AuditError("LA100", f"path is {_file_kind(st0.st_mode)}")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        import errno

        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise AuditError("LA100", f"path is not a regular file ({exc.strerror})") from None
        raise AuditError("LA101", f"cannot open the file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuditError("LA100", f"path is {_file_kind(st.st_mode)}")
        if (st.st_dev, st.st_ino) != (st0.st_dev, st0.st_ino):
            raise AuditError("LA122", "file was replaced between lstat and open")
        result = _validate(fd, p, _ident(st), limits, probes, zip_scan)
        return result
    except BaseException:
        os.close(fd)
        raise


def _not_safetensors(fd: int, size: int, path: str, head: bytes, code: str, message: str) -> AuditError:
    """The error for a failed length prefix: LA120/LA125 when the content is something recognisable."""
    kind = sniff(head)
    if kind in ("unknown", "safetensors"):
        return AuditError(code, message)
    desc = describe_kind(kind)
    disguised = path.lower().endswith(".safetensors")
    if disguised and kind.startswith("pickle"):
        return AuditError("LA125", f"content is {desc}, disguised by the .safetensors extension")
    if kind == "zip":
        try:
            names = _zip_member_names(fd, size)
        except AuditError:
            names = []
        pkl = [n for n in names if n.lower().endswith(".pkl")]
        if disguised and pkl:
            return AuditError(
                "LA125", f"content is a zip archive holding a pickle ({_show(pkl[0], 80)}), disguised by the "
                ".safetensors extension"
            )
        if names:
            listed = ", ".join(_show(n, 60) for n in names[:3])
            return AuditError("LA120", f"content is a zip archive (members: {listed}), not safetensors")
    return AuditError("LA120", f"content is {desc}, not safetensors")


def _validate(fd: int, path: str, ident, limits: Limits, probes: bool, zip_scan: bool) -> SafetensorsFile:
    size = ident[2]
    if size > limits.max_file_bytes:
        raise AuditError("LA123", f"file is {size} bytes; the cap is {limits.max_file_bytes} (Limits.max_file_bytes)")
    if size < 8:
        head = bytes(_pread_bytes(fd, 0, size))
        what = describe_kind(sniff(head)) if head else "an empty file"
        raise AuditError("LA102", f"file is {size} bytes ({what}); a safetensors file needs at least 8")
    prefix = bytes(_pread_bytes(fd, 0, 8))
    if len(prefix) < 8:
        _check_same(fd, ident)
        raise AuditError("LA118", "file shrank while reading the length prefix")
    (n,) = struct.unpack("<Q", prefix)
    cap = min(limits.max_header_bytes, SPEC_MAX_HEADER_BYTES)
    if n > cap or n > size - 8:
        head = bytes(_pread_bytes(fd, 0, min(size, 4096)))
        if n > cap:
            shown = f"{n}" if n < 2**63 else f"{n} (negative as a signed integer)"
            msg = (
                f"header length {shown} exceeds the cap of {cap} bytes"
                + (" (raise Limits.max_header_bytes, up to the format's 100000000)"
                   if cap < SPEC_MAX_HEADER_BYTES else "")
            )
            raise _not_safetensors(fd, size, path, head, "LA104", msg)
        raise _not_safetensors(
            fd, size, path, head, "LA103", f"header length {n} exceeds the file size {size} minus the 8-byte prefix"
        )
    if n == 0:
        raise AuditError("LA106", "header is empty (length prefix 0)")
    raw = _pread_bytes(fd, 8, n)  # n is bounded by the cap and the file size here
    if len(raw) < n:
        _check_same(fd, ident)
        raise AuditError("LA118", f"file shrank while reading the header ({len(raw)} of {n} bytes)")

    sink = _Sink()
    data_start = 8 + n
    metadata, tensors = _parse_header(raw, limits, sink, data_start)
    del raw

    # offsets: contiguous, starting at 0, covering the data region exactly
    ordered = sorted(tensors.values(), key=attrgetter("start", "end"))
    expected = 0
    for info in ordered:
        b = info.start - data_start
        name = info.name
        if b != expected:
            kind = "gap before it" if b > expected else "overlaps the previous tensor"
            raise AuditError(
                "LA115",
                f"tensor {_show(name)}: data begins at {b}, expected {expected} ({kind})",
                where=_where(name),
            )
        expected = info.end - data_start
    want = data_start + expected
    if size < want:
        raise AuditError(
            "LA118", f"file is {size} bytes but the header declares data up to byte {want} ({want - size} missing)"
        )
    if size > want:
        extra = size - want
        tail = bytes(_pread_bytes(fd, want, min(extra, 4096)))
        kind = sniff(tail)
        look = f"; they look like {describe_kind(kind)}" if kind not in ("unknown",) else ""
        raise AuditError(
            "LA117", f"{extra} trailing bytes after the data region, which ends at byte {want}{look}"
        )

    _name_findings(tensors, data_start, sink)
    if metadata:
        _metadata_findings(metadata, limits, sink)
    pending = _polyglot_findings(fd, size, data_start, ordered, sink, zip_scan) if probes else None
    _check_same(fd, ident)
    sf = SafetensorsFile(
        fd=fd, path=path, ident=ident, header_len=n, metadata=metadata, tensors=tensors, findings=sink.result()
    )
    sf.zip_scan = pending
    return sf


def _parse_header(raw: bytearray, limits: Limits, sink: _Sink, data_start: int):
    """Strict header parse; returns (metadata, {name: TensorInfo} in header order)."""
    if _BOM_LEAD.match(raw):
        raise AuditError("LA105", "header starts with a UTF-8 byte order mark")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuditError(
            "LA105", f"invalid UTF-8 at header byte {exc.start} (file offset {8 + exc.start}): {exc.reason}"
        ) from None
    lead = _JSON_WS.match(text).end()
    if lead == len(text):
        raise AuditError("LA106", "header holds only whitespace")
    if lead:
        sink.add("LA150", f"header starts with {lead} whitespace character(s) before '{{'")
    body_end = len(text.rstrip(" \t\r\n"))
    if text[body_end - 1] == "\x00":
        nul = body_end - len(text[:body_end].rstrip("\x00"))
        raise AuditError(
            "LA106",
            f"trailing NUL padding ({nul} NUL bytes after the JSON); the format allows only space (0x20) padding",
        )
    depth, root_keys = _structure_scan(raw, limits.max_nested_json_depth)
    if depth > limits.max_nested_json_depth:
        raise AuditError("LA106", f"JSON nesting deeper than {limits.max_nested_json_depth} levels")
    declared = root_keys - ("__metadata__" in text)  # a lower bound on the number of tensor entries
    if declared > limits.max_tensors:
        raise AuditError("LA119", f"header declares at least {declared} tensors; the cap is {limits.max_tensors}")
    state = _JsonState()
    try:
        obj = json.loads(
            text,
            object_pairs_hook=state.hook,
            parse_constant=_reject_constant,
            parse_int=_parse_int if "-0" in text else None,
        )
    except _JsonConstant as exc:
        raise AuditError("LA106", f"non-standard JSON literal {exc.args[0]} (NaN/Infinity are not JSON)") from None
    except json.JSONDecodeError as exc:
        raise AuditError("LA106", f"{exc.msg} at header character {exc.pos}") from None
    except RecursionError:
        raise AuditError("LA106", "JSON nesting too deep") from None
    except ValueError as exc:
        raise AuditError("LA106", f"invalid JSON number or value ({str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        kind = _json_type(obj)
        raise AuditError("LA107", f"header JSON is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not an object")

    if state.dup:
        _raise_duplicate(obj)
    if _ESCAPED_SURROGATE.search(text):
        bad = _find_lone_surrogate(obj)
        if bad is not None:
            raise AuditError("LA106", f"lone surrogate escape in a header string {_show(bad, 60)}")
    del text

    metadata = None
    has_meta = "__metadata__" in obj
    if has_meta:
        meta = obj["__metadata__"]
        if meta is None:
            sink.add("LA152", "__metadata__ is null")
        elif not isinstance(meta, dict):
            raise AuditError("LA109", f"__metadata__ is {_json_type(meta)}, not an object of strings")
        else:
            for k, v in meta.items():
                if type(v) is not str:
                    raise AuditError(
                        "LA109",
                        f"__metadata__[{_show(k, 60)}] is {_json_type(v)}, not a string",
                        where=_where("__metadata__." + k),
                    )
            metadata = meta

    count = len(obj) - has_meta
    if count > limits.max_tensors:
        raise AuditError("LA119", f"header declares {count} tensors; the cap is {limits.max_tensors}")

    tensors: dict[str, TensorInfo] = {}
    bits_of = DTYPE_BITS
    max_name = limits.max_name_bytes
    max_rank = limits.max_rank
    for name, e in obj.items():
        if name == "__metadata__":
            continue
        if len(name) > max_name or (not name.isascii() and len(name.encode("utf-8", "surrogatepass")) > max_name):
            nbytes = len(name.encode("utf-8", "surrogatepass"))
            raise AuditError(
                "LA121", f"tensor name of {nbytes} bytes {_show(name, 40)}; the cap is {max_name}", where=_where(name)
            )
        if type(e) is not dict:
            raise AuditError(
                "LA110", f"tensor {_show(name)}: entry is {_json_type(e)}, not an object", where=_where(name)
            )
        if len(e) != 3 or "dtype" not in e or "shape" not in e or "data_offsets" not in e:
            for f in _FIELDS:
                if f not in e:
                    raise AuditError("LA110", f"tensor {_show(name)}: missing field '{f}'", where=_where(name))
            extra = [k for k in e if k not in _FIELD_SET]
            sink.add(
                "LA151",
                f"tensor {_show(name)}: unknown field(s) " + ", ".join(_show(k, 40) for k in extra[:5]),
                where=_where(name),
            )
        dtype = e["dtype"]
        bits = bits_of.get(dtype) if type(dtype) is str else None
        if bits is None:
            shown = _show(dtype, 40) if isinstance(dtype, str) else f"of JSON type {_json_type(dtype)}"
            raise AuditError(
                "LA111",
                f"tensor {_show(name)}: dtype {shown} is not accepted; accepted: {', '.join(ACCEPTED_DTYPES)}",
                where=_where(name),
            )
        shape = e["shape"]
        if type(shape) is not list:
            raise AuditError(
                "LA112",
                f"tensor {_show(name)}: shape is {_json_type(shape)}, not an array of integers",
                where=_where(name),
            )
        if len(shape) > max_rank:
            raise AuditError(
                "LA124", f"tensor {_show(name)}: rank {len(shape)} is above the cap of {max_rank}", where=_where(name)
            )
        numel = 1
        for x in shape:
            if type(x) is not int or x < 0 or x > _U64_MAX:
                raise AuditError(
                    "LA112",
                    f"tensor {_show(name)}: shape element {_show_json(x)} is not an integer in [0, 2**64)",
                    where=_where(name),
                )
            numel *= x
            if numel > _U64_MAX:
                raise AuditError(
                    "LA113",
                    f"tensor {_show(name)}: element count of shape {shape} overflows 64 bits",
                    where=_where(name),
                )
        nbits = numel * bits
        if nbits > _U64_MAX:
            raise AuditError(
                "LA113", f"tensor {_show(name)}: size in bits of {dtype}{shape} overflows 64 bits", where=_where(name)
            )
        if nbits & 7:
            raise AuditError(
                "LA114",
                f"tensor {_show(name)}: {numel} x {dtype} ({bits} bits) does not fill whole bytes",
                where=_where(name),
            )
        offs = e["data_offsets"]
        if type(offs) is not list or len(offs) != 2 or type(offs[0]) is not int or type(offs[1]) is not int:
            if type(offs) is list:
                got = "[" + ", ".join(_show_json(x) for x in offs[:4]) + (", ..." if len(offs) > 4 else "") + "]"
            else:
                got = _json_type(offs)
            raise AuditError(
                "LA110",
                f"tensor {_show(name)}: data_offsets must be an array of exactly two integers, got {got}",
                where=_where(name),
            )
        b, en = offs
        if b < 0 or en < 0 or en > _U64_MAX or b > en:
            raise AuditError(
                "LA115",
                f"tensor {_show(name)}: data_offsets [{_show_json(b)}, {_show_json(en)}] invalid "
                "(need 0 <= begin <= end < 2**64)",
                where=_where(name),
            )
        nbytes = nbits >> 3
        if en - b != nbytes:
            raise AuditError(
                "LA116",
                f"tensor {_show(name)}: {dtype}{shape} needs {nbytes} bytes, data_offsets declare {en - b}",
                where=_where(name),
            )
        tensors[name] = _tensor_info(name, dtype, tuple(shape), numel, data_start + b, data_start + en)
    return metadata, tensors


def _raise_duplicate(obj: dict) -> None:
    if isinstance(obj, _DupDict):
        key = obj.dups[0]
        if key == "__metadata__":
            raise AuditError("LA108", "__metadata__ defined twice", where="__metadata__")
        raise AuditError("LA108", f"tensor {_show(key)} defined twice", where=_where(key))
    meta = obj.get("__metadata__")
    if isinstance(meta, _DupDict):
        raise AuditError("LA108", f"duplicate key {_show(meta.dups[0], 60)} in __metadata__", where="__metadata__")
    for name, e in obj.items():
        if isinstance(e, _DupDict):
            raise AuditError(
                "LA110", f"tensor {_show(name)}: duplicate field {_show(e.dups[0], 40)}", where=_where(name)
            )
    dup = _find_dup(obj)
    raise AuditError("LA108", f"duplicate key {_show(dup[0] if dup else '?', 60)} in a nested object")


_ELEMENT_BYTES = {k: (v >> 3 if v >= 16 else 0) for k, v in DTYPE_BITS.items()}


def _name_findings(tensors: dict[str, TensorInfo], data_start: int, sink: _Sink) -> None:
    names = list(tensors)
    joined = " ".join(names)
    if not joined.isprintable() and _CTRL_NAME.search(joined):
        for name in names:
            if _CTRL_NAME.search(name):
                sink.add("LA153", f"tensor name {_show(name)} holds control, escape or bidi characters", _where(name))
    unaligned = []
    huge = []
    esize = _ELEMENT_BYTES
    for info in tensors.values():
        if info.numel:
            size = esize[info.dtype]
            if size and info.start % size:
                unaligned.append(info.name)
        elif any(d >= 2**32 for d in info.shape):
            huge.append(info.name)
    if unaligned:
        sink.add(
            "LA154",
            f"{len(unaligned)} tensor(s) not aligned to their element size (data starts at byte {data_start}), "
            f"e.g. {_show(unaligned[0])}",
            _where(unaligned[0]),
        )
    for name in huge:
        sink.add("LA155", f"tensor {_show(name)}: zero elements but shape {list(tensors[name].shape)}", _where(name))
    if "" in tensors:
        sink.add("LA156", "empty tensor name", "")
    if ".." in joined or "/" in joined or "\\" in joined or "~" in joined or ":" in joined:
        for name in names:
            if name and _path_like(name):
                sink.add("LA156", f"tensor name {_show(name)} looks like a filesystem path", _where(name))
    if joined.isascii():
        return  # ASCII names are their own NFKC form and hold no invisible characters
    # confusables: names equal after removing invisibles and NFKC, in O(n) with a dict.
    keys: dict[str, str] = {}
    exotic = []
    for name in names:
        if name.isascii():
            keys[name] = name
        else:
            exotic.append(name)
    for name in exotic:
        key = _confusable_key(name)
        other = keys.get(key)
        if other is not None:
            sink.add(
                "LA157",
                f"tensor names {_show(other)} and {_show(name)} differ only by invisible characters "
                "or Unicode normalisation",
                _where(name),
            )
        else:
            keys[key] = name


def _metadata_findings(metadata: dict[str, str], limits: Limits, sink: _Sink) -> None:
    for k, v in metadata.items():
        if not (k.isprintable() and v.isprintable()) and (_CTRL_META.search(k) or _CTRL_META.search(v)):
            sink.add(
                "LA153",
                f"__metadata__[{_show(k, 60)}] holds control, escape or bidi characters",
                _where("__metadata__." + k),
            )
        # JSON stored in a string: check the caps cheaply here; parse_nested_json does the full parse
        if v[:1] in ("{", "[") or v.lstrip()[:1] in ("{", "["):
            if len(v) > limits.max_nested_json_bytes:
                sink.add("LA159", f"__metadata__[{_show(k, 60)}] holds {len(v)} characters of JSON; the cap is "
                         f"{limits.max_nested_json_bytes} bytes", _where("__metadata__." + k))
                continue
            depth, _ = _structure_scan(v.encode("utf-8", "surrogatepass"), limits.max_nested_json_depth)
            if depth > limits.max_nested_json_depth:
                sink.add("LA159", f"__metadata__[{_show(k, 60)}] holds JSON nested deeper than "
                         f"{limits.max_nested_json_depth} levels", _where("__metadata__." + k))


def _tensor_at(ordered: list[TensorInfo], offset: int) -> str | None:
    for info in ordered:
        if info.start <= offset < info.end:
            return info.name
    return None


_ZIP_LOCAL_HEADER = re.compile(re.escape(b"PK\x03\x04"))


class ZipHeaderScan:
    """Polyglot probe (i), second half: a zip local file header anywhere in the data region.

    It is fed the file in consecutive chunks (``feed(view, pos)``; bytes before the data region are skipped),
    so a pass that reads the whole file anyway, the hash pass, runs it without a read of its own. Each
    candidate signature, including one that straddles two chunks, is checked by parsing the header it starts;
    the first that parses is kept. ``finding()`` gives the LA161 finding, or None.
    """

    def __init__(self, fd: int, size: int, data_start: int, ordered) -> None:
        self._fd, self._size, self._start, self._ordered = fd, size, data_start, ordered
        self.zip_at: int | None = None
        self.names: list[str] = []
        self._carry = b""  # the last 3 bytes fed: a signature may straddle two chunks
        self._carry_pos = 0

    def _check(self, offset: int) -> bool:
        name = _local_header_at(self._fd, offset, self._size)
        if name is not None:
            self.zip_at, self.names = offset, [name]
        return name is not None

    def feed(self, view, pos: int) -> None:
        if self.zip_at is not None:
            return
        lo = max(self._start - pos, 0)
        if lo >= len(view):
            return
        carry = self._carry if self._carry_pos + len(self._carry) == pos + lo else b""
        if carry:  # signatures that start in the carried bytes and end in this chunk
            joint = carry + bytes(view[lo:lo + 3])
            i = joint.find(b"PK\x03\x04")
            while 0 <= i < len(carry):
                if self._check(self._carry_pos + i):
                    return
                i = joint.find(b"PK\x03\x04", i + 1)
        for m in _ZIP_LOCAL_HEADER.finditer(view, lo):
            if self._check(pos + m.start()):
                return
        self._carry = (carry + bytes(view[max(lo, len(view) - 3):]))[-3:]
        self._carry_pos = pos + len(view) - len(self._carry)

    def finding(self, how: str = "local file header") -> Finding | None:
        if self.zip_at is None:
            return None
        holder = _tensor_at(self._ordered, self.zip_at)
        inside = f" inside tensor {_show(holder)}" if holder is not None else ""
        members = f"; members: {', '.join(_show(n, 60) for n in self.names[:5])}" if self.names else ""
        where = _where(holder) if holder is not None else None
        return _findings.make("LA161", f"a zip {how} at byte {self.zip_at}{inside}{members}", where)


def _polyglot_findings(fd: int, size: int, data_start: int, ordered, sink: _Sink,
                       zip_scan: bool) -> ZipHeaderScan | None:
    """Both polyglot probes. Without ``zip_scan`` the search for a local file header in the data region is
    left to the caller, who gets the scanner to feed (None when an end-of-central-directory record already
    answered the question)."""
    # (i) zip: an End-Of-Central-Directory record near the end, or a local file header inside the data
    scanner = ZipHeaderScan(fd, size, data_start, ordered)
    pending = None
    found = _find_eocd(fd, data_start, size)
    if found is not None:
        scanner.zip_at, scanner.names = found
        sink.items.append(scanner.finding("end-of-central-directory record"))
    elif not zip_scan:
        pending = scanner
    else:
        buf = bytearray(min(_READ_CHUNK, max(size - data_start, 0)))
        view = memoryview(buf)
        pos = data_start
        while pos < size and scanner.zip_at is None:
            want = min(len(buf), size - pos)
            got = _preadv_into(fd, view[:want], pos)
            scanner.feed(view[:got], pos)
            if got < want:
                break
            pos += got
        if scanner.zip_at is not None:
            sink.items.append(scanner.finding())
    # (ii) pickle: the file read as a pickle program from byte 0
    hit = _pickle_probe(fd, size)
    if hit is not None:
        pos, opname, target = hit
        sink.add(
            "LA162",
            f"read as a pickle, the file reaches {opname} {_show(target, 80)} at byte {pos} "
            "(nothing was unpickled)",
        )
    return pending
