"""``textual-inversion``: learned token embeddings (``emb_params``, ``string_to_param``, ``clip_l``/``clip_g``,
``bundle_emb.*``), one layer per embedding tensor.

The tensor ``[n_vectors, d]`` (or a single ``[d]`` vector) is the embedding itself: the operator is
``Dense([n_vectors, d])`` and its spectrum describes the stored vectors exactly (``delta_basis`` "exact",
scale 1). ``rank`` is the number of vectors (tokens the embedding occupies) and ``in_features`` is ``d``, the
text-encoder width that identifies the base (768 CLIP-L / SD1, 1024 OpenCLIP-H / SD2, 1280 OpenCLIP-G).
"""

from __future__ import annotations

import math

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.spectra import Dense

KIND = "textual-inversion"
SCALE_RULE = "embedding"


class TextualInversionAdapter:
    kind = KIND
    owns = frozenset({"embedding"})
    detects = frozenset({"embedding"})
    priority = 120

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        where = group.key
        out = LayerAnalysis(kind=KIND, rank=None, alpha=None, scale=1.0, scale_rule=SCALE_RULE,
                            out_features=None, in_features=None, delta_basis="exact")
        name = group.parts.get("embedding")
        if name is None:
            out.findings.append(findings.make("LA206", "embedding layer without its tensor", where))
            out.delta_basis = "none"
            return out
        shape = tuple(int(d) for d in src.shape(name))
        if len(shape) == 1:
            n, d = 1, shape[0]
        elif len(shape) == 2:
            n, d = shape
        else:
            n = d = 0
        if n <= 0 or d <= 0:
            out.findings.append(findings.make(
                "LA207", f"embedding has shape {list(shape)}, expected [n_vectors, dim] or [dim]", where))
            out.delta_basis = "none"
            return out
        out.rank = n
        out.out_features = n
        out.in_features = d
        e = np.asarray(src.array(name), dtype=np.float64).reshape(n, d)
        with np.errstate(all="ignore"):
            norms = np.linalg.norm(e, axis=1)
        out.extra["n_vectors"] = n
        out.extra["dim"] = d
        out.extra["vector_l2"] = [float(x) if math.isfinite(x) else None for x in norms]
        if not np.all(np.isfinite(e)):
            out.unknowable.append("embedding holds NaN/Inf values: no spectrum")
            return out
        with np.errstate(all="ignore"):
            total = float(np.linalg.norm(e.reshape(-1)))
        if not math.isfinite(total):
            out.findings.append(findings.make("LA209", "embedding norm overflows float64: no spectrum", where))
            return out
        out.operator = Dense(np.ascontiguousarray(e))
        return out


ADAPTER = TextualInversionAdapter()
