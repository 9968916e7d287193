"""``glora``: generalised LoRA — a low-rank update of the weight plus a low-rank multiple of the weight itself.

LyCORIS stores four ``nn.Linear`` (or 1×1 / k×k conv) weights, so each tensor is ``[out_features_of_that
map, in_features_of_that map]``:

    a1 [in, r]   a2 [r, in]   b1 [out, r]   b2 [r, in(, kh, kw)]        (optional bm [r, r, kh, kw])

and the merged delta is (LyCORIS ``make_weight``, ComfyUI ``weight_adapter/glora``)

    ΔW = (W · a1 · a2 + b1 · b2) · alpha / r,      r = a2.shape[0]

with ``W`` flattened to ``[out, in, …]`` and ``a1·a2`` acting on its input-channel axis (for a conv the same
``[in, in]`` matrix multiplies every kernel position). With ``bm`` (Tucker conv) the ``b`` part is rebuilt as
``Σ_{m,n} bm[m,n,h,w] · b1[o,m] · b2[n,i]``. Older LyCORIS files use the transposed layout
``a1 [r, in]``, ``a2 [in, r]``, ``b1 [r, in]``, ``b2 [out, r]`` with ``ΔW = (W · a2 · a1 + b2 · b1) · alpha / r``,
``r = a1.shape[0]``; the layout is told apart by shapes (as ComfyUI does) and named in ``extra["layout"]``.

Only the ``b`` part is independent of the base weight: it is the operator (``LowRank``, scaled by alpha/r,
``delta_basis`` "exact-partial"). The ``W·a1·a2`` part needs ``W``; what the file fixes is its relative size,
``‖W·A‖₂ ≤ ‖W‖₂·σ_max(A)`` with ``A = (alpha/r)·a1·a2``, whose singular values go to
``extra["relative_singular_values"]``.
"""

from __future__ import annotations

import math

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.adapters.scale import effective_scale, read_alpha
from audit.spectra import LowRank, singular_values

KIND = "glora"
MAX_BUILD = 2**25  # elements of the rebuilt Tucker factor (b2 through bm) above which it is not formed
_ROLES = ("a1", "a2", "b1", "b2")


def _flat(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0], math.prod(shape[1:])


def _layout(s: dict[str, tuple[int, ...]]) -> tuple[str | None, str | None]:
    """``("lycoris" | "lycoris-old" | None, note)`` from the four factor shapes."""
    a1, a2, b1, b2 = (_flat(s[k]) for k in _ROLES)
    new = a1[1] == a2[0] == b1[1] == b2[0] and a1[0] == a2[1]
    old = b2[1] == b1[0] == a1[0] == a2[1] and a2[0] == a1[1] and len(s["b1"]) == 2
    if new and old:
        r_new, r_old = a2[0], a1[0]
        if r_old < r_new:
            return "lycoris-old", "shapes fit both layouts; read as the older one, whose rank is smaller"
        note = "shapes fit both layouts; read as the current one" + (
            "" if r_new < r_old else " (square factors: ComfyUI would read them as the older layout)")
        return "lycoris", note
    if new:
        return "lycoris", None
    if old:
        return "lycoris-old", None
    return None, None


def _representable(op: LowRank) -> bool:
    """``‖U‖_F·‖V‖_F`` (a bound on every singular value of U·V) fits comfortably in float64."""
    with np.errstate(all="ignore"):
        bound = float(np.linalg.norm(op.U)) * float(np.linalg.norm(op.V))
    return math.isfinite(bound) and bound < 1e300


class GLoRAAdapter:
    kind = KIND
    owns = frozenset({"a1", "a2", "b1", "b2", "bm", "alpha"})
    detects = frozenset({"a1", "a2", "b1", "b2"})
    priority = 100

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        where = group.key
        alpha, alpha_findings = read_alpha(group, src)
        out = LayerAnalysis(kind=KIND, rank=None, alpha=alpha, scale=1.0, scale_rule="no-rank=>1",
                            out_features=None, in_features=None, delta_basis="exact-partial")
        out.findings.extend(alpha_findings)
        out.findings.append(findings.make(
            "LA208", "GLoRA's W·a1·a2 term multiplies the base weight", where))
        out.unknowable.append("the W·a1·a2 term of ΔW needs the base weight W; the operator is the "
                              "base-independent b1·b2 term only")

        missing = [k for k in _ROLES if k not in group.parts]
        if missing:
            out.findings.append(findings.make("LA206", f"GLoRA layer without {', '.join(missing)}", where))
            out.delta_basis = "none"
            return out
        shapes = {k: tuple(int(d) for d in src.shape(group.parts[k])) for k in _ROLES}
        bm_name = group.parts.get("bm")
        if bm_name is not None:
            shapes["bm"] = tuple(int(d) for d in src.shape(bm_name))

        if any(len(shapes[k]) < 2 or min(shapes[k]) <= 0 for k in shapes):
            return self._bad(out, shapes, "every factor must be at least 2-D with non-zero sizes", where)
        layout, note = _layout(shapes)
        if layout is None:
            return self._bad(out, shapes, "the factor dimensions do not chain", where)
        for k in ("a1", "a2"):
            if any(d != 1 for d in shapes[k][2:]):
                return self._bad(out, shapes, f"{k} must be a 1x1 map", where)

        if layout == "lycoris":
            in_f, r = shapes["a1"][0], shapes["a2"][0]
            out_f = shapes["b1"][0]
            if len(shapes["b2"]) > 2 and shapes["b2"][1] != in_f:
                return self._bad(out, shapes, "b2 input channels differ from a1", where)
            if any(d != 1 for d in shapes["b1"][2:]):
                return self._bad(out, shapes, "b1 must be a 1x1 map", where)
            kernel = tuple(shapes["b2"][2:])
        else:
            in_f, r = shapes["a2"][0], shapes["a1"][0]
            out_f = shapes["b2"][0]
            kernel = ()
        if "bm" in shapes:
            bm = shapes["bm"]
            if layout != "lycoris" or len(bm) < 3 or bm[0] != r or bm[1] != r or any(
                    d != 1 for d in shapes["b2"][2:]):
                return self._bad(out, shapes, "bm must be [r, r, k…] with a 1x1 b2", where)
            kernel = tuple(bm[2:])
            if r * in_f * math.prod(kernel) > MAX_BUILD:
                return self._bad(out, shapes, "the Tucker kernel is implausibly large", where)

        out.rank = r
        out.in_features = in_f
        out.out_features = out_f
        out.kernel = kernel
        out.extra["layout"] = layout
        if note:
            out.extra["layout_note"] = note
        scale, rule, scale_findings = effective_scale(KIND, r, alpha, ctx, group.module)
        out.scale, out.scale_rule = scale, rule
        out.findings.extend(scale_findings)

        arr = {k: np.asarray(src.array(group.parts[k]), dtype=np.float64) for k in _ROLES}
        if bm_name is not None:
            arr["bm"] = np.asarray(src.array(bm_name), dtype=np.float64)
        if not all(bool(np.all(np.isfinite(a))) for a in arr.values()):
            out.unknowable.append("GLoRA factors hold NaN/Inf values: no spectrum")
            return out
        flat = {k: a.reshape(a.shape[0], -1) for k, a in arr.items() if k != "bm"}

        if layout == "lycoris":
            rel = LowRank(flat["a1"], flat["a2"])  # [in, r] @ [r, in]
            if bm_name is not None:
                # T[m, (i, h, w)] = Σ_n bm[m, n, h, w] · b2[n, i]   (kernel positions flattened to k)
                t = np.einsum("mnk,ni->mik", arr["bm"].reshape(r, r, -1), flat["b2"])
                out.operator = LowRank(flat["b1"], np.ascontiguousarray(t.reshape(r, -1)))
            else:
                out.operator = LowRank(flat["b1"], flat["b2"])
        else:
            rel = LowRank(flat["a2"], flat["a1"])
            out.operator = LowRank(flat["b2"], flat["b1"])

        if not _representable(out.operator):
            out.operator = None
            out.findings.append(findings.make(
                "LA209", "GLoRA b1·b2 overflows float64: no spectrum", where))
        rel_sv = np.array([np.nan])
        if _representable(rel):
            with np.errstate(all="ignore"):
                try:
                    (sv,) = singular_values([rel])
                    rel_sv = sv * abs(scale)
                except np.linalg.LinAlgError:
                    pass
        out.extra["relative_singular_values"] = [float(x) if math.isfinite(x) else None for x in rel_sv]
        out.extra["relative_sigma_max"] = (float(rel_sv[0]) if rel_sv.size and math.isfinite(rel_sv[0])
                                           else None)
        return out

    @staticmethod
    def _bad(out: LayerAnalysis, shapes: dict, why: str, where: str) -> LayerAnalysis:
        described = ", ".join(f"{k} {list(v)}" for k, v in shapes.items())
        out.findings.append(findings.make("LA207", f"GLoRA factors {described}: {why}", where))
        out.delta_basis = "none"
        return out


ADAPTER = GLoRAAdapter()
