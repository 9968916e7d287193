"""DoRA: a magnitude vector ``dora_scale`` on top of another kind's direction update; kind ``dora``.

``dora_scale`` (kohya / LyCORIS / OneTrainer; PEFT's ``lora_magnitude_vector`` is mapped to the same role by
audit/formats) is stored beside the factors of an ordinary kind (lora, locon, lora-tucker, loha, lokr; the
registry is asked for the rarer ones). The underlying kind is detected from the remaining roles and analysed
as usual; its operator is the direction update s·ΔW_dir.

The applied weight is W' = m ⊙ (W + s·ΔW_dir) / ‖W + s·ΔW_dir‖, the norm taken along the magnitude's axis:

* ``[out, 1]`` / ``[out, 1, 1, 1]``  per output row (LyCORIS ``wd_on_out=True``, its default);
* ``[1, in]`` / ``[1, in, 1, 1]``    per input column (LyCORIS ``wd_on_out=False``, OneTrainer);
* ``[out]``                          per output row (PEFT linear); PEFT convolutions store ``[1, out, 1, 1]``.

The effective ΔW = W' − W therefore needs the base weight W, which the file does not hold; the analysis says
so (LA208, ``delta_basis = "direction"``) and reports the axis and the magnitude's statistics in ``extra``.
"""

from __future__ import annotations

import importlib

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.adapters.lora import FactorKind, assemble, priority_of, shapes_of

# the kinds DoRA wraps, in detection order (audit.adapters._MODULES)
INNER = ("lora_tucker", "locon", "lora", "loha", "lokr")
_PEFT_FORMATS = frozenset({"peft", "diffusers-peft"})

UNKNOWABLE = (
    "the effective ΔW = m ⊙ (W + s·ΔW_dir)/‖W + s·ΔW_dir‖ − W needs the base weight W; "
    "the spectrum shown is the direction update s·ΔW_dir only"
)


def _inner_kinds():
    return [importlib.import_module(f"audit.adapters.{m}").ADAPTER for m in INNER]


def _other_kinds():
    """Kinds outside INNER, from the registry (glora, oft, …); empty when the registry cannot be loaded."""
    try:
        from audit.adapters import registry

        return [a for a in registry() if a.kind != "dora" and a.kind not in {k.kind for k in _inner_kinds()}]
    except (ImportError, AttributeError):  # a kind module missing or without ADAPTER
        return []


def without_dora(group: LayerGroup) -> LayerGroup:
    parts = {r: n for r, n in group.parts.items() if r != "dora_scale"}
    return LayerGroup(key=group.key, component=group.component, module=group.module, parts=parts,
                      format=group.format)


def inner_adapter(group: LayerGroup, src: TensorSource):
    """The kind of the direction factors of a DoRA group (without ``dora_scale``), or None."""
    roles = set(group.parts)
    shapes = shapes_of(group, src, roles)
    for a in _inner_kinds() + _other_kinds():
        accepts = getattr(a, "accepts", None)
        if a.detects & roles and (accepts is None or accepts(roles, shapes)):
            return a
    return None


def magnitude_axis(shape: tuple[int, ...], out_f: int | None, in_f: int | None, fmt: str,
                   in_folded: bool = False) -> str:
    """``row`` (one magnitude per output row), ``column`` (per input column) or ``unknown``."""
    if not shape:
        return "unknown"
    if len(shape) == 1:
        return "row" if out_f is not None and shape[0] == out_f else "unknown"
    rest_ones = all(d == 1 for d in shape[2:])
    if shape[1] == 1 and rest_ones and out_f is not None and shape[0] == out_f:
        return "row"
    if shape[0] == 1 and rest_ones:
        n = shape[1]
        if fmt in _PEFT_FORMATS and len(shape) > 2 and n == out_f:
            return "row"  # PEFT conv magnitude [1, out, 1, 1]
        if in_f is not None and (n == in_f or (in_folded and n > 0 and in_f % n == 0)):
            return "column"
        if out_f is not None and n == out_f:
            return "row"
    return "unknown"


_CONVENTION = {
    "row": "per output row (LyCORIS wd_on_out / PEFT)",
    "column": "per input column (LyCORIS wd_on_out=False / OneTrainer)",
    "unknown": "axis not recognised",
}


def analyse(group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
    sub = without_dora(group)
    inner = inner_adapter(sub, src)
    if inner is None:
        base = assemble("dora", group, src, ctx, rank=None, out_features=None, in_features=None,
                        problems=[findings.make("LA206", "dora_scale without direction factors", group.key)],
                        build=None)
        wraps = None
    else:
        base = inner.analyse(sub, src, ctx)
        wraps = base.kind

    extra = dict(base.extra)
    extra["wraps"] = wraps
    name = group.parts["dora_scale"]
    mshape = tuple(int(d) for d in src.shape(name))
    axis = magnitude_axis(mshape, base.out_features, base.in_features, group.format,
                          bool(extra.get("in_includes_kernel")))
    extra["magnitude_shape"] = list(mshape)
    extra["magnitude_axis"] = axis
    extra["magnitude_convention"] = _CONVENTION[axis]
    found = list(base.findings)
    if axis == "unknown" and base.out_features is not None:
        found.append(findings.make(
            "LA207", f"dora_scale has shape {list(mshape)}, which fits neither [out={base.out_features}, 1] "
                     f"nor [1, in={base.in_features}]", group.key))
    m = src.array(name).ravel() if int(np.prod(mshape)) > 0 else np.zeros(0)
    if m.size and np.all(np.isfinite(m)):
        extra["magnitude"] = {
            "min": float(m.min()),
            "max": float(m.max()),
            "mean": float(m.mean()),
            "norm": float(np.linalg.norm(m)),
        }
    else:
        extra["magnitude"] = None
    if not any(f.code == "LA208" for f in found):  # one LA208 per layer (GLoRA, OFT already raise it)
        found.append(findings.make(
            "LA208", "DoRA: the effective delta depends on the base weight (magnitude re-normalisation)",
            group.key))
    return LayerAnalysis(
        kind="dora",
        rank=base.rank,
        alpha=base.alpha,
        scale=base.scale,
        scale_rule=base.scale_rule,
        out_features=base.out_features,
        in_features=base.in_features,
        kernel=base.kernel,
        operator=base.operator,
        delta_basis="direction",
        unknowable=list(base.unknowable) + [UNKNOWABLE],
        findings=found,
        extra=extra,
    )


def _owns() -> frozenset:
    roles = {"dora_scale"}
    for a in _inner_kinds():
        roles |= a.owns
    return frozenset(roles)


ADAPTER = FactorKind(
    kind="dora",
    owns=_owns(),
    detects=frozenset({"dora_scale"}),
    priority=priority_of("dora"),
    _analyse=analyse,
)
