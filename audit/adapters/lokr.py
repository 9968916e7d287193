"""LoKr (LyCORIS): ΔW = kron(w1, w2), kind ``lokr``.

Left factor w1 ``[a, b]``: stored full (``lokr_w1``) or low-rank (``lokr_w1_a [a, r]`` @ ``lokr_w1_b [r, b]``).
Right factor w2 ``[c, d(, kh, kw)]``: stored full (``lokr_w2``), low-rank (``lokr_w2_a [c, r]`` @
``lokr_w2_b [r, d·kh·kw]`` or ``[r, d, kh, kw]``), or Tucker (``lokr_t2 [r, r, kh, kw]`` with ``lokr_w2_a [r, c]``,
``lokr_w2_b [r, d]``: w2[p, q, h, w] = Σ_{i,j} t2[i, j, h, w]·w2_a[i, p]·w2_b[j, q], LyCORIS ``rebuild_tucker``).

Shapes: out = a·c, in = b·d. For a convolution LyCORIS unsqueezes w1 to ``[a, b, 1, 1]`` and
``torch.kron`` gives ΔW ``[a·c, b·d, kh, kw]`` with ΔW[i·c + p, j·d + q, h, w] = w1[i, j]·w2[p, q, h, w].
Flattened to the conv layout ``[out, in·kh·kw]`` the column index is j·(d·kh·kw) + (q·kh·kw + h·kw + w), so

    ΔW₂ = kron(w1, w2₂)   with w2₂ = w2 reshaped to [c, d·kh·kw].

The operator is ``Kron(left, right)`` with each side ``Dense`` when stored full and ``LowRank`` when decomposed;
its singular values are the pairwise products of the two sides' singular values.

Scale (audit/adapters/scale.py): alpha/r when any factor is decomposed, r = ``lokr_w1_b.shape[0]`` else
``lokr_w2_b.shape[0]``; with both factors stored full the alpha is ignored and the scale is 1 (LyCORIS forces
alpha = lora_dim; ComfyUI and InvokeAI use 1), rule ``lokr-full=>1``.
"""

from __future__ import annotations

import math

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.adapters.lora import (
    FactorKind,
    assemble,
    mat,
    priority_of,
    shapes_of,
    trailing_ones,
    zero_sized,
)
from audit.adapters.lora_tucker import tucker_core_times_down
from audit.spectra import Dense, Kron, LowRank

ROLES = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


def analyse(group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
    shp = shapes_of(group, src, ROLES)
    problems = []

    def bad(msg: str, code: str = "LA207"):
        problems.append(findings.make(code, msg, group.key))

    for r, s in shp.items():
        if len(s) < 2:
            bad(f"{r} has shape {list(s)}, expected at least 2 dims")
    problems += zero_sized(shp, group)
    if problems:
        return assemble("lokr", group, src, ctx, rank=None, out_features=None, in_features=None,
                        problems=problems, build=None)

    # ---- left factor w1 [a, b]
    left = None
    a = b = r1 = None
    if "lokr_w1" in shp:
        s = shp["lokr_w1"]
        if not trailing_ones(s):
            bad(f"lokr_w1 has shape {list(s)}, expected [a, b]")
        else:
            left, (a, b) = "full", s[:2]
    elif "lokr_w1_a" in shp and "lokr_w1_b" in shp:
        sa, sb = shp["lokr_w1_a"], shp["lokr_w1_b"]
        if not (trailing_ones(sa) and trailing_ones(sb)):
            bad(f"lokr_w1_a {list(sa)} / lokr_w1_b {list(sb)}, expected [a, r] / [r, b]")
        elif sa[1] != sb[0]:
            bad(f"lokr_w1_a has rank {sa[1]} but lokr_w1_b has rank {sb[0]}", "LA204")
        else:
            left, a, b, r1 = "low-rank", sa[0], sb[1], sb[0]
    else:
        bad("missing lokr_w1 (or lokr_w1_a + lokr_w1_b)", "LA206")

    # ---- right factor w2 [c, d, *k]
    right = None
    c = d = r2 = None
    cols = None  # d·prod(k), or the flattened count when the kernel is folded
    kernel: tuple[int, ...] = ()
    folded = False
    if "lokr_w2" in shp:
        s = shp["lokr_w2"]
        right, (c, d), kernel = "full", s[:2], tuple(s[2:])
        cols = math.prod(s[1:])
    elif "lokr_t2" in shp:
        if "lokr_w2_a" in shp and "lokr_w2_b" in shp:
            t, sa, sb = shp["lokr_t2"], shp["lokr_w2_a"], shp["lokr_w2_b"]
            if not (trailing_ones(sa) and trailing_ones(sb)):
                bad(f"lokr_w2_a {list(sa)} / lokr_w2_b {list(sb)}, expected [r, c] / [r, d] in the Tucker form")
            elif t[0] != sa[0] or t[1] != sb[0]:
                bad(f"lokr_t2 has inner ranks {list(t[:2])} but lokr_w2_a / lokr_w2_b have ranks "
                    f"{sa[0]} / {sb[0]}", "LA204")
            else:
                right, c, d, r2, kernel = "tucker", sa[1], sb[1], sb[0], tuple(t[2:])
                cols = d * math.prod(kernel)
        else:
            bad("missing " + ", ".join(r for r in ("lokr_w2_a", "lokr_w2_b") if r not in shp), "LA206")
    elif "lokr_w2_a" in shp and "lokr_w2_b" in shp:
        sa, sb = shp["lokr_w2_a"], shp["lokr_w2_b"]
        if not trailing_ones(sa):
            bad(f"lokr_w2_a has shape {list(sa)}, expected [c, r]")
        elif sa[1] != sb[0]:
            bad(f"lokr_w2_a has rank {sa[1]} but lokr_w2_b has rank {sb[0]}", "LA204")
        else:
            right, c, d, r2 = "low-rank", sa[0], sb[1], sb[0]
            kernel = tuple(sb[2:])
            folded = len(sb) == 2
            cols = math.prod(sb[1:])
    else:
        bad("missing lokr_w2 (or lokr_w2_a + lokr_w2_b)", "LA206")

    rank = r1 if r1 is not None else r2
    decomposed = left == "low-rank" or right in ("low-rank", "tucker")
    extra: dict = {"w1": left, "w2": right}
    out_f = in_f = None
    cost = 0
    if left is not None and right is not None:
        out_f, in_f = a * c, b * d
        extra["w1_shape"] = [int(a), int(b)]
        extra["w2_shape"] = [int(c), int(d), *(int(k) for k in kernel)]
        if folded:
            extra["in_includes_kernel"] = True  # w2_b [r, d·kh·kw]: the kernel cannot be told from the file
        bound_l = min(a, b) if r1 is None else min(a, b, r1)
        bound_r = min(c, cols) if r2 is None else min(c, cols, r2)
        extra["rank_bound"] = int(bound_l * bound_r)
        if r1 is not None and r2 is not None and r1 != r2:
            extra["rank_w1"], extra["rank_w2"] = int(r1), int(r2)
        if right == "tucker":
            cost = r2 * cols

    def build():
        p = group.parts
        if left == "full":
            L = Dense(mat(src.array(p["lokr_w1"])))
        else:
            L = LowRank(mat(src.array(p["lokr_w1_a"])), mat(src.array(p["lokr_w1_b"])))
        if right == "full":
            R = Dense(mat(src.array(p["lokr_w2"])))
        elif right == "tucker":
            R = LowRank(mat(src.array(p["lokr_w2_a"])).T,
                        tucker_core_times_down(src.array(p["lokr_t2"]), mat(src.array(p["lokr_w2_b"]))))
        else:
            R = LowRank(mat(src.array(p["lokr_w2_a"])), mat(src.array(p["lokr_w2_b"])))
        return Kron(L, R)

    return assemble("lokr", group, src, ctx, rank=rank, out_features=out_f, in_features=in_f, kernel=kernel,
                    problems=problems, build=build, cost=cost, extra=extra, factors_decomposed=decomposed)


ADAPTER = FactorKind(
    kind="lokr",
    owns=frozenset(ROLES + ("alpha",)),
    detects=frozenset(ROLES),
    priority=priority_of("lokr"),
    _analyse=analyse,
)
