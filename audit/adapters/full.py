"""``full``: a stored weight difference (LyCORIS "full", ComfyUI ``diff``/``diff_b``).

The file holds ΔW itself: ``diff`` has the shape of the adapted weight (``[out, in]`` for a Linear,
``[out, in, k…]`` for a convolution) and ``diff_b`` the shape of its bias. Loaders add them as they are,
times the user strength: there is no alpha and no factorisation. The operator is therefore the stored
tensor itself, ``Dense(diff as [out, in·∏k])`` (the same flattening every loader uses for a conv kernel), so
its spectrum is the exact spectrum of ΔW. A 1-D ``diff`` (a full delta of a norm or bias-like parameter) is a
vector, not a matrix: it has no spectrum, and its norms go to ``extra``.
"""

from __future__ import annotations

import math

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.spectra import Dense

KIND = "full"
SCALE_RULE = "no-alpha"
MAX_NDIM = 5  # conv3d weights are 5-D


def _shape(src: TensorSource, name: str) -> tuple[int, ...]:
    return tuple(int(d) for d in src.shape(name))


def _finite_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class FullAdapter:
    kind = KIND
    owns = frozenset({"diff", "diff_b"})
    detects = frozenset({"diff", "diff_b"})
    priority = 60

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        where = group.key
        out = LayerAnalysis(kind=KIND, rank=None, alpha=None, scale=1.0, scale_rule=SCALE_RULE,
                            out_features=None, in_features=None, delta_basis="exact")
        diff_name = group.parts.get("diff")
        bias_name = group.parts.get("diff_b")
        if diff_name is None and bias_name is None:
            out.findings.append(findings.make("LA206", "full layer without a diff or diff_b tensor", where))
            out.delta_basis = "none"
            return out

        if diff_name is None:
            out.unknowable.append("only a bias delta (diff_b) is stored: the weight is unchanged")
        else:
            self._weight(diff_name, src, out, where)

        if bias_name is not None:
            self._bias(bias_name, src, out, where)
        return out

    @staticmethod
    def _weight(name: str, src: TensorSource, out: LayerAnalysis, where: str) -> None:
        shape = _shape(src, name)
        if not 1 <= len(shape) <= MAX_NDIM or any(d <= 0 for d in shape):
            out.findings.append(findings.make(
                "LA207", f"diff has shape {list(shape)}: expected a 1- to {MAX_NDIM}-D weight of non-zero size",
                where))
            return
        out.out_features = shape[0]
        a = src.array(name)
        if len(shape) == 1:
            # a vector parameter (norm weight or similar): no matrix, no spectrum
            with np.errstate(all="ignore"):
                out.extra["diff_l2"] = _finite_float(np.linalg.norm(a))
                out.extra["diff_max_abs"] = _finite_float(np.max(np.abs(a)))
            out.unknowable.append("diff is a vector (1-D parameter delta): it has no singular spectrum")
            return
        out.in_features = shape[1]
        out.kernel = tuple(shape[2:])
        if not np.all(np.isfinite(a)):
            out.unknowable.append("diff holds NaN/Inf values: no spectrum")
            return
        with np.errstate(all="ignore"):
            if not np.isfinite(np.linalg.norm(a.reshape(-1))):
                out.findings.append(findings.make("LA209", "‖diff‖ overflows float64: no spectrum", where))
                return
        out.operator = Dense(np.ascontiguousarray(a.reshape(shape[0], -1)))

    @staticmethod
    def _bias(name: str, src: TensorSource, out: LayerAnalysis, where: str) -> None:
        shape = _shape(src, name)
        n = math.prod(shape) if shape else 1
        if len(shape) != 1 or n == 0:
            out.findings.append(findings.make(
                "LA207", f"diff_b has shape {list(shape)}: expected a non-empty vector", where))
        elif out.out_features is not None and shape[0] != out.out_features:
            out.findings.append(findings.make(
                "LA207", f"diff_b has {shape[0]} entries but diff has {out.out_features} outputs", where))
        if out.out_features is None and len(shape) == 1:
            out.out_features = shape[0]
        if n == 0:
            return
        b = src.array(name)
        with np.errstate(all="ignore"):
            out.extra["bias_delta_l2"] = _finite_float(np.linalg.norm(b.reshape(-1)))
            out.extra["bias_delta_max_abs"] = _finite_float(np.max(np.abs(b)))


ADAPTER = FullAdapter()
