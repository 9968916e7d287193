"""``norm``: deltas and replacements of normalisation parameters.

* ``w_norm`` / ``b_norm`` (LyCORIS norm tuning): vectors added to a LayerNorm / GroupNorm weight and bias,
  ``w' = w + strength·w_norm``, ``b' = b + strength·b_norm``. The delta is exactly the stored vector
  (``delta_basis`` "exact"), but a vector is not a matrix: it has no singular spectrum, so there is no
  operator. Its size is reported in ``extra`` (``w_norm_l2``, ``b_norm_l2``, ``max_abs``).
* ``set_weight`` (ComfyUI ``set_weight``; BFL control LoRAs' ``*_norm.scale``): the stored tensor *replaces*
  the parameter. The change is ``set_weight − W`` and needs the base parameter (``delta_basis`` "none"); the
  stored values themselves are summarised in ``extra``.
"""

from __future__ import annotations

import math

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource

KIND = "norm"
SCALE_RULE = "no-alpha"


def _shape(src: TensorSource, name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in src.shape(name))


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class NormAdapter:
    kind = KIND
    owns = frozenset({"w_norm", "b_norm", "set_weight"})
    detects = frozenset({"w_norm", "b_norm", "set_weight"})
    priority = 110

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        where = group.key
        out = LayerAnalysis(kind=KIND, rank=None, alpha=None, scale=1.0, scale_rule=SCALE_RULE,
                            out_features=None, in_features=None, delta_basis="exact")
        vectors: dict[str, np.ndarray] = {}
        lengths: dict[str, int] = {}
        for role in ("w_norm", "b_norm"):
            name = group.parts.get(role)
            if name is None:
                continue
            shape = _shape(src, name)
            if len(shape) != 1 or shape[0] == 0:
                out.findings.append(findings.make(
                    "LA207", f"{role} has shape {list(shape)}, expected a non-empty vector", where))
                continue
            lengths[role] = shape[0]
            vectors[role] = np.asarray(src.array(name), dtype=np.float64).reshape(-1)
        if len(set(lengths.values())) > 1:
            out.findings.append(findings.make(
                "LA207", f"w_norm has {lengths['w_norm']} entries but b_norm has {lengths['b_norm']}", where))
        if lengths:
            out.out_features = lengths.get("w_norm", lengths.get("b_norm"))

        with np.errstate(all="ignore"):
            for role, v in vectors.items():
                out.extra[f"{role}_l2"] = _f(np.linalg.norm(v))
            if vectors:
                out.extra["max_abs"] = _f(max(float(np.abs(v).max()) for v in vectors.values()))
        if vectors:
            out.unknowable.append(
                "norm deltas are vectors added to the norm weight/bias: they have no singular spectrum")

        set_name = group.parts.get("set_weight")
        if set_name is not None:
            out.delta_basis = "none"
            out.findings.append(findings.make(
                "LA208", "set_weight replaces the parameter: the change is set_weight − W", where))
            out.unknowable.append("set_weight replaces the parameter: the change set_weight − W needs the base")
            shape = _shape(src, set_name)
            out.extra["set_weight_shape"] = list(shape)
            if shape and shape[0] > 0 and out.out_features is None:
                out.out_features = shape[0]
            if math.prod(shape) > 0:
                s = np.asarray(src.array(set_name), dtype=np.float64).reshape(-1)
                with np.errstate(all="ignore"):
                    out.extra["set_weight_l2"] = _f(np.linalg.norm(s))
                    out.extra["set_weight_min"] = _f(s.min())
                    out.extra["set_weight_max"] = _f(s.max())
            else:
                out.findings.append(findings.make("LA207", "set_weight tensor is empty", where))
        elif not vectors:
            out.delta_basis = "none"
            if not lengths and not any(r in group.parts for r in ("w_norm", "b_norm")):
                out.findings.append(findings.make("LA206", "norm layer without w_norm, b_norm or set_weight",
                                                  where))
        return out


ADAPTER = NormAdapter()
