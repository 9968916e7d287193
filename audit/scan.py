"""Batch scan: find the adapters under some paths, analyse each in an isolated worker process, cache the results.

The pieces, in the order a scan uses them:

:func:`discover`
    Walks the given paths (recursively, sorted, de-duplicated, never following a symbolic link, never opening a
    FIFO, socket or device) and returns one :class:`Entry` per row of the report: safetensors content whatever
    the extension (sniffed with ``O_NOFOLLOW|O_NONBLOCK`` and an ``fstat`` check), the adapter and legacy
    checkpoint extensions (:data:`EXTENSIONS`; a pickle is reported, never loaded), non-regular entries carrying
    one of those extensions (the analysis refuses them with LA100 without opening them), PEFT/diffusers save
    folders as one row each, and unreadable folders as an LA101 row. Sidecars (``README.md``, ``*.json``,
    ``*.civitai.info``) are never rows. A path named explicitly is a row whatever its name (the user asked for it).

:func:`run`
    Analyses the entries with a pool of ``jobs`` worker processes (multiprocessing "spawn": no fork of a
    parent that runs threads). Each worker sets the BLAS libraries to one thread before numpy is imported,
    limits its address space to ``memory_mb`` (``RLIMIT_AS``), then analyses one file at a time with the target
    (default :func:`analyse_one`, any ``"module:function"`` taking ``(path, options, keep_layers)`` and returning
    the record's JSON text). A file that runs past ``timeout_s`` has its worker killed (LA126); a MemoryError
    gives LA127 and a fresh worker; a worker that dies (signal or exit) gives LA128. Either way the file gets an
    error record, a replacement worker starts, and the other files' results are untouched. The analysis' own
    thread counts (``Options.threads``, ``hash_threads``) are cut to the CPUs each worker has (one worker per
    CPU: one thread each); they never change a record. Workers start only when some file is not cached, and
    the caller's ``__main__`` is not imported again in them: targets and option classes must live in
    importable modules.

    Records are delivered to ``on_record`` in the entries' order (a reorder buffer), each as soon as every
    earlier one is done. Every record is committed to the cache before it is delivered, so a scan that is
    killed and run again only analyses what had not been committed. KeyboardInterrupt (and SIGTERM, when
    ``run`` is called from the main thread) kills the workers at once and re-raises KeyboardInterrupt.

    What ``on_record`` receives: a :class:`ScanResult` carrying the record's JSON text (``.json``, exactly as
    the analysis wrote it, or as the cache stored it), ``.status``, the ``(code, severity)`` pairs of its
    findings (``.findings``) and, parsed only when first asked for, the :class:`~audit.record.AuditRecord`
    (``.record``). Cached records are handed through as stored text: no JSON is parsed in the parent unless
    the caller asks for ``.record`` or the licensing settings changed (see the cache). ``run(..., want="record")``
    passes AuditRecord objects instead, ``want="json"`` the JSON text.

The cache (stdlib sqlite3, WAL, ``synchronous=NORMAL``; default ``$XDG_CACHE_HOME/lora-audit/scan.sqlite``,
else ``~/.cache/lora-audit/scan.sqlite``) has two tables:

``files(path, sig, key, limits)``
    ``sig`` digests the ``lstat`` of the entry (device, inode, size, mtime, ctime, mode), the ``lstat`` of every
    file the analysis may read beside it (its sidecars and, for a PEFT/diffusers save, the config and both
    weight names; present or absent), the tool version, the rules version and the options key. A re-scan
    stats each entry; when ``sig`` matches, the cached record is used without opening the file. ``limits``
    marks records that depended on a resource limit (LA126: the time limit, LA127: the memory limit): a later
    scan with a larger limit analyses the file again.
``results(key, record, settings_key, brief)``
    ``key`` digests the file's SHA-256 (``record.hashes.sha256``, computed by the analysis anyway; for a record
    without one, e.g. an error, the stat signature instead), the path, the sidecar signatures, the tool and
    rules versions and the options key. ``settings_key`` is ``audit.licensing.settings_key`` of the settings
    the licensing part was evaluated with; a cached record that meets other licensing settings is re-evaluated
    in the parent with ``audit.licensing.apply`` and its row updated. ``brief`` holds the status and the
    finding codes, so exit codes and counts need no JSON parsing.

The options key digests every field of :class:`audit.analyse.Options` that can change a record (all of them
but the thread counts and the licensing settings, which the settings key covers), whether licensing is
evaluated at all, and ``keep_layers``.

Test hook: when the environment variable ``LORA_AUDIT_SCAN_TRACE`` names a file, each worker appends the path it
is about to analyse to it (one line per file, written with ``O_APPEND``; a backslash is written ``\\\\`` and a
newline ``\\n``) before it starts the analysis. The tests use it to see which files were analysed and which
came from the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import sqlite3
import stat
import struct
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit import __version__
from audit.sidecars import ADAPTER_CONFIG, DIFFUSERS_WEIGHTS, PEFT_WEIGHTS, README, SIDECARS

__all__ = [
    "DEFAULT_TARGET",
    "EXTENSIONS",
    "TRACE_ENV",
    "AtomicOutput",
    "Entry",
    "ScanConfig",
    "ScanError",
    "ScanResult",
    "Summary",
    "analyse_one",
    "default_cache_path",
    "discover",
    "looks_like_safetensors",
    "options_key",
    "rules_version",
    "run",
    "trim_layers",
]

#: File name endings (any case) that make a row: safetensors and the legacy pickle/zip checkpoint formats.
EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
#: Names of files that are read beside an adapter, never rows themselves.
SIDECAR_NAMES = frozenset({README})
SIDECAR_SUFFIXES = tuple(suffix for suffix, _ in SIDECARS) + (".json",)  # .json also covers adapter_config.json
SNIFF_BYTES = 72  # 8-byte length prefix and 64 bytes of header (whitespace before the '{' is allowed)
SNIFF_MAX_HEADER = 100 * 2**20

DEFAULT_TARGET = "audit.scan:analyse_one"
TRACE_ENV = "LORA_AUDIT_SCAN_TRACE"
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS")
#: The address-space headroom an analysis needs above an idle worker (thread stacks, malloc arenas, chunks);
#: a memory limit below baseline + this is refused as a configuration error.
MIN_HEADROOM_MB = 256
SCHEMA = 1
#: Fresh records waiting in the reorder buffer keep their JSON text in memory up to this many bytes; beyond it
#: they are read back from the cache when their turn comes (with the cache off they always stay in memory).
BUFFER_BYTES = 64 << 20
START_TIMEOUT_S = 120.0  # a worker that is not ready by then (imports hung) stops the scan

_START_LOCK = threading.Lock()
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class ScanError(RuntimeError):
    """A scan that cannot run at all (a worker that cannot start, a bad target, a memory limit below need)."""


# ---------------------------------------------------------------------------------------------------------
# discovery


@dataclass(frozen=True)
class Entry:
    """One row of a scan.

    ``kind``: ``"file"`` (a regular file), ``"dir"`` (a PEFT/diffusers save folder, analysed as one adapter),
    ``"special"`` (a symbolic link, FIFO, socket or device: reported, never opened) or ``"error"`` (a path that
    cannot be examined, e.g. an unreadable folder: ``error`` says why and the row is an LA101 record).
    """

    path: str
    is_dir_adapter: bool = False
    kind: str = "file"
    error: str | None = None


def looks_like_safetensors(head: bytes) -> bool:
    """Whether leading bytes look like safetensors: a little-endian u64 header length N with 2 <= N <= 100 MiB,
    then ``{`` (after optional ASCII whitespace)."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack_from("<Q", head)
    return 2 <= n <= SNIFF_MAX_HEADER and head[8:].lstrip(b" \t\r\n")[:1] == b"{"


def _sniff(path: str, st: os.stat_result) -> bool:
    """Open a regular file without following links or blocking, check it is still the file ``st`` describes,
    and look at its first bytes. Any failure means "not an adapter" (the file is simply not a row)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False
        head = os.pread(fd, SNIFF_BYTES, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return looks_like_safetensors(head)


def _listed(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def _sidecar(name: str) -> bool:
    return name in SIDECAR_NAMES or name.lower().endswith(SIDECAR_SUFFIXES)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def discover(paths: Sequence[str | os.PathLike]) -> list[Entry]:
    """The rows of a scan over ``paths`` (files and folders), sorted by path, each path once.

    Folders are walked recursively (hidden ones too) without following symbolic links. In a folder a path is
    a row when it is a regular file whose first bytes look like safetensors (whatever its name), when its name
    ends in one of :data:`EXTENSIONS` (any case; a symbolic link, FIFO, socket or device with such a name is a
    row too, and is never opened), or when it is a folder holding ``adapter_config.json`` +
    ``adapter_model.safetensors`` or ``pytorch_lora_weights.safetensors`` (one row for the folder; the weights
    file the analysis reads is not listed again). Sidecars are never rows; zero-byte files with a listed
    extension are (they get a coded error). A folder that cannot be listed is an ``"error"`` row (LA101).
    A path given explicitly is a row whatever its name or type; a symbolic link given explicitly is not
    followed (its row says so).
    """
    rows: dict[str, Entry] = {}

    def add(entry: Entry) -> None:
        rows.setdefault(os.path.abspath(entry.path), entry)

    seen_dirs: set[tuple[int, int]] = set()
    for raw in paths:
        p = os.fsdecode(os.fspath(raw))
        try:
            st = os.lstat(p)
        except OSError as exc:
            add(Entry(p, kind="error", error=f"cannot examine the path: {_why(exc)}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(p, st, add, seen_dirs)
        elif stat.S_ISREG(st.st_mode):
            add(Entry(p))
        else:
            add(Entry(p, kind="special"))
    return sorted(rows.values(), key=lambda e: e.path)


def _walk(root: str, root_st: os.stat_result, add: Callable[[Entry], None], seen: set[tuple[int, int]]) -> None:
    stack = [(root, (root_st.st_dev, root_st.st_ino))]
    while stack:
        folder, ident = stack.pop()
        if ident in seen:  # a bind mount looping back: walk each folder once
            continue
        seen.add(ident)
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            add(Entry(folder, kind="error", error=f"cannot list the folder: {_why(exc)}"))
            continue
        names = {e.name for e in items}
        consumed = None
        if (ADAPTER_CONFIG in names and PEFT_WEIGHTS in names) or DIFFUSERS_WEIGHTS in names:
            # what audit.sidecars.resolve_input reads for a folder: the PEFT weights when present
            consumed = PEFT_WEIGHTS if PEFT_WEIGHTS in names else DIFFUSERS_WEIGHTS
            add(Entry(folder, is_dir_adapter=True, kind="dir"))
        for e in items:
            if e.name == consumed:
                continue
            path = os.path.join(folder, e.name)
            try:
                if e.is_dir(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    stack.append((path, (st.st_dev, st.st_ino)))
                    continue
                if e.is_symlink():
                    if _listed(e.name):
                        add(Entry(path, kind="special"))
                    continue
                if e.is_file(follow_symlinks=False):
                    if _listed(e.name):
                        add(Entry(path))
                    elif not _sidecar(e.name):
                        st = e.stat(follow_symlinks=False)
                        if st.st_size >= 10 and _sniff(path, st):
                            add(Entry(path))
                    continue
            except OSError:
                continue  # vanished while the folder was walked
            if _listed(e.name):  # FIFO, socket, device: a row, never opened
                add(Entry(path, kind="special"))


# ---------------------------------------------------------------------------------------------------------
# the default worker target


def trim_layers(record, keep: int | None) -> None:
    """Keep only the ``keep`` strongest layer records (largest ``fro`` first; None and NaN last; ties in file
    order) and count the rest in ``record.layers_omitted``. ``keep`` None or negative keeps every layer."""
    layers = record.layers
    if keep is None or keep < 0 or len(layers) <= keep:
        return

    def strength(i: int):
        f = layers[i].fro
        if f is None or math.isnan(f):
            return (1, 0.0)
        return (0, -f)

    order = sorted(range(len(layers)), key=strength)
    record.layers_omitted += len(layers) - keep
    record.layers = [layers[i] for i in order[:keep]]


def analyse_one(path: str, options=None, keep_layers: int | None = 10) -> str:
    """The default worker target: :func:`audit.analyse.inspect_file`, the strongest ``keep_layers`` layers
    kept, the record as JSON text."""
    from audit.analyse import Options, inspect_file

    record = inspect_file(path, options if options is not None else Options())
    trim_layers(record, keep_layers)
    return record.to_json()


# ---------------------------------------------------------------------------------------------------------
# versions and keys


def rules_version() -> str:
    """A digest of the shipped rules (part of every cache key): :func:`audit.rulefiles.rules_version`."""
    from audit import rulefiles

    return rulefiles.rules_version()


#: Options fields that never change a record (how fast it is made) or are keyed separately (licensing).
_NOT_KEYED = frozenset({"threads", "hash_threads", "licensing"})


def _stable(value: Any) -> Any:
    """A repr-stable form of an options value (dataclasses by their compared fields, mappings sorted)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__,
                tuple((f.name, _stable(getattr(value, f.name))) for f in dataclasses.fields(value) if f.compare))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((repr(k), _stable(v)) for k, v in value.items()), key=repr)))
    if isinstance(value, (list, tuple)):
        return tuple(_stable(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted((_stable(v) for v in value), key=repr)))
    return repr(value)  # an unknown type: its repr (an object address makes the key miss, never hit wrongly)


def options_key(options, keep_layers: int | None) -> str:
    """A digest of what in ``options`` and ``keep_layers`` can change a record."""
    parts = [(f.name, _stable(getattr(options, f.name)))
             for f in dataclasses.fields(options) if f.name not in _NOT_KEYED]
    parts.append(("licensing", getattr(options, "licensing", None) is not None))
    parts.append(("keep_layers", keep_layers if keep_layers is not None and keep_layers >= 0 else None))
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _settings_key(options) -> str:
    lic = getattr(options, "licensing", None)
    if lic is None:
        return ""
    from audit import licensing

    return licensing.settings_key(lic)


def default_cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lora-audit", "scan.sqlite")


def _lstat_sig(path: str) -> str:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "-"
    except OSError as exc:
        return f"!{exc.errno}"
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_mode}"


class _Signer:
    """Stat signatures of entries and of the files read beside them (README.md is shared by a folder)."""

    def __init__(self, context: str):
        self.context = context
        self._readme: dict[str, str] = {}

    def _around(self, adapter_path: str) -> list[str]:
        folder, base = os.path.split(adapter_path)
        stem = os.path.splitext(base)[0]
        readme = self._readme.get(folder)
        if readme is None:
            readme = self._readme[folder] = _lstat_sig(os.path.join(folder, README))
        parts = [readme]
        for suffix, _ in SIDECARS:
            parts.append(_lstat_sig(os.path.join(folder, stem + suffix)))
        if base == PEFT_WEIGHTS:
            parts.append(_lstat_sig(os.path.join(folder, ADAPTER_CONFIG)))
        return parts

    def sign(self, entry: Entry) -> tuple[str, str] | None:
        """``(sig, sidecar part)`` for an entry, or None when the entry cannot be examined."""
        own = _lstat_sig(entry.path)
        if own == "-" or own.startswith("!"):
            return None
        if entry.is_dir_adapter:
            inside = [_lstat_sig(os.path.join(entry.path, n)) for n in (ADAPTER_CONFIG, PEFT_WEIGHTS, DIFFUSERS_WEIGHTS)]
            weights = PEFT_WEIGHTS if inside[1] != "-" else DIFFUSERS_WEIGHTS
            side = inside + self._around(os.path.join(entry.path, weights))
        else:
            side = self._around(entry.path)
        side_text = "|".join(side)
        path_text = entry.path.encode("utf-8", "surrogateescape").hex()
        sig = _digest("sig", self.context, path_text, own, side_text)
        return sig, _digest("side", self.context, path_text, side_text)


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# the cache


class _Cache:
    def __init__(self, path: str):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
        try:
            self._setup()
        except sqlite3.DatabaseError:
            self.db.close()
            raise

    def _setup(self) -> None:
        db = self.db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DROP TABLE IF EXISTS files")
            db.execute("DROP TABLE IF EXISTS results")
            db.execute("CREATE TABLE results(key TEXT PRIMARY KEY, record TEXT NOT NULL, "
                       "settings_key TEXT NOT NULL, brief TEXT NOT NULL, created REAL)")
            # path: the file name's bytes (a name need not be valid UTF-8)
            db.execute("CREATE TABLE files(path BLOB PRIMARY KEY, sig TEXT NOT NULL, key TEXT NOT NULL, "
                       "limits TEXT, scanned REAL)")
            db.execute("CREATE INDEX files_key ON files(key)")
            db.execute(f"PRAGMA user_version={SCHEMA}")
            db.execute("COMMIT")

    def lookup(self, path_b: bytes) -> tuple[str, str, str | None] | None:
        return self.db.execute("SELECT sig, key, limits FROM files WHERE path=?", (path_b,)).fetchone()

    def fetch(self, key: str) -> tuple[str, str, str] | None:
        return self.db.execute("SELECT record, settings_key, brief FROM results WHERE key=?", (key,)).fetchone()

    def store(self, path_b: bytes, sig: str, key: str, text: str, settings_key: str, brief: str,
              limits: str | None) -> None:
        now = time.time()
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("INSERT OR REPLACE INTO results(key, record, settings_key, brief, created) "
                       "VALUES (?, ?, ?, ?, ?)", (key, text, settings_key, brief, now))
            db.execute("INSERT OR REPLACE INTO files(path, sig, key, limits, scanned) VALUES (?, ?, ?, ?, ?)",
                       (path_b, sig, key, limits, now))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def update(self, key: str, text: str, settings_key: str, brief: str) -> None:
        self.db.execute("UPDATE results SET record=?, settings_key=?, brief=? WHERE key=?",
                        (text, settings_key, brief, key))

    def prune(self) -> None:
        """Drop results no file row points at any more (a file that changed leaves its old result behind)."""
        self.db.execute("DELETE FROM results WHERE key NOT IN (SELECT key FROM files)")

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass


# ---------------------------------------------------------------------------------------------------------
# results and summary


def _brief(d: dict) -> str:
    err = d.get("error") or {}
    return json.dumps({"status": d.get("status"), "error": err.get("code") if isinstance(err, dict) else None,
                       "findings": [[f.get("code"), f.get("severity")] for f in d.get("findings") or []
                                    if isinstance(f, dict)]}, separators=(",", ":"))


class ScanResult:
    """One delivered record: its JSON text, status and finding codes; the AuditRecord parsed on first use."""

    __slots__ = ("_brief", "_parsed", "_record", "cached", "index", "json", "path")

    def __init__(self, index: int, path: str, text: str, brief: str, cached: bool, record=None):
        self.index = index
        self.path = path
        self.json = text
        self.cached = cached
        self._brief = brief
        self._parsed: dict | None = None
        self._record = record

    def _b(self) -> dict:
        if self._parsed is None:
            self._parsed = json.loads(self._brief)
        return self._parsed

    @property
    def status(self) -> str:
        return self._b()["status"]

    @property
    def error_code(self) -> str | None:
        return self._b()["error"]

    @property
    def findings(self) -> list[tuple[str, str]]:
        """``(code, severity)`` of every finding, in the record's order."""
        return [(c, s) for c, s in self._b()["findings"]]

    @property
    def record(self):
        """The AuditRecord (rebuilt from the JSON text the first time it is asked for)."""
        if self._record is None:
            from audit.record import from_dict

            self._record = from_dict(json.loads(self.json))
        return self._record

    def __repr__(self) -> str:
        return f"ScanResult({self.path!r}, status={self.status!r}, cached={self.cached})"


@dataclass
class Summary:
    total: int = 0
    analysed: int = 0  # records made by a worker (or for a file a worker failed on) in this run
    cached: int = 0  # records taken from the cache
    errors: int = 0  # records with status "error", whatever their origin
    seconds: float = 0.0
    worker_peak_rss_mb: dict[int, float] = field(default_factory=dict)  # worker pid -> peak RSS (ru_maxrss)
    max_worker_peak_rss_mb: float = 0.0
    parent_peak_rss_mb: float = 0.0
    worker_baseline_vm_mb: float | None = None  # address space of an idle worker (before the limit is set)
    max_worker_peak_vm_mb: float | None = None  # largest address space a worker reached (what memory_mb bounds)
    memory_limit_enforced: bool | None = None  # False where the device (CUDA) makes RLIMIT_AS unusable
    workers_started: int = 0
    timeouts: int = 0
    memory_errors: int = 0
    crashes: int = 0
    relicensed: int = 0  # cached records re-evaluated for other licensing settings
    cache_path: str | None = None
    cache_note: str | None = None  # why the cache was not used (or stopped being used)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["worker_peak_rss_mb"] = {str(k): v for k, v in self.worker_peak_rss_mb.items()}
        return d


@dataclass
class ScanConfig:
    jobs: int = 2
    timeout_s: float = 300.0  # per file; the worker is killed past it (LA126)
    memory_mb: int | None = 4096  # RLIMIT_AS of each worker (None or 0: no limit)
    keep_layers: int | None = 10  # layer records kept per file, strongest first (None: all)
    options: Any = None  # audit.analyse.Options (None: the defaults)
    target: str = DEFAULT_TARGET  # "module:function(path, options, keep_layers) -> JSON text"
    cache: bool = True
    cache_path: str | None = None  # None: default_cache_path()


# ---------------------------------------------------------------------------------------------------------
# the worker process


def _vm_kb(field: str = "VmSize:") -> int | None:
    """This process's address space (``VmSize``) or its peak (``VmPeak``) in KiB, where /proc tells."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _usage() -> tuple[int, int | None]:
    """(peak RSS, peak address space) of this process in KiB: what a worker reports with every answer."""
    return _rss_kb(), _vm_kb("VmPeak:")


def _rss_kb() -> int:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except (ImportError, OSError):
        return 0


def _load_target(spec: str) -> Callable:
    import importlib

    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"target {spec!r} is not 'module:function'")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise ValueError(f"target {spec!r} is not callable")
    return fn


def _uses_cuda(options) -> bool:
    device = getattr(options, "device", "cpu") or "cpu"
    if device in ("cpu", "cpu-torch"):
        return False
    try:
        from audit import spectra

        return str(spectra.resolve_device(device)).startswith("cuda")
    except Exception:  # the analysis reports a device problem itself
        return False


def _trace(path: str, trace: str) -> None:
    line = os.fsencode(path).replace(b"\\", b"\\\\").replace(b"\n", b"\\n") + b"\n"
    fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _worker_main(conn, target: str, options, keep_layers, memory_mb) -> None:
    """A worker: one thread of BLAS, a memory limit, then one file at a time until told to stop."""
    for var in BLAS_VARS:
        os.environ[var] = "1"  # before numpy is imported (scan imports nothing numeric at module level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    try:
        fn = _load_target(target)
        # warm what every analysis needs (numpy, the findings catalogue, the base-family rules) before the
        # baseline is measured, so the limit is checked against a realistic idle worker
        from audit import findings as _f
        from audit import fingerprint

        _f.catalogue()
        fingerprint.load_rules()
        baseline = _vm_kb()
        limited = False
        if memory_mb and not _uses_cuda(options):
            import resource

            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            want = int(memory_mb) * 2**20
            if hard != resource.RLIM_INFINITY:
                want = min(want, hard)
            resource.setrlimit(resource.RLIMIT_AS, (want, hard))
            limited = True
        trace = os.environ.get(TRACE_ENV) or None
        conn.send(("ready", os.getpid(), baseline, limited))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the scan
        try:
            conn.send(("init-error", os.getpid(), f"{type(exc).__name__}: {exc}"))
        except Exception:
            pass
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if msg is None:
            return
        index, path = msg
        try:
            if trace:
                _trace(path, trace)
            text = fn(path, options, keep_layers)
            if not isinstance(text, str):
                raise TypeError(f"target returned {type(text).__name__}, not JSON text")
            d = json.loads(text)
            sha = (d.get("hashes") or {}).get("sha256") if isinstance(d.get("hashes"), dict) else None
            reply = ("ok", index, text, _brief(d), d.get("status"), sha, _usage())
            del d
        except MemoryError:
            text = d = None
            reply = ("mem", index, "MemoryError", _usage())
        except Exception as exc:  # noqa: BLE001 - an analysis bug: one file's error record, the batch goes on
            reply = ("exc", index, f"{type(exc).__name__}: {str(exc)[:500]}", _usage())
        try:
            try:
                conn.send(reply)
            except MemoryError:  # the reply itself did not fit
                reply = ("mem", index, "MemoryError", _usage())
                conn.send(reply)
        except (OSError, ValueError, MemoryError):
            return
        if reply[0] == "mem":
            return  # a worker that ran out of memory may be in a bad state: the parent starts a fresh one


# ---------------------------------------------------------------------------------------------------------
# the parent


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _worker_options(options, jobs: int):
    """The options the workers get: the analysis' own threads cut to the CPUs each worker has (one worker per
    CPU leaves none to spare: one chunk thread, one hash thread). Thread counts never change a record."""
    per = max(1, _cpus() // max(1, int(jobs)))
    changes = {}
    threads = getattr(options, "threads", None)
    if isinstance(threads, int) and threads > per:
        changes["threads"] = per
    if per < 2 and hasattr(options, "hash_threads") and options.hash_threads != 1:
        changes["hash_threads"] = 1
    return dataclasses.replace(options, **changes) if changes else options


class _Worker:
    __slots__ = ("conn", "pid", "proc", "ready", "retiring", "started", "task")

    def __init__(self, proc, conn):
        self.proc = proc
        self.conn = conn
        self.pid = proc.pid
        self.ready = False
        self.task: int | None = None
        self.started = 0.0
        self.retiring = False


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def _error_record(path: str, code: str, message: str):
    from audit.findings import make
    from audit.record import AuditRecord, FileInfo

    try:
        size = os.lstat(path).st_size
    except OSError:
        size = 0
    finding = make(code, message)
    return AuditRecord(file=FileInfo(path=path, name=os.path.basename(path), size=size), status="error",
                       error=finding, findings=[finding], tool={"name": "lora-audit", "version": __version__})


class _Run:
    def __init__(self, entries: list[Entry], config: ScanConfig, on_record, on_progress, want: str):
        self.entries = entries
        self.cfg = config
        self.on_record = on_record
        self.on_progress = on_progress
        self.want = want
        self.summary = Summary(total=len(entries))
        self.options = config.options
        if self.options is None:
            from audit.analyse import Options

            self.options = Options()
        self.settings_key = _settings_key(self.options)
        self.worker_options = _worker_options(self.options, config.jobs)
        self.context = _digest(__version__, rules_version(), options_key(self.options, config.keep_layers))
        self.signer = _Signer(self.context)
        self.cache: _Cache | None = None
        self.wrote = False
        n = len(entries)
        self.sigs: list[tuple[str, str] | None] = [None] * n
        # per entry, once done: ("cached", key) | ("fresh", text or None, brief, key) ; None while pending
        self.done: list[tuple | None] = [None] * n
        self.buffered = 0
        self.next_emit = 0
        self.completed = 0
        self.todo: list[int] = []  # entry indices for the workers, in order
        self.todo_pos = 0
        self.workers: list[_Worker] = []
        self.ctx = None

    # -- cache ---------------------------------------------------------------------------------------------

    def open_cache(self) -> None:
        if not self.cfg.cache:
            self.summary.cache_note = "disabled"
            return
        path = self.cfg.cache_path or default_cache_path()
        self.summary.cache_path = path
        try:
            self.cache = _Cache(path)
        except (sqlite3.Error, OSError) as exc:
            self.cache = None
            self.summary.cache_note = f"cache not used: {exc}"

    def cache_failed(self, exc: Exception) -> None:
        if self.cache is not None:
            self.cache.close()
        self.cache = None
        self.summary.cache_note = f"cache stopped after an error: {exc}"

    def limits_text(self, code: str | None) -> str | None:
        if code == "LA126":
            return f"t={float(self.cfg.timeout_s)!r}"
        if code == "LA127":
            return f"m={int(self.cfg.memory_mb or 0)}"
        return None

    def still_valid(self, limits: str | None) -> bool:
        """A record made under a resource limit stays valid while the limit is no larger."""
        if not limits:
            return True
        kind, _, value = limits.partition("=")
        try:
            if kind == "t":
                return float(self.cfg.timeout_s) <= float(value)
            if kind == "m":
                mem = int(self.cfg.memory_mb or 0)
                return mem != 0 and mem <= int(value)
        except ValueError:
            return False
        return False

    # -- progress and delivery -----------------------------------------------------------------------------

    def complete(self, i: int, state: tuple, cached: bool) -> None:
        self.done[i] = state
        self.completed += 1
        if self.on_progress is not None:
            self.on_progress(self.completed, len(self.entries), self.entries[i].path, cached)

    def finish(self, i: int, text: str, brief: str, key: str | None) -> None:
        """A record made in this run: commit it (when the entry can be cached), then queue it for delivery."""
        sig = self.sigs[i]
        if self.cache is not None and sig is not None and key is not None:
            try:
                code = json.loads(brief)["error"]
                self.cache.store(os.fsencode(self.entries[i].path), sig[0], key, text, self.settings_key, brief,
                                 self.limits_text(code))
                self.wrote = True
            except sqlite3.Error as exc:
                self.cache_failed(exc)
        keep = self.cache is None or self.buffered + len(text) <= BUFFER_BYTES or i == self.next_emit
        if keep:
            self.buffered += len(text)
        self.complete(i, ("fresh", text if keep else None, brief, key), False)

    def emit_ready(self) -> None:
        while self.next_emit < len(self.entries) and self.done[self.next_emit] is not None:
            i = self.next_emit
            state = self.done[i]
            record = None
            if state[0] == "cached":
                got = self.load_cached(state[1])
                if got is None:  # pruned by a concurrent scan, or the cache failed: analyse the file after all
                    self.requeue(i)
                    return
                text, brief, record = got
                cached = True
            else:
                _, text, brief, key = state
                if text is None:
                    try:
                        row = self.cache.fetch(key) if self.cache is not None else None
                    except sqlite3.Error as exc:
                        self.cache_failed(exc)
                        row = None
                    if row is None:  # the cache failed since: nothing else holds the text
                        self.requeue(i)
                        return
                    text = row[0]
                else:
                    self.buffered -= len(text)
                cached = False
            self.done[i] = ()  # delivered: let the text go
            self.next_emit += 1
            if cached:
                self.summary.cached += 1
            else:
                self.summary.analysed += 1
            result = ScanResult(i, self.entries[i].path, text, brief, cached, record)
            if result.status == "error":
                self.summary.errors += 1
            if self.want == "record":
                self.on_record(result.record, cached)
            elif self.want == "json":
                self.on_record(result.json, cached)
            else:
                self.on_record(result, cached)

    def requeue(self, i: int) -> None:
        """Analyse entry ``i`` (next) after all: its cached or evicted record cannot be read back."""
        self.done[i] = None
        self.completed -= 1
        self.todo.insert(self.todo_pos, i)

    def load_cached(self, key: str):
        try:
            row = self.cache.fetch(key) if self.cache is not None else None
        except sqlite3.Error as exc:
            self.cache_failed(exc)
            row = None
        if row is None:
            return None
        text, skey, brief = row
        record = None
        lic = getattr(self.options, "licensing", None)
        if lic is not None and skey != self.settings_key and json.loads(brief)["status"] == "ok":
            from audit import licensing
            from audit.record import from_dict

            record = from_dict(json.loads(text))
            licensing.apply(record, lic)
            text = record.to_json()
            brief = _brief(json.loads(text))
            try:
                self.cache.update(key, text, self.settings_key, brief)
            except sqlite3.Error as exc:
                self.cache_failed(exc)
            self.summary.relicensed += 1
        return text, brief, record

    # -- the cache pass ------------------------------------------------------------------------------------

    def plan(self) -> None:
        for i, entry in enumerate(self.entries):
            if entry.kind == "error":
                rec = _error_record(entry.path, "LA101", entry.error or "cannot examine the path")
                text = rec.to_json()
                self.finish(i, text, _brief(rec.to_dict()), None)
                continue
            sig = self.signer.sign(entry)
            self.sigs[i] = sig
            if sig is not None and self.cache is not None:
                try:
                    row = self.cache.lookup(os.fsencode(entry.path))
                except sqlite3.Error as exc:
                    self.cache_failed(exc)
                    row = None
                if row is not None and row[0] == sig[0] and self.still_valid(row[2]):
                    self.complete(i, ("cached", row[1]), True)
                    continue
            self.todo.append(i)

    # -- workers -------------------------------------------------------------------------------------------

    def start_worker(self) -> None:
        import multiprocessing

        if self.ctx is None:
            self.ctx = multiprocessing.get_context("spawn")
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, name="lora-audit-scan-worker", daemon=True,
                                args=(child, self.cfg.target, self.worker_options, self.cfg.keep_layers,
                                      self.cfg.memory_mb))
        # The workers need nothing from the caller's __main__; spawn would import it again in every worker
        # (slow, and it fails for code read from stdin and re-runs scripts without a __main__ guard), so it is
        # hidden while the worker starts. Targets and option classes must live in importable modules.
        with _START_LOCK:
            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                proc.start()
            finally:
                if main is not None:
                    sys.modules["__main__"] = main
        child.close()
        w = _Worker(proc, parent)
        w.started = time.monotonic()
        self.workers.append(w)
        self.summary.workers_started += 1

    def remove(self, w: _Worker, kill: bool) -> None:
        if kill and w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5.0)
        if w.proc.is_alive():  # pragma: no cover - a process that survives SIGKILL for 5 s
            w.proc.kill()
            w.proc.join()
        try:
            w.conn.close()
        except OSError:
            pass
        try:
            w.proc.close()
        except ValueError:
            pass
        self.workers.remove(w)

    def pending(self) -> int:
        return len(self.todo) - self.todo_pos

    def top_up(self) -> None:
        """Keep min(jobs, work left) workers, and give every idle ready worker the next file."""
        busy = sum(1 for w in self.workers if w.task is not None)
        want = min(max(1, int(self.cfg.jobs)), self.pending() + busy)
        alive = sum(1 for w in self.workers if not w.retiring)
        for _ in range(want - alive):
            self.start_worker()
        for w in self.workers:
            if w.ready and w.task is None and not w.retiring:
                if self.pending() == 0:
                    w.retiring = True
                    try:
                        w.conn.send(None)
                    except OSError:
                        pass
                    continue
                i = self.todo[self.todo_pos]
                self.todo_pos += 1
                try:
                    w.conn.send((i, self.entries[i].path))
                except OSError:
                    self.todo_pos -= 1  # its death is noticed below; the file goes to another worker
                    w.retiring = True
                    continue
                w.task = i
                w.started = time.monotonic()

    def rss(self, w: _Worker, usage: tuple[int, int | None]) -> None:
        rss_kb, vm_kb = usage
        mb = rss_kb / 1024.0
        if mb > self.summary.worker_peak_rss_mb.get(w.pid, 0.0):
            self.summary.worker_peak_rss_mb[w.pid] = mb
        if vm_kb:
            self.summary.max_worker_peak_vm_mb = max(self.summary.max_worker_peak_vm_mb or 0.0, vm_kb / 1024.0)

    def failed(self, i: int, code: str, message: str) -> None:
        path = self.entries[i].path
        rec = _error_record(path, code, message)
        sig = self.sigs[i]
        key = _digest("stat", sig[0]) if sig is not None else None
        self.finish(i, rec.to_json(), _brief(rec.to_dict()), key)

    def on_message(self, w: _Worker, msg) -> None:
        kind = msg[0]
        if kind == "ready":
            _, _pid, baseline_kb, limited = msg
            w.ready = True
            self.summary.memory_limit_enforced = bool(limited)
            if baseline_kb:
                mb = baseline_kb / 1024.0
                self.summary.worker_baseline_vm_mb = max(self.summary.worker_baseline_vm_mb or 0.0, mb)
                mem = self.cfg.memory_mb
                if limited and mem and mem < mb + MIN_HEADROOM_MB:
                    raise ScanError(f"memory limit {mem} MB leaves no room for an analysis: an idle worker "
                                    f"already maps {mb:.0f} MB (allow at least {mb + MIN_HEADROOM_MB:.0f} MB)")
            return
        if kind == "init-error":
            raise ScanError(f"scan worker could not start: {msg[2]}")
        i = msg[1]
        if w.task != i:  # pragma: no cover - protocol error
            raise ScanError("scan worker answered for a file it was not given")
        w.task = None
        self.rss(w, msg[-1])
        if kind == "ok":
            _, _, text, brief, status, sha, _ = msg
            sig = self.sigs[i]
            key = None
            if sig is not None:
                key = _digest("content", sha, sig[1]) if sha and status == "ok" else _digest("stat", sig[0])
            self.finish(i, text, brief, key)
        elif kind == "mem":
            self.summary.memory_errors += 1
            w.retiring = True
            limit = f"{self.cfg.memory_mb} MB" if self.cfg.memory_mb else "the system's"
            self.failed(i, "LA127", f"analysis ran out of memory (limit {limit} of address space per worker); "
                                    "the worker was replaced")
        elif kind == "exc":
            self.summary.crashes += 1
            self.failed(i, "LA128", f"analysis failed with an unexpected error: {msg[2]}")

    def on_death(self, w: _Worker) -> None:
        w.proc.join(5.0)
        code = w.proc.exitcode
        i = w.task
        w.task = None
        if i is not None:
            self.summary.crashes += 1
            if code is not None and code < 0:
                how = f"was killed by {_signal_name(-code)}"
                if -code == signal.SIGKILL:
                    how += " (possibly by the system's out-of-memory killer)"
            else:
                how = f"exited with status {code}"
            self.failed(i, "LA128", f"analysis worker {how} while analysing this file")
            self.remove(w, kill=False)
        elif not w.ready and not w.retiring:
            self.remove(w, kill=False)
            raise ScanError(f"scan worker exited while starting (exit code {code})")
        else:
            self.remove(w, kill=False)

    def check_deadlines(self) -> None:
        now = time.monotonic()
        for w in list(self.workers):
            if not w.ready and now - w.started >= START_TIMEOUT_S:
                raise ScanError(f"scan worker did not start within {START_TIMEOUT_S:g} s")
            if w.task is not None and now - w.started >= self.cfg.timeout_s:
                i = w.task
                w.task = None
                self.remove(w, kill=True)
                self.summary.timeouts += 1
                self.failed(i, "LA126", f"analysis ran past the per-file time limit of {self.cfg.timeout_s:g} s; "
                                        "the worker was stopped")

    def serve(self) -> None:
        from multiprocessing.connection import wait

        while True:
            self.emit_ready()
            if self.next_emit >= len(self.entries):
                return
            self.top_up()
            if not self.workers:  # pragma: no cover - nothing to wait for, yet not done
                raise ScanError("scan stalled: no worker and records missing")
            deadlines = [w.started + (self.cfg.timeout_s if w.ready else START_TIMEOUT_S) for w in self.workers
                         if w.task is not None or not w.ready]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            handles = {}
            for w in self.workers:
                handles[w.conn] = w
                handles[w.proc.sentinel] = w
            ready = wait(list(handles), timeout)
            touched: list[_Worker] = []
            for h in ready:
                w = handles[h]
                if w not in touched:
                    touched.append(w)
            for w in touched:
                if w not in self.workers:
                    continue
                dead = False
                try:
                    while w in self.workers and w.conn.poll():
                        self.on_message(w, w.conn.recv())
                except (EOFError, OSError):
                    dead = True
                if w in self.workers and (dead or not w.proc.is_alive()):
                    self.on_death(w)
            self.check_deadlines()

    def shutdown(self, kill: bool) -> None:
        for w in list(self.workers):
            if not kill:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in list(self.workers):
            if not kill:
                w.proc.join(2.0)
            self.remove(w, kill=True)


def run(entries: Iterable[Entry | str], config: ScanConfig | None = None,
        on_record: Callable[[Any, bool], None] | None = None,
        on_progress: Callable[[int, int, str, bool], None] | None = None, *, want: str = "result") -> Summary:
    """Analyse ``entries`` (see the module docstring); deliver each record, in order, to ``on_record``.

    ``on_record(item, cached)`` gets a :class:`ScanResult` (``want="result"``), an AuditRecord
    (``want="record"``) or the JSON text (``want="json"``). ``on_progress(done, total, path, cached)`` is
    called after each file is finished (cached files first, as the cache is read before any analysis).
    Raises KeyboardInterrupt on Ctrl-C or SIGTERM (workers killed, everything finished so far committed) and
    :class:`ScanError` when the workers cannot run at all.
    """
    if want not in ("result", "record", "json"):
        raise ValueError("want must be 'result', 'record' or 'json'")
    config = config or ScanConfig()
    items = [e if isinstance(e, Entry) else Entry(os.fsdecode(os.fspath(e))) for e in entries]
    t0 = time.perf_counter()
    r = _Run(items, config, on_record or (lambda *_: None), on_progress, want)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _term(signum, frame):
            raise KeyboardInterrupt

        try:
            old_term = signal.signal(signal.SIGTERM, _term)
        except (ValueError, OSError):  # pragma: no cover
            old_term = None
    clean = False
    try:
        r.open_cache()
        r.plan()
        r.serve()
        clean = True
    finally:
        r.shutdown(kill=not clean)
        if r.cache is not None:
            if clean and r.wrote:
                try:
                    r.cache.prune()
                except sqlite3.Error:
                    pass
            r.cache.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    s = r.summary
    s.seconds = time.perf_counter() - t0
    s.max_worker_peak_rss_mb = max(s.worker_peak_rss_mb.values(), default=0.0)
    s.parent_peak_rss_mb = _rss_kb() / 1024.0
    return s


# ---------------------------------------------------------------------------------------------------------
# atomic output


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no /proc: read it the old way (briefly process-wide)
    os.umask(old)
    return old


class AtomicOutput:
    """``with AtomicOutput(path) as fh: fh.write(...)``: the output appears at ``path`` whole or not at all.

    Writes go to a temporary file in the same folder (mode 0o644 less the umask); on a clean exit it is
    flushed, fsynced and renamed over ``path`` (``os.replace``; the folder is fsynced too). On an exception,
    KeyboardInterrupt included, the temporary file is removed and ``path`` is left as it was. ``mode`` is
    ``"w"`` (text, ``encoding``) or ``"wb"``. Fit for streaming: write as records arrive.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8", newline: str | None = None):
        if mode not in ("w", "wb"):
            raise ValueError("mode must be 'w' or 'wb'")
        self.path = os.fspath(path)
        self.mode = mode
        self.encoding = encoding
        self.newline = newline
        self.tmp: str | None = None
        self.fh = None

    def __enter__(self):
        import tempfile

        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)[:120]}.", suffix=".tmp", dir=folder)
        try:
            os.fchmod(fd, 0o644 & ~_umask())
            if self.mode == "wb":
                self.fh = os.fdopen(fd, "wb")
            else:
                self.fh = os.fdopen(fd, "w", encoding=self.encoding, newline=self.newline)
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        return self.fh

    def __exit__(self, exc_type, exc, tb) -> None:
        fh, tmp = self.fh, self.tmp
        self.fh = self.tmp = None
        if exc_type is None:
            try:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
                os.replace(tmp, self.path)
            except BaseException:
                _discard(fh, tmp)
                raise
            try:
                dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError:
                return
            try:
                os.fsync(dfd)
            except OSError:
                pass
            finally:
                os.close(dfd)
        else:
            _discard(fh, tmp)


def _discard(fh, tmp: str | None) -> None:
    try:
        fh.close()
    except Exception:
        pass
    if tmp is not None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
