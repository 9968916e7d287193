"""LoRA: ΔW = up @ down, from ``lora_down [r, in]`` and ``lora_up [out, r]`` (kohya, diffusers, PEFT, …).

1×1 convolutions (SD1 ``proj_in``/``proj_out``: down ``[r, C, 1, 1]``, up ``[C, r, 1, 1]``) are the same linear
map applied per pixel, so they are analysed as ``lora`` too; their ``kernel`` is reported as ``(1, 1)`` so
that the conv layout stays visible. Downs with a real spatial kernel (``[r, in, kh, kw]``) are ``locon``
(audit/adapters/locon.py), which shares this module's analysis.

Optional tensors: the 0-d ``alpha`` (scale alpha/rank, audit/adapters/scale.py) and ``lora_up_bias`` (the
``lora_B.bias`` of BFL control LoRAs, a bias delta ΔB of shape ``[out]``; its norm is reported in ``extra``).

This module also holds the small helpers that the other factor-based kinds (locon, lora-tucker, loha, lokr,
dora) share: reading factor shapes, the common shape findings, and assembling a :class:`LayerAnalysis`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.adapters.scale import config_alpha, effective_scale, read_alpha
from audit.findings import Finding
from audit.spectra import Dense, Kron, LowRank

# The largest operator (in float64 elements) that an analysis materialises from the factors. Factor tensors
# themselves are bounded by the container; products such as the LoHa Khatri–Rao factors or a Tucker core
# contracted with its down factor are not, so a hostile file could ask for terabytes.
MAX_OPERATOR_ELEMENTS = 1 << 27

# findings that make a layer's factors unusable: no operator is built
BLOCKING = frozenset({"LA204", "LA206", "LA207"})


# ---------------------------------------------------------------------------------------------------------
# shared helpers for the factor-based kinds


@dataclass
class FactorKind:
    """An adapter kind whose analysis is a plain function (``audit.adapters.base.Adapter``)."""

    kind: str
    owns: frozenset
    detects: frozenset
    priority: int
    _analyse: Callable[[LayerGroup, TensorSource, ScaleContext], LayerAnalysis] = field(repr=False)
    _accepts: Callable[[set, dict], bool] | None = field(default=None, repr=False)

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        return self._analyse(group, src, ctx)

    def accepts(self, roles, shapes) -> bool:
        return True if self._accepts is None else bool(self._accepts(set(roles), dict(shapes)))


def priority_of(module_name: str) -> int:
    """Detection priority: index of the module in ``audit.adapters._MODULES`` × 10."""
    from audit.adapters import _MODULES

    return _MODULES.index(module_name) * 10


def shapes_of(group: LayerGroup, src: TensorSource, roles) -> dict[str, tuple[int, ...]]:
    """Shapes of the roles present in the group (header only, no tensor data read)."""
    return {r: tuple(int(d) for d in src.shape(group.parts[r])) for r in roles if r in group.parts}


def missing_finding(group: LayerGroup, roles) -> list[Finding]:
    miss = [r for r in roles if r not in group.parts]
    if not miss:
        return []
    return [findings.make("LA206", "missing " + ", ".join(miss), group.key)]


def trailing_ones(shape: tuple[int, ...], keep: int = 2) -> bool:
    """True when every dimension after the first ``keep`` is 1."""
    return all(d == 1 for d in shape[keep:])


def zero_sized(shapes: dict[str, tuple[int, ...]], group: LayerGroup) -> list[Finding]:
    bad = [r for r, s in shapes.items() if any(d == 0 for d in s)]
    if not bad:
        return []
    return [findings.make("LA207", "zero-sized factor: " + ", ".join(
        f"{r} {list(shapes[r])}" for r in bad), group.key)]


def mat(a: np.ndarray) -> np.ndarray:
    """Flatten to [shape[0], prod(rest)] (the conv weight layout [out, in·kh·kw])."""
    return a.reshape(a.shape[0], -1)


def operator_arrays(op) -> list[np.ndarray]:
    if isinstance(op, LowRank):
        return [op.U, op.V]
    if isinstance(op, Dense):
        return [op.M]
    if isinstance(op, Kron):
        return operator_arrays(op.left) + operator_arrays(op.right)
    return []


def assemble(
    kind: str,
    group: LayerGroup,
    src: TensorSource,
    ctx: ScaleContext,
    *,
    rank: int | None,
    out_features: int | None,
    in_features: int | None,
    kernel: tuple[int, ...] = (),
    problems: list[Finding],
    build: Callable[[], object] | None,
    cost: int = 0,
    extra: dict | None = None,
    factors_decomposed: bool = True,
) -> LayerAnalysis:
    """Alpha, scale and operator for one layer, common to every factor-based kind.

    ``problems`` are the shape findings already found; any LA204/LA206/LA207 among them means no operator.
    ``build`` reads the factor values (``src.array``) and returns the unscaled operator; ``cost`` is the
    number of float64 elements it materialises beyond the stored factors (bounded by MAX_OPERATOR_ELEMENTS).
    """
    extra = dict(extra or {})
    found = list(problems)
    alpha, alpha_findings = read_alpha(group, src)
    found += alpha_findings
    scale, rule, scale_findings = effective_scale(kind, rank, alpha, ctx, group.module, factors_decomposed)
    for f in scale_findings:
        found.append(findings.make(f.code, f.message, group.key))
    shown_alpha = alpha
    if shown_alpha is None and ctx.convention == "peft":
        shown_alpha = config_alpha(ctx, group.module)
    if kind == "lokr" and not factors_decomposed and alpha is not None:
        extra["alpha_ignored"] = True

    operator = None
    unknowable: list[str] = []
    if build is not None and not any(f.code in BLOCKING for f in found):
        if cost > MAX_OPERATOR_ELEMENTS:
            extra["spectrum_skipped"] = (
                f"the factored operator would need {cost} float64 elements "
                f"(limit {MAX_OPERATOR_ELEMENTS})")
        else:
            op = build()
            # one reduction per factor, no temporary mask: a sum is finite only if every entry is
            with np.errstate(all="ignore"):
                finite = all(np.isfinite(a.sum()) for a in operator_arrays(op))
            if finite:
                operator = op
            else:
                extra["spectrum_skipped"] = "factor values contain NaN or Inf"
    return LayerAnalysis(
        kind=kind,
        rank=rank,
        alpha=shown_alpha,
        scale=float(scale),
        scale_rule=rule,
        out_features=out_features,
        in_features=in_features,
        kernel=tuple(int(k) for k in kernel),
        operator=operator,
        delta_basis="exact",
        unknowable=unknowable,
        findings=found,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------------------
# LoRA / LoCon (up @ down)


UPDOWN_ROLES = ("lora_down", "lora_up")


def analyse_updown(group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
    """``lora`` (linear or 1×1 conv) or ``locon`` (down with a spatial kernel): ΔW = up₂ @ down₂.

    down ``[r, in, *k]`` is read as the matrix ``[r, in·prod(k)]`` (conv weight layout), up ``[out, r(, 1, 1)]``
    as ``[out, r]``. The kind is ``locon`` exactly when prod(k) > 1.
    """
    problems = missing_finding(group, UPDOWN_ROLES)
    shp = shapes_of(group, src, UPDOWN_ROLES + ("lora_up_bias",))
    down, up = shp.get("lora_down"), shp.get("lora_up")
    kernel: tuple[int, ...] = ()
    rank = out_f = in_f = None
    if down is not None:
        if len(down) < 2:
            problems.append(findings.make("LA207", f"lora_down has shape {list(down)}, expected [r, in(, k…)]",
                                          group.key))
        else:
            rank, in_f = down[0], down[1]
            kernel = tuple(down[2:])
    if up is not None:
        if len(up) < 2 or not trailing_ones(up):
            problems.append(findings.make("LA207", f"lora_up has shape {list(up)}, expected [out, r(, 1, 1)]",
                                          group.key))
        else:
            out_f = up[0]
    if not problems and down is not None and up is not None and up[1] != down[0]:
        problems.append(findings.make(
            "LA204", f"lora_up has rank {up[1]} but lora_down has rank {down[0]}", group.key))
    problems += zero_sized({r: s for r, s in shp.items() if r in UPDOWN_ROLES}, group)

    extra: dict = {}
    side: list[Finding] = []
    if "lora_up_bias" in shp:
        b = shp["lora_up_bias"]
        extra["up_bias_shape"] = list(b)
        if out_f is not None and (len(b) != 1 or b[0] != out_f):
            side.append(findings.make("LA207", f"lora_up_bias has shape {list(b)}, expected [{out_f}]",
                                      group.key))
        bias = src.array(group.parts["lora_up_bias"])
        if np.all(np.isfinite(bias)):
            extra["up_bias_norm"] = float(np.linalg.norm(bias.ravel()))

    kind = "locon" if math.prod(kernel) > 1 else "lora"

    def build():
        d = mat(src.array(group.parts["lora_down"]))
        u = mat(src.array(group.parts["lora_up"]))
        return LowRank(u, d)

    a = assemble(kind, group, src, ctx, rank=rank, out_features=out_f, in_features=in_f, kernel=kernel,
                 problems=problems, build=build, cost=0, extra=extra)
    a.findings += side
    return a


def _lora_accepts(roles: set, shapes: dict) -> bool:
    # a spatial kernel belongs to locon and a Tucker core to lora-tucker (both tried before this kind);
    # anything else with lora_up / lora_down is LoRA, including groups missing one of them (LA206)
    return "lora_mid" not in roles


ADAPTER = FactorKind(
    kind="lora",
    owns=frozenset({"lora_down", "lora_up", "alpha", "lora_up_bias"}),
    detects=frozenset({"lora_down", "lora_up"}),
    priority=priority_of("lora"),
    _analyse=analyse_updown,
    _accepts=_lora_accepts,
)
