"""``ia3``: (IA)³ — one learned vector that rescales the output rows or the input columns of a weight.

Two conventions exist for what the stored vector means:

* **LyCORIS** (``weight`` + ``on_input``): the vector ``v`` is stored around zero and the merged weight is
  ``W' = W ⊙ (1 + v)`` broadcast over the output rows (``on_input`` 0) or the input columns (``on_input`` 1);
  its ``get_diff_weight`` returns ``ΔW = W ⊙ v``. Shapes: ``[out]`` or ``[in]`` for a Linear, ``[1, C, 1, 1]``
  for a convolution.
* **PEFT** (``ia3_l``, no ``on_input``): the vector ``l`` is initialised to ones and the merged weight is
  ``W' = W ⊙ l``, i.e. ``ΔW = W ⊙ (l − 1)``. Shapes: ``[out, 1]`` (output scaling) or ``[1, in]``
  (feed-forward modules, input scaling); a conv vector ``[1, C, 1, 1]`` does not say which axis it scales.

Either way ``ΔW = diag(d)·W`` (output axis) or ``ΔW = W·diag(d)`` (input axis) with ``d = v`` (LyCORIS) or
``d = l − 1`` (PEFT). ΔW needs the base weight, so there is no operator; what the file does fix is the
relative size of the change: ``‖ΔW‖₂ ≤ max|d| · ‖W‖₂`` and ``‖ΔW‖_F ≤ max|d| · ‖W‖_F``
(``extra["relative_bound"]``), and the per-channel factors ``1 + d`` that multiply W
(``extra["factor_min"]``/``["factor_max"]``; a negative factor flips the sign of a channel, a zero factor
silences it).
"""

from __future__ import annotations

import math

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource

KIND = "ia3"
SCALE_RULE = "no-alpha"
_PEFT_FORMATS = frozenset({"peft", "diffusers-peft"})


def _shape(src: TensorSource, name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in src.shape(name))


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def vector_length(shape: tuple[int, ...]) -> tuple[int | None, str | None]:
    """``(n, layout)`` when ``shape`` holds a single vector, else ``(None, None)``.

    Layouts: ``"1d"`` ``[n]``; ``"col"`` ``[n, 1]``; ``"row"`` ``[1, n]``; ``"conv"`` ``[1, n, 1, …]``.
    """
    if len(shape) == 1:
        return shape[0], "1d"
    if len(shape) == 2:
        if shape[1] == 1:
            return shape[0], "col"
        if shape[0] == 1:
            return shape[1], "row"
        return None, None
    if len(shape) >= 3 and shape[0] == 1 and all(d == 1 for d in shape[2:]):
        return shape[1], "conv"
    return None, None


def vector_stats(v: np.ndarray) -> dict:
    """min / max / mean / L2 norm / max |·| of a vector (None for a value that is not finite)."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return {"min": None, "max": None, "mean": None, "l2": None, "max_abs": None}
    with np.errstate(all="ignore"):
        return {
            "min": _f(v.min()),
            "max": _f(v.max()),
            "mean": _f(v.mean()),
            "l2": _f(np.linalg.norm(v)),
            "max_abs": _f(np.abs(v).max()),
        }


class IA3Adapter:
    kind = KIND
    owns = frozenset({"weight", "on_input"})
    detects = frozenset({"on_input", "weight"})
    priority = 70

    @staticmethod
    def accepts(roles, shapes) -> bool:
        """``on_input`` identifies LyCORIS (IA)³; a lone ``weight`` must at least be shaped like a vector."""
        if "on_input" in roles:
            return True
        shape = shapes.get("weight")
        return shape is not None and vector_length(tuple(shape))[0] is not None

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        where = group.key
        out = LayerAnalysis(kind=KIND, rank=None, alpha=None, scale=1.0, scale_rule=SCALE_RULE,
                            out_features=None, in_features=None, delta_basis="none")
        out.findings.append(findings.make(
            "LA208", "(IA)³ rescales the base weight: ΔW = W ⊙ vector needs the base weight", where))
        out.unknowable.append("ΔW = W ⊙ broadcast(vector): its norm and spectrum need the base weight W")

        name = group.parts.get("weight")
        if name is None:
            out.findings.append(findings.make("LA206", "(IA)³ layer without its weight vector", where))
            return out

        # which convention and which axis
        on_input: bool | None = None
        flag = group.parts.get("on_input")
        if flag is not None:
            fshape = _shape(src, flag)
            if math.prod(fshape) != 1:
                out.findings.append(findings.make(
                    "LA207", f"on_input has shape {list(fshape)}, expected a scalar", where))
            else:
                value = float(src.array(flag).reshape(-1)[0])
                on_input = bool(value != 0.0) if math.isfinite(value) else None
        peft = flag is None and (group.format in _PEFT_FORMATS or ctx.convention == "peft")
        convention = "peft" if peft else "lycoris"

        shape = _shape(src, name)
        n, layout = vector_length(shape)
        if n is None or n == 0:
            out.findings.append(findings.make(
                "LA207", f"(IA)³ weight has shape {list(shape)}, expected a non-empty vector", where))
            return out

        if on_input is not None:
            axis = "input" if on_input else "output"
        elif flag is not None:
            axis = "unknown"  # malformed on_input
        elif peft and layout == "col":
            axis = "output"
        elif peft and layout == "row":
            axis = "input"
        elif peft:
            axis = "unknown"  # a PEFT conv or 1-D vector: the config's feedforward_modules decides
        else:
            axis = "output"  # LyCORIS default when on_input is absent (train_on_input=False)
        if axis == "output":
            out.out_features = n
        elif axis == "input":
            out.in_features = n

        v = np.asarray(src.array(name), dtype=np.float64).reshape(-1)
        d = v - 1.0 if peft else v  # the per-channel delta factor: ΔW = W ⊙ broadcast(d)
        factor = d + 1.0  # what multiplies W: W' = W ⊙ broadcast(factor)
        stats = vector_stats(v)
        dstats = vector_stats(d)
        fstats = vector_stats(factor)
        with np.errstate(invalid="ignore"):
            negative = int(np.count_nonzero(factor < 0))
            zero = int(np.count_nonzero(factor == 0))
        nonfinite = int(v.size - np.count_nonzero(np.isfinite(v)))

        if convention == "peft":
            meaning = "W' = W ⊙ l, ΔW = W ⊙ (l − 1) (PEFT ia3_l, initialised to ones)"
        else:
            meaning = "W' = W ⊙ (1 + v), ΔW = W ⊙ v (LyCORIS, initialised to zeros)"
        out.extra.update({
            "convention": convention,
            "semantics": meaning,
            "axis": axis,
            "vector_length": n,
            "vector_min": stats["min"],
            "vector_max": stats["max"],
            "vector_mean": stats["mean"],
            "vector_l2": stats["l2"],
            "delta_l2": dstats["l2"],
            # ΔW = diag(d)·W or W·diag(d):  ||ΔW||₂ <= max|d| · ||W||₂ (and the same for Frobenius)
            "relative_bound": dstats["max_abs"],
            "factor_min": fstats["min"],
            "factor_max": fstats["max"],
            "factors_negative": negative,
            "factors_zero": zero,
        })
        if nonfinite:
            out.extra["nonfinite"] = nonfinite
        if axis == "unknown":
            out.unknowable.append("which axis the vector scales (output rows or input columns) is not stored")
        return out


ADAPTER = IA3Adapter()
