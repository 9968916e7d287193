"""The inspect pipeline: container -> formats -> adapters -> spectra -> blocks -> AuditRecord.

Memory stays bounded whatever the file size: layers are processed in chunks whose decoded factors fit in a
fixed byte budget, and each chunk's arrays are dropped before the next is read.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit import (
    __version__,
    blocks,
    claims,
    fingerprint,
    formats,
    hashes,
    sidecars,
    spectra,
)
from audit import adapters as adapter_registry
from audit import watchlist as watchlists
from audit.adapters.base import LayerAnalysis, LayerGroup
from audit.container import Limits, SafetensorsFile, open_safetensors
from audit.errors import AuditError
from audit.findings import make
from audit.record import (
    AdapterSummary,
    AuditRecord,
    EngineInfo,
    FileInfo,
    FormatInfo,
    LayerRecord,
)

CHUNK_BYTES = 16 * 2**20  # decoded float64 bytes per chunk of layers (Options.threads chunks in flight)
EXTREME = 1e4
# read_array errors that concern one tensor's values only: the layer is reported and skipped
VALUE_SKIP_CODES = ("LA163", "LA155")  # |value| above this in an adapter factor is reported (LA209)


@dataclass
class Options:
    device: str = "auto"
    limits: Limits = Limits()
    spectrum: bool = True  # keep the full spectrum of each layer in the record
    threads: int = min(2, os.cpu_count() or 1)  # chunks processed at once (memory: threads x CHUNK_BYTES)
    fingerprint: bool = True  # base-model fingerprint and claim checks (header-only, milliseconds)
    hashes: bool = True  # Civitai-compatible hashes (one extra pass over the file, concurrent with the layers)
    hash_threads: int | None = None  # 1 or 2 (None: 2 when two CPUs are available); see audit/hashes
    sidecars: bool = True  # read a model card / Civitai sidecar beside the file as claims
    watchlist: watchlists.Watchlist | None = None
    licensing: Any = None  # audit.licensing.Settings: license chain and policy verdicts (None: not evaluated)


class FileTensorSource:
    """TensorSource over an open SafetensorsFile; checks the health of every tensor it decodes, once."""

    def __init__(self, sf: SafetensorsFile):
        self.sf = sf
        self._cache: dict[str, np.ndarray] = {}
        self.nonfinite: dict[str, int] = {}
        self.extreme: dict[str, float] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        return self.sf.tensors[name].shape

    def dtype(self, name: str) -> str:
        return self.sf.tensors[name].dtype

    def array(self, name: str) -> np.ndarray:
        a = self._cache.get(name)
        if a is None:
            a = self.sf.read_array(name)
            if a.size:
                # two reductions and no temporaries in the common case; NaN/Inf propagate into max/min
                hi, lo = float(a.max()), float(a.min())
                if not (math.isfinite(hi) and math.isfinite(lo)):
                    self.nonfinite[name] = int(a.size - np.count_nonzero(np.isfinite(a)))
                    finite = a[np.isfinite(a)]
                    hi, lo = (float(finite.max()), float(finite.min())) if finite.size else (0.0, 0.0)
                peak = max(abs(hi), abs(lo))
                if peak > EXTREME:
                    self.extreme[name] = peak
            self._cache[name] = a
        return a

    def clear(self) -> None:
        self._cache.clear()


@dataclass
class _ChunkResult:
    src: FileTensorSource
    layers: list[LayerRecord] = field(default_factory=list)
    findings: list = field(default_factory=list)
    unclaimed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _decoded_bytes(sf: SafetensorsFile, group: LayerGroup) -> int:
    """Bytes a layer holds while its chunk is processed: its factors decoded to float64, or the operator an
    adapter builds from them when that is larger (``working_bytes``, e.g. BOFT's dense out×out rotation)."""
    factors = sum(sf.tensors[n].numel * 8 for n in group.parts.values() if n in sf.tensors)
    shapes = {role: sf.tensors[n].shape for role, n in group.parts.items() if n in sf.tensors}
    adapter = adapter_registry.detect(group, shapes)
    working = getattr(adapter, "working_bytes", None)
    return max(factors, working(shapes)) if working else factors


def _chunks(sf: SafetensorsFile, groups: list[LayerGroup]):
    return spectra.batches(groups, lambda g: _decoded_bytes(sf, g), CHUNK_BYTES)


def _file_info(path: str, sf: SafetensorsFile | None = None) -> FileInfo:
    name = os.path.basename(os.fspath(path))
    if sf is None:
        try:
            size = os.lstat(path).st_size
        except OSError:
            size = 0
        return FileInfo(path=os.fspath(path), name=name, size=size)
    return FileInfo(
        path=os.fspath(path),
        name=name,
        size=sf.size,
        header_bytes=sf.header_len,
        tensor_count=len(sf.tensors),
        dtypes=dict(sorted(Counter(t.dtype for t in sf.tensors.values()).items())),
        metadata=dict(sorted(sf.metadata.items())) if sf.metadata else sf.metadata,
    )


def inspect_file(path: str | os.PathLike, options: Options | None = None) -> AuditRecord:
    """Audit one adapter file, or a PEFT/diffusers directory. Never raises for a bad file: the record carries
    a coded error instead."""
    options = options or Options()
    path = os.fspath(path)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    record = AuditRecord(file=_file_info(path), tool={"name": "lora-audit", "version": __version__})
    try:
        source = sidecars.resolve_input(path)
        record.file = _file_info(source.adapter_path)
        # with hashes on, the zip search of the polyglot probe rides on the hash pass (one read, not two)
        sf = open_safetensors(source.adapter_path, options.limits, zip_scan=not options.hashes)
    except AuditError as e:
        record.status = "error"
        record.error = make(e.code, e.message, e.where)
        record.findings.append(record.error)
        record.timing = {"total": time.perf_counter() - t0}
        return record
    timing["open"] = time.perf_counter() - t0
    try:
        with sf:
            _analyse(sf, record, options, timing, source)
    except AuditError as e:  # e.g. the file was truncated or changed while its tensors were read
        record.status = "error"
        record.error = make(e.code, e.message, e.where)
        record.findings.append(record.error)
    timing["total"] = time.perf_counter() - t0
    record.timing = timing
    return record


def _analyse(sf: SafetensorsFile, record: AuditRecord, options: Options, timing: dict[str, float],
             source: sidecars.Input) -> None:
    # Hashes and the first read of the base-family rules (YAML parsing and regex compilation, ~0.1 s) run
    # beside the layers: the layer work is mostly numpy, which releases the GIL.
    side = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lora-audit-side")
    try:
        pending = side.submit(_timed, hashes.compute, sf, threads=options.hash_threads) if options.hashes else None
        rules = side.submit(fingerprint.load_rules) if options.fingerprint else None
        _layers(sf, record, options, timing)
        if pending is not None:
            record.hashes, timing["hashes"] = pending.result()
            if sf.zip_scan is not None and (found := sf.zip_scan.finding()) is not None:
                record.findings.append(found)
        if rules is not None:
            rules.result()  # a broken rules file raises here, as it would below
    finally:
        side.shutdown(wait=True)
    t = time.perf_counter()
    _claims(sf, record, options, source)
    timing["claims"] = time.perf_counter() - t
    if options.fingerprint:
        t = time.perf_counter()
        record.fingerprint, found = fingerprint.identify(
            fingerprint.layers_from_records(record.layers), claims=record.claims.base_claims,
            domain=record.domain, domain_reason=record.domain_reason)
        record.findings.extend(found)
        timing["fingerprint"] = time.perf_counter() - t
    if options.licensing is not None:
        from audit import licensing  # only `license` and `scan` evaluate licenses and policies

        t = time.perf_counter()
        licensing.apply(record, options.licensing)
        timing["licensing"] = time.perf_counter() - t


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def _claims(sf: SafetensorsFile, record: AuditRecord, options: Options, source: sidecars.Input) -> None:
    """Metadata, sidecars and the adapter config read as claims; embedded hashes checked; watchlist."""
    cl, found = claims.read(sf.metadata, record.layers, adapter_config=source.adapter_config)
    record.findings.extend(source.findings)
    record.findings.extend(found)
    cl.sidecars = list(source.read)
    cl.licenses = claims.license_claims(sf.metadata)
    stated: list[tuple[str, str]] = []
    if options.sidecars:
        sc = sidecars.find(source.adapter_path)
        record.findings.extend(sc.findings)
        cl.sidecars += sc.read
        cl.base_claims += sidecars.claims(sc)
        claims.add_triggers(cl, sidecars.triggers(sc))
        stated = sidecars.hashes(sc)
        stated_licenses, cl.permissions = sidecars.licenses(sc)
        cl.licenses += stated_licenses
    if record.hashes is not None:
        checks, found = hashes.check_embedded(sf.metadata, record.hashes)
        stated_checks, stated_found = hashes.check_stated(stated, record.hashes, sidecars.hash_against)
        cl.hash_checks = checks + stated_checks
        record.findings.extend(found + stated_found)
    if options.watchlist is not None:
        cl.watchlist, found = watchlists.match(options.watchlist, claims=cl, file_name=record.file.name,
                                               all_tags=claims.all_tags(sf.metadata))
        record.findings.extend(found)
    record.claims = cl


def _layers(sf: SafetensorsFile, record: AuditRecord, options: Options, timing: dict[str, float]) -> None:
    t = time.perf_counter()
    record.file = _file_info(record.file.path, sf)
    record.findings.extend(sf.findings)
    fr = formats.parse({n: formats.TensorMeta(i.dtype, i.shape) for n, i in sf.tensors.items()}, sf.metadata)
    record.findings.extend(fr.findings)
    timing["formats"] = time.perf_counter() - t

    device = spectra.resolve_device(options.device)
    backend = spectra.Backend(device)
    record.engine = EngineInfo(device=device, backend=backend.name)

    flux_like = blocks.is_flux_like([g.module for g in fr.groups])

    def process(chunk: list[LayerGroup]) -> _ChunkResult:
        """Read, decode, analyse and compute the spectra of one chunk of layers (in a worker thread)."""
        out = _ChunkResult(src=FileTensorSource(sf))
        analysed: list[tuple[LayerGroup, LayerAnalysis]] = []
        for g in chunk:
            shapes = {role: sf.tensors[name].shape for role, name in g.parts.items()}
            adapter = adapter_registry.detect(g, shapes)
            if adapter is None:
                out.unclaimed.extend(g.parts.values())
                continue
            try:
                analysed.append((g, adapter.analyse(g, out.src, fr.scale)))
            except AuditError as e:
                if e.code not in VALUE_SKIP_CODES:
                    raise  # truncation or a change on disk: the whole file is in doubt
                out.findings.append(make(e.code, e.message, e.where or g.key))
                out.skipped.extend(g.parts.values())
        out.src.clear()
        tm = time.perf_counter()
        ops = [a.operator for _, a in analysed if a.operator is not None]
        values = iter(spectra.singular_values(ops, backend)) if ops else iter(())
        for g, a in analysed:
            sv = next(values) * abs(a.scale) if a.operator is not None else None
            out.layers.append(_layer_record(g, a, sv, flux_like, options))
            out.findings.extend(a.findings)
        out.seconds = time.perf_counter() - tm
        return out

    # Chunks are processed by a small pool of threads (numpy releases the GIL while it reads, decodes and
    # factorises), at most `threads` chunks in flight, and collected in file order, so the record is the
    # same whatever the scheduling.
    t = time.perf_counter()
    chunks = list(_chunks(sf, fr.groups))
    results: list[_ChunkResult] = []
    threads = max(1, options.threads)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lora-audit") as pool:
        window = [pool.submit(process, c) for c in chunks[:threads]]
        for i in range(len(chunks)):
            results.append(window.pop(0).result())
            if i + threads < len(chunks):
                window.append(pool.submit(process, chunks[i + threads]))
    timing["layers"] = time.perf_counter() - t
    timing["spectra"] = sum(r.seconds for r in results)

    layers = [layer for r in results for layer in r.layers]
    unclaimed = [n for r in results for n in r.unclaimed]
    skipped = [n for r in results for n in r.skipped]  # values that cannot be decoded: reported, kept listed
    for r in results:
        record.findings.extend(r.findings)
    _health_findings(record, results, layers)
    unrecognised = sorted(set(fr.unrecognised) | set(unclaimed) | set(skipped))
    if unclaimed:
        record.findings.append(make(
            "LA201",
            f"{len(unclaimed)} tensor(s) grouped by key name but matching no adapter kind",
            where=unclaimed[0],
        ))
    record.format = FormatInfo(
        id=fr.format,
        formats=dict(sorted(fr.formats.items())),
        recognised=fr.total - len(unrecognised),
        total=fr.total,
        unrecognised=unrecognised,
        scale_convention=fr.scale.convention,
        scale_source=fr.scale.source,
        embeddings=fr.embeddings,
    )
    record.layers = layers
    record.blocks = blocks.summarise(layers)
    record.adapter = _summary(layers)
    record.domain, record.domain_reason = _domain(fr, layers)
    if not sf.tensors:
        record.findings.append(make("LA210"))
    elif not layers:
        record.findings.append(make("LA200", f"no adapter layers recognised among {fr.total} tensors"))


def _layer_record(g: LayerGroup, a: LayerAnalysis, sv, flux_like: bool, options: Options) -> LayerRecord:
    block_id, _, _ = blocks.block_of(g.component, g.module, flux_like=flux_like)
    rec = LayerRecord(
        key=g.key,
        component=g.component,
        module=g.module,
        block=block_id,
        kind=a.kind,
        format=g.format,
        tensors=sorted(g.parts.values()),
        out_features=a.out_features,
        in_features=a.in_features,
        kernel=list(a.kernel),
        rank=a.rank,
        alpha=a.alpha,
        scale=a.scale,
        scale_rule=a.scale_rule,
        delta_basis=a.delta_basis,
        unknowable=list(a.unknowable),
        extra=dict(a.extra),
    )
    if sv is not None:
        m = spectra.metrics(sv)
        rec.fro, rec.spectral = m.fro, m.spectral
        rec.stable_rank, rec.entropy_rank = m.stable_rank, m.entropy_rank
        rec.energy_rank_90, rec.energy_rank_99 = m.energy_rank_90, m.energy_rank_99
        if options.spectrum:
            rec.spectrum = np.asarray(sv, dtype=np.float64).tolist()
    return rec


def _health_findings(record: AuditRecord, results: list[_ChunkResult], layers: list[LayerRecord]) -> None:
    nonfinite = {name: n for r in results for name, n in r.src.nonfinite.items()}
    extreme = {name: peak for r in results for name, peak in r.src.extreme.items()}
    for name, count in sorted(nonfinite.items()):
        record.findings.append(make("LA202", f"{count} NaN/Inf value(s) in tensor", where=name))
    for name, peak in sorted(extreme.items()):
        record.findings.append(make("LA209", f"largest |value| {peak:.3g} exceeds {EXTREME:g}", where=name))
    for layer in layers:
        if layer.spectral == 0.0 and layer.delta_basis != "none":
            record.findings.append(make("LA203", "every factor product is zero: the layer changes nothing",
                                        where=layer.key))


def _hist(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items(), key=lambda kv: (len(kv[0]), kv[0])))


def _fmt_num(x: float | int | None, absent: str) -> str:
    if x is None:
        return absent
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return f"{x:.9g}"


def _summary(layers: list[LayerRecord]) -> AdapterSummary:
    energy = sum(l.fro * l.fro for l in layers if blocks.is_weight_delta(l))
    return AdapterSummary(
        kinds=dict(sorted(Counter(l.kind for l in layers).items())),
        rank_histogram=_hist(_fmt_num(l.rank, "none") for l in layers),
        alpha_histogram=_hist(_fmt_num(l.alpha, "absent") for l in layers),
        scale_histogram=_hist(_fmt_num(l.scale, "none") for l in layers),
        scale_rules=dict(sorted(Counter(l.scale_rule for l in layers).items())),
        layers=len(layers),
        total_strength=math.sqrt(energy),
        max_spectral=max((l.spectral for l in layers if l.spectral is not None and math.isfinite(l.spectral)),
                         default=0.0),
        base_dependent_layers=sum(1 for l in layers if l.delta_basis != "exact"),
    )


def _domain(fr, layers: list[LayerRecord]) -> tuple[str, str | None]:
    if fr.domain_hint:
        return fr.domain_hint, fr.domain_reason
    if not layers:
        return "not-a-lora", "no tensor matches an adapter kind"
    if fr.format == "unknown":
        return "unknown", "adapter layers found, but their key names match no known diffusion key format"
    return "diffusion", f"adapter layers on diffusion-model modules ({fr.format} key format)"

