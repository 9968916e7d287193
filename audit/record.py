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

SCHEMA_VERSION = "1.3"
#: policy verdicts, least to most strict (a policy's verdict over several candidate bases is the strictest)
VERDICTS = ("allow", "allow-with-conditions", "needs-review", "deny")


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
class Hashes:
    """Civitai-compatible file hashes (civitai/model-scanner HashTask), computed in one pass over the file.

    Hex digests are upper case, as Civitai shows them. ``autov3`` is the full SHA-256 of the tensor data (every
    byte after the 8-byte length prefix and the JSON header); Civitai displays its first 12 characters.
    ``autov1`` is None for files shorter than 2 MiB, as in the scanner. ``crc32`` is written in the scanner's
    byte order (.NET ``Crc32.GetCurrentHash``: little-endian), e.g. b"hello world" -> "85114A0D".
    """

    sha256: str
    autov1: str | None
    autov2: str
    autov3: str | None  # None only for a file that is not safetensors (hashes.compute_path)
    blake3: str
    crc32: str
    data_offset: int | None  # where the hashed tensor data (AutoV3) starts


@dataclass
class HashCheck:
    """One hash written into the metadata, checked against the hash computed from the file."""

    field: str  # metadata key, e.g. "sshs_model_hash", "modelspec.hash_sha256"
    value: str  # as written (attacker-controlled text)
    against: str  # which computed hash it is compared with: "autov3" | "sha256" | "autov1" ...
    verdict: str  # match | match-with-prefix | mismatch | placeholder | malformed | unverifiable


@dataclass
class Evidence:
    """One fingerprint signal of one family, evaluated against the file's layers."""

    family: str
    signal: str  # signal id from rules/bases/<family>.yaml
    kind: str  # module | width | blocks | forbid
    outcome: str  # match | contradict | lower-bound
    what: str  # the signal's description, from the rules file
    observed: str | None = None  # e.g. "768", "19 blocks (max index 18)"
    expected: str | None = None  # e.g. "768", "19"
    where: str | None = None  # a layer key that shows it
    source: str | None = None  # the citation in the rules file


@dataclass
class Candidate:
    """A variant or shape-identical family the tensors cannot rule out."""

    id: str  # variant id, e.g. "flux1-dev", or a family id for a shape-identical family
    family: str
    name: str
    supports: list[str] = field(default_factory=list)  # why it stays possible (rules text, claims)
    against: list[str] = field(default_factory=list)  # what speaks against it


@dataclass
class Fingerprint:
    family: str  # a family id from rules/bases, "not-diffusion" or "unknown"
    name: str | None = None  # display name from the rules file
    confidence: str = "none"  # high | medium | low | none  (meaning: README "Base-model fingerprint")
    reason: str | None = None  # one line: why this confidence
    partial: bool = False  # block counts are lower bounds: the adapter touches only some blocks
    candidates: list[Candidate] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # family -> score, for every anchored family


@dataclass
class Claim:
    """A statement about the base model, made by the file's metadata or a file beside it."""

    source: str  # "metadata" | "readme" | "sidecar" | "adapter_config"
    key: str  # e.g. "ss_base_model_version", "modelspec.architecture", "base_model", "baseModel"
    value: str  # as written (attacker-controlled text)
    family: str | None = None  # family the value names, per rules/bases claims; None if unrecognised
    variant: str | None = None
    verdict: str = "unverifiable"  # agrees | contradicts | unverifiable | unrecognised


@dataclass
class TagCount:
    tag: str
    count: int


@dataclass
class DatasetFolder:
    name: str  # folder name from ss_tag_frequency / ss_dataset_dirs (attacker-controlled)
    images: int | None = None  # img_count from ss_dataset_dirs
    repeats: int | None = None  # n_repeats from ss_dataset_dirs
    distinct_tags: int = 0
    top_tags: list[TagCount] = field(default_factory=list)  # most frequent first, ties by tag


@dataclass
class TriggerWord:
    word: str
    sources: list[str] = field(default_factory=list)  # e.g. "modelspec.trigger_phrase", "ss_tag_frequency"


@dataclass
class WatchHit:
    name: str  # watchlist entry (canonical name)
    alias: str  # the alias that matched
    where: str  # tag | trigger | output_name | dataset_folder | file_name | title | ...
    value: str  # the text it was found in (attacker-controlled)


@dataclass
class Claims:
    """Training metadata read as claims: typed, checked, never trusted."""

    metadata: str = "none"  # present | stripped | none  (stripped: only non-training keys remain)
    trainer: str | None = None  # kohya | ai-toolkit | onetrainer | musubi-tuner | diffusers | peft | ...
    training: dict[str, Any] = field(default_factory=dict)  # typed training parameters (see audit/claims)
    modelspec: dict[str, str] = field(default_factory=dict)
    adapter_config: dict[str, Any] | None = None  # PEFT adapter_config.json, when a directory was given
    base_claims: list[Claim] = field(default_factory=list)
    triggers: list[TriggerWord] = field(default_factory=list)
    datasets: list[DatasetFolder] = field(default_factory=list)
    tags_total: int = 0  # distinct tags over all folders
    hash_checks: list[HashCheck] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)  # files beside the adapter that were read
    watchlist: list[WatchHit] = field(default_factory=list)
    licenses: list[LicenseClaim] = field(default_factory=list)  # license statements, as written (unchecked)
    permissions: dict[str, Any] | None = None  # Civitai-style permission flags from a sidecar, normalised


@dataclass
class LicenseRef:
    """A license text version as cited by a verdict (rules/licenses/<id>.yaml)."""

    id: str  # e.g. "flux-1-dev-nc-v1.1.1"; "unknown" when no verified facts exist
    name: str
    version: str | None = None
    published: str | None = None  # date printed in the text (YYYY-MM-DD)
    url: str | None = None  # canonical text
    level: str = "U"  # verification of the facts: P | P-tag | S | U (rules/licenses/SCHEMA.md)
    spdx: str | None = None  # SPDX id, or the LicenseRef-… used for it


@dataclass
class ChainLink:
    """One license that binds the adapter, and why."""

    role: str  # base | intermediate | component | lora_author
    license: LicenseRef
    via: str  # where it comes from, e.g. "lineage flux1-dev (rules/lineage.yaml)", "metadata modelspec.license"


@dataclass
class Lineage:
    """One base model the adapter may descend from, with the licenses it inherits."""

    id: str  # variant id (e.g. "flux1-dev") or family id
    family: str
    name: str
    chain: list[ChainLink] = field(default_factory=list)
    note: str | None = None  # from rules/lineage.yaml


@dataclass
class LicenseClaim:
    """A license statement about the adapter itself (attacker-controlled; checked against the lineage)."""

    source: str  # metadata | readme | sidecar | adapter_config
    key: str  # e.g. "modelspec.license", "license", "license_name", "allowCommercialUse"
    value: str  # as written
    license: str | None = None  # license id it resolves to, None when unrecognised
    verdict: str = "unverifiable"  # consistent | conflicts | more-restrictive | unrecognised | unverifiable
    reason: str | None = None


@dataclass
class Licensing:
    """The license chain of one adapter. Not legal advice: every fact cites its license text."""

    basis: str = "unknown"  # asserted | claimed | candidates | unknown  (how the lineages were chosen)
    basis_detail: str | None = None
    asserted: str | None = None  # the --assume-base id applied to this file
    lineages: list[Lineage] = field(default_factory=list)  # evaluated; the verdict takes the strictest
    declared: list[LicenseClaim] = field(default_factory=list)
    civitai: dict[str, Any] | None = None  # Civitai permission flags as read from a sidecar, normalised
    disclaimer: str = "Not legal advice: a summary of license texts to help a human review, citing each text."


@dataclass
class Reason:
    """One rule of a policy that fired, with the license text it rests on."""

    rule: str  # policy rule id
    action: str  # deny | review | condition | note
    message: str
    remediation: str | None = None
    license: str | None = None  # license id
    clause: str | None = None  # e.g. "§2(d)"
    url: str | None = None
    lineage: str | None = None  # the lineage (candidate base) it concerns


@dataclass
class PolicyVerdict:
    policy: str  # policy id
    name: str
    verdict: str  # allow | allow-with-conditions | needs-review | deny
    reasons: list[Reason] = field(default_factory=list)  # deny and review reasons
    conditions: list[Reason] = field(default_factory=list)  # what the deployer must do
    notes: list[Reason] = field(default_factory=list)
    by_lineage: dict[str, str] = field(default_factory=dict)  # lineage id -> verdict under this policy
    context: dict[str, Any] = field(default_factory=dict)  # the deployer facts the policy was evaluated with


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
    hashes: Hashes | None = None
    fingerprint: Fingerprint | None = None
    claims: Claims | None = None
    licensing: Licensing | None = None
    policies: list[PolicyVerdict] = field(default_factory=list)
    layers_omitted: int = 0  # layer records left out (scan keeps the strongest only); the summary counts all
    engine: EngineInfo | None = None
    probe: dict[str, Any] | None = None  # audit.probe.run.ProbeResult.to_dict(), when a probe was run
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
        if obj and all(type(v) is float for v in obj):  # spectra: thousands of floats, no recursion per value
            return [float(f"{v:.9g}") if math.isfinite(v) else None for v in obj]
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def from_dict(data: dict[str, Any]) -> AuditRecord:
    """An AuditRecord rebuilt from its JSON form (``to_dict``/``to_json``), e.g. from the scan cache.

    Unknown keys are an error (the JSON came from another schema); missing keys take their defaults.
    """
    return _build(AuditRecord, data)


_HINTS: dict[type, dict[str, Any]] = {}


def _build(tp: Any, value: Any) -> Any:
    import types
    import typing

    if value is None or tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(args[0], value) if len(args) == 1 else value
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return [_build(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(tp) or (str, Any)
        return {k: _build(item, v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{tp.__name__}: expected an object, got {type(value).__name__}")
        hints = _HINTS.get(tp)
        if hints is None:
            hints = _HINTS[tp] = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        extra = set(value) - names
        if extra:
            raise ValueError(f"{tp.__name__}: unknown field(s) {sorted(extra)}")
        return tp(**{k: _build(hints[k], v) for k, v in value.items()})
    if tp is float and isinstance(value, int):
        return float(value)
    return value
