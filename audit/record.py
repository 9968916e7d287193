"""AuditRecord: the one versioned, JSON-serialisable record that flows through lora-audit.

Analysers fill its parts; renderers only read it. ``to_json`` is deterministic: sorted keys, floats written
with nine significant digits, NaN/Inf as null, ASCII only (file-derived strings are escaped, never dropped).
Timing fields are the only values that differ between two runs over the same file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from audit.findings import Finding

SCHEMA_VERSION = "1.0"


@dataclass
class FileInfo:
    path: str
    name: str
    size: int
    header_bytes: int = 0
    tensor_count: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> tensor count
    metadata: dict[str, str] | None = None  # raw __metadata__, attacker-controlled text


@dataclass
class FormatInfo:
    id: str  # dominant key-format id (DESIGN.md)
    formats: dict[str, int]  # tensors per key-format id
    recognised: int
    total: int
    unrecognised: list[str]
    scale_convention: str
    scale_source: str | None
    embeddings: int = 0


@dataclass
class LayerRecord:
    key: str
    component: str
    module: str
    block: str  # block id from audit/blocks, e.g. "down.1", "double.7", "te1"
    kind: str  # adapter kind id
    format: str
    tensors: list[str]
    out_features: int | None
    in_features: int | None
    kernel: list[int]
    rank: int | None
    alpha: float | None
    scale: float
    scale_rule: str
    delta_basis: str  # exact | direction | relative | exact-partial | none
    fro: float | None = None  # of scale * operator
    spectral: float | None = None
    stable_rank: float | None = None
    entropy_rank: float | None = None
    energy_rank_90: int | None = None
    energy_rank_99: int | None = None
    spectrum: list[float] = field(default_factory=list)  # descending, scaled
    unknowable: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BlockRecord:
    id: str
    group: str  # down | mid | up | te | te1 | te2 | te3 | double | single | block | other | ...
    index: int | None
    layers: int
    strength: float  # sqrt(sum of layer ||ΔW||_F²) over layers with an exact or partial delta
    energy_share: float  # this block's share of the file's total sum ||ΔW||_F²  (0..1)
    max_spectral: float
    kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class AdapterSummary:
    kinds: dict[str, int] = field(default_factory=dict)  # kind -> layer count
    rank_histogram: dict[str, int] = field(default_factory=dict)  # rank -> layer count ("none" for rankless)
    alpha_histogram: dict[str, int] = field(default_factory=dict)  # alpha -> layer count ("absent")
    scale_histogram: dict[str, int] = field(default_factory=dict)  # effective scale -> layer count
    scale_rules: dict[str, int] = field(default_factory=dict)
    layers: int = 0
    total_strength: float = 0.0  # sqrt(sum ||ΔW||_F²) over exact/partial layers
    max_spectral: float = 0.0
    base_dependent_layers: int = 0  # layers whose effective ΔW needs base weights


@dataclass
class EngineInfo:
    device: str
    backend: str
    seconds: float = 0.0  # timing: excluded from determinism


@dataclass
class AuditRecord:
    file: FileInfo
    status: str = "ok"  # ok | error
    error: Finding | None = None
    domain: str = "unknown"  # diffusion | not-diffusion | not-a-lora | unknown
    domain_reason: str | None = None
    format: FormatInfo | None = None
    adapter: AdapterSummary | None = None
    layers: list[LayerRecord] = field(default_factory=list)
    blocks: list[BlockRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    engine: EngineInfo | None = None
    timing: dict[str, float] = field(default_factory=dict)  # seconds per stage: excluded from determinism
    schema_version: str = SCHEMA_VERSION
    tool: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _clean(self)

    def to_json(self, *, indent: int | None = None, timing: bool = True) -> str:
        d = self.to_dict()
        if not timing:
            d.pop("timing", None)
            if d.get("engine"):
                d["engine"].pop("seconds", None)
        return json.dumps(d, sort_keys=True, ensure_ascii=True, indent=indent, allow_nan=False)


def _clean(obj: Any) -> Any:
    """Plain JSON data from the record tree (one pass, no deep copies as dataclasses.asdict would make)."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return float(f"{obj:.9g}")
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if dataclasses.is_dataclass(obj):
        return {f.name: _clean(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj
