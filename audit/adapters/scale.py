"""Effective scale of an adapter layer: how the stored factors are multiplied before they reach the weight.

Every loader applies ``W' = W + strength · scale · ΔW``; this module decides ``scale`` for one layer from the
stored ``alpha`` tensor, the trainer's convention (:class:`~audit.adapters.base.ScaleContext`) and the kind,
and names the rule it used with a short stable id (``LayerAnalysis.scale_rule``):

``alpha/rank``               kohya / LyCORIS per-module alpha: scale = alpha / rank
``missing-alpha=>1``         no alpha tensor: sd-scripts, ComfyUI and InvokeAI all take alpha = rank
``alpha=0=>1``               alpha 0 is replaced by the rank when training (sd-scripts, LyCORIS)
``no-rank=>1``               the layer has no usable rank to divide by
``lokr-full=>1``             LoKr with both Kronecker factors stored full: alpha is ignored
``peft lora_alpha/r``        PEFT / diffusers config (``rank_pattern`` / ``alpha_pattern`` per module)
``peft lora_alpha/sqrt(r)``  the same with rsLoRA
``peft no-config=>1``        a PEFT-style file without any adapter config
``unit``                     the format defines no alpha (xlabs, ai-toolkit, BFL control)
``alpha-not-scale=>1``       the kind's alpha is not a multiplier (OFT/BOFT constraint) or it has none

Pattern keys of ``rank_pattern`` / ``alpha_pattern`` come from file metadata, so they are matched as plain
module-name suffixes (at a ``.`` boundary, the longest match wins), never compiled as regular expressions.
"""

from __future__ import annotations

import math

from audit import findings
from audit.adapters.base import LayerGroup, ScaleContext, TensorSource
from audit.findings import Finding

ALPHA_MAX = 1e6  # a stored alpha above this is treated as corrupt (LA205) and ignored

# kinds whose ``alpha`` is not a multiplier of the delta, or which have no alpha at all
_ALPHA_NOT_SCALE = frozenset({"oft", "boft", "ia3", "full", "norm", "textual-inversion"})
_PEFT_FORMATS = frozenset({"peft", "diffusers-peft"})


def read_alpha(group: LayerGroup, src: TensorSource) -> tuple[float | None, list[Finding]]:
    """The layer's stored 0-d ``alpha``, validated.

    Absent => ``(None, [])``. A tensor that is not scalar (more than one element), or whose value is NaN,
    infinite, negative or above ``ALPHA_MAX``, gives an LA205 finding and is treated as absent. A
    one-element tensor of any rank (``[1]``) is read as a scalar.
    """
    name = group.parts.get("alpha")
    if name is None:
        return None, []
    where = group.key
    shape = tuple(src.shape(name))
    n = 1
    for d in shape:
        n *= int(d)
    if n != 1:
        return None, [findings.make("LA205", f"alpha tensor has shape {list(shape)}, expected a scalar", where)]
    value = float(src.array(name).reshape(-1)[0])
    if math.isnan(value) or math.isinf(value):
        return None, [findings.make("LA205", f"alpha is {value!r}", where)]
    if value < 0:
        return None, [findings.make("LA205", f"alpha is negative ({value!r})", where)]
    if value > ALPHA_MAX:
        return None, [findings.make("LA205", f"alpha is extreme ({value!r} > {ALPHA_MAX:g})", where)]
    return value, []


def match_pattern(patterns: dict, module: str):
    """The value of the longest key of ``patterns`` that equals ``module`` or is a ``.``-bounded suffix of it.

    Keys are compared literally. Keys written with PEFT's optional ``(.*\\.)?`` prefix are not needed: a bare
    suffix such as ``to_k`` or ``blocks.0.attn.to_k`` already matches at any depth.
    """
    best_key = None
    for key in patterns:
        if not isinstance(key, str) or not key:
            continue
        if module == key or module.endswith("." + key):
            if best_key is None or len(key) > len(best_key):
                best_key = key
    return None if best_key is None else patterns[best_key]


def config_rank(ctx: ScaleContext, module: str) -> int | None:
    """The PEFT config rank of ``module``: ``rank_pattern`` match, else ``r``; None without a config."""
    r = match_pattern(ctx.rank_pattern or {}, module)
    if r is None:
        r = ctx.r
    try:
        return int(r) if r is not None and float(r) > 0 else None
    except (TypeError, ValueError):
        return None


def config_alpha(ctx: ScaleContext, module: str) -> float | None:
    """The PEFT config ``lora_alpha`` of ``module``: ``alpha_pattern`` match, else ``lora_alpha``."""
    a = match_pattern(ctx.alpha_pattern or {}, module)
    if a is None:
        a = ctx.lora_alpha
    try:
        a = float(a) if a is not None else None
    except (TypeError, ValueError):
        return None
    if a is None or not math.isfinite(a) or a < 0 or a > ALPHA_MAX:
        return None
    return a


def effective_scale(
    kind: str,
    rank: int | None,
    alpha: float | None,
    ctx: ScaleContext,
    module: str,
    factors_decomposed: bool = True,
) -> tuple[float, str, list[Finding]]:
    """``(scale, scale_rule, findings)`` for one layer.

    ``rank`` is the layer's inner dimension as stored (``lora_down.shape[0]``, ``hada_w1_b.shape[0]``, the
    LoKr ``w1_b``/``w2_b`` rank), ``alpha`` the stored alpha already validated by :func:`read_alpha` (None
    when absent or invalid). ``factors_decomposed`` is False only for LoKr with both factors stored full.
    Findings: LA211 (info) when a PEFT config rank differs from the stored rank, LA212 (info) when a config
    alpha differs from a stored alpha.
    """
    out: list[Finding] = []
    if kind in _ALPHA_NOT_SCALE:
        return 1.0, "alpha-not-scale=>1", out
    if kind == "lokr" and not factors_decomposed:
        return 1.0, "lokr-full=>1", out

    if ctx.convention == "peft":
        cfg_alpha = config_alpha(ctx, module)
        cfg_rank = config_rank(ctx, module)
        if cfg_rank is not None and rank is not None and cfg_rank != rank:
            out.append(findings.make(
                "LA211", f"config rank {cfg_rank} differs from the stored rank {rank}", module))
        if alpha is not None and cfg_alpha is not None and not math.isclose(alpha, cfg_alpha, rel_tol=1e-6):
            out.append(findings.make(
                "LA212", f"config lora_alpha {cfg_alpha:g} differs from the stored alpha {alpha:g}", module))
        use_alpha = alpha if alpha is not None else cfg_alpha
        r = cfg_rank if cfg_rank is not None else rank
        if use_alpha is None:
            # no alpha anywhere: diffusers then sets lora_alpha = r, i.e. scale 1
            return 1.0, "peft no-config=>1", out
        if r is None or r <= 0:
            return 1.0, "no-rank=>1", out
        if ctx.use_rslora:
            return use_alpha / math.sqrt(r), "peft lora_alpha/sqrt(r)", out
        return use_alpha / r, "peft lora_alpha/r", out

    # kohya / LyCORIS, and "unit" formats (which have no alpha; a stored one is still honoured, as every
    # loader applies an alpha tensor when it is present)
    if alpha is None:
        return 1.0, ("unit" if ctx.convention == "unit" else "missing-alpha=>1"), out
    if rank is None or rank <= 0:
        return 1.0, "no-rank=>1", out
    if alpha == 0.0:
        return 1.0, "alpha=0=>1", out
    return alpha / rank, "alpha/rank", out


def is_peft_format(fmt: str) -> bool:
    return fmt in _PEFT_FORMATS
