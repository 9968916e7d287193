"""The interface every adapter kind implements, and the types that flow between the rooms.

``audit/formats`` turns tensor names into :class:`LayerGroup` objects whose ``parts`` map a canonical *role*
(the LyCORIS suffix vocabulary below) to the tensor name in the file. ``audit/adapters`` picks the kind from
the roles present, and the kind's module turns the group into a :class:`LayerAnalysis`: shapes, rank, alpha,
effective scale, and an exact structured operator (``audit.spectra``) whose singular values are the layer's
spectrum. Adapter modules read tensor values only through a :class:`TensorSource`, which decodes every dtype
and records NaN/Inf/all-zero health once, centrally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from audit.findings import Finding

# Canonical roles (tensor suffixes after format normalisation). Formats map their own spellings onto these:
# lora_A/lora.down/_lora.down/down/lora1.down -> lora_down, lora_B/... -> lora_up,
# lora_magnitude_vector -> dora_scale, lora_B.bias -> lora_up_bias, and so on.
ROLES = frozenset(
    {
        # LoRA / LoCon / Tucker
        "lora_down", "lora_up", "lora_mid", "alpha", "lora_up_bias",
        # DoRA magnitude (kohya/LyCORIS dora_scale, PEFT lora_magnitude_vector)
        "dora_scale",
        # LoHa
        "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
        # LoKr
        "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
        # (IA)^3
        "weight", "on_input",
        # OFT / BOFT
        "oft_blocks", "rescale",
        # GLoRA
        "a1", "a2", "b1", "b2", "bm",
        # full / diff
        "diff", "diff_b",
        # norm tuning and parameter replacement (BFL control *_norm.scale, ComfyUI set_weight)
        "w_norm", "b_norm", "set_weight",
        # textual inversion vectors: one layer per embedding
        "embedding",
        # sparse bias (LyCORIS)
        "bias_indices", "bias_values", "bias_size",
    }
)


@dataclass
class LayerGroup:
    """All tensors of one adapted module, as found by audit/formats."""

    key: str  # unique and stable: "<component>:<module>", e.g. "unet:down_blocks_0_attentions_0_proj_in"
    component: str  # unet | te | te1 | te2 | te3 | transformer | prior_unet | prior_te | embedding | unknown
    module: str  # module path as written in the file after the prefix (flattened for kohya names)
    parts: dict[str, str]  # role -> tensor name in the file
    format: str  # key-format id (DESIGN.md)


@dataclass
class ScaleContext:
    """How the file's trainer defines the effective scale.

    convention:
      ``kohya``  per-module 0-d ``alpha`` tensor, scale = alpha / rank; missing alpha => alpha = rank (scale 1).
      ``peft``   scale = lora_alpha / r (or / sqrt(r) with rsLoRA) from the adapter config; no config => 1.
      ``unit``   the format has no alpha at all (xlabs, ai-toolkit, BFL control): scale 1.
    """

    convention: str = "kohya"
    lora_alpha: float | None = None
    r: int | None = None
    use_rslora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # where the config came from, e.g. "metadata:lora_adapter_metadata"


class TensorSource(Protocol):
    """Read access to one file's tensors. Implemented by the pipeline over audit/container."""

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> str: ...

    def array(self, name: str) -> np.ndarray:
        """The tensor decoded to float64 (any dtype). Health (NaN/Inf/zero) is recorded by the source."""
        ...


@dataclass
class LayerAnalysis:
    """What one adapter kind says about one layer. Numbers only: no formatting here."""

    kind: str
    rank: int | None  # inner dimension as the trainer defines it (None where the kind has none)
    alpha: float | None  # stored alpha (or config alpha), None when absent
    scale: float  # effective multiplier of the operator at strength 1
    scale_rule: str  # short id of the convention used, e.g. "alpha/rank", "missing-alpha=>1", "peft lora_alpha/r"
    out_features: int | None
    in_features: int | None  # for conv: in_channels (kernel separate)
    kernel: tuple[int, ...] = ()  # (kh, kw) for conv layers
    operator: Any = None  # an audit.spectra operator, or None when no spectrum is knowable from the file
    # how the operator relates to the effective weight delta:
    #   "exact"      ΔW = scale * operator
    #   "direction"  DoRA: operator is the un-normalised direction update; ΔW also needs the base weight
    #   "relative"   ΔW = operator @ W (OFT/BOFT) or W-dependent; spectrum bounds ||ΔW|| / ||W||
    #   "exact-partial" ΔW = scale * operator + a base-dependent term (GLoRA: operator b1·b2, W·a1·a2 in extra)
    #   "none"       nothing spectral is knowable without the base weights (IA3, norm)
    delta_basis: str = "exact"
    unknowable: list[str] = field(default_factory=list)  # plain statements of what needs base weights
    findings: list[Finding] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific numbers (JSON-serialisable)


class Adapter(Protocol):
    """One adapter kind. Modules in audit/adapters/ expose an instance named ``ADAPTER``."""

    kind: str
    owns: frozenset[str]  # roles this kind consumes (LyCORIS weight_list)
    detects: frozenset[str]  # roles whose presence identifies it (LyCORIS weight_list_det)
    priority: int  # detection order: lower is tried first

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis: ...
