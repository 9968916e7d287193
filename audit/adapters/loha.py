"""LoHa (LyCORIS, FedPara): ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b), kind ``loha``.

Plain form: ``hada_w1_a [out, r1]``, ``hada_w1_b [r1, in(·k…)]`` (or ``[r1, in, kh, kw]``), the same for
``w2`` with rank r2; optional 0-d ``alpha``, scale alpha/r with r = ``hada_w1_b.shape[0]`` (kohya/LyCORIS).

Tucker form (convolutions): ``hada_t1``/``hada_t2 [r, r, kh, kw]``, ``hada_w*_a [r, out]``, ``hada_w*_b [r, in]``;
each factor is Σ_{i,j} t[i, j, h, w]·a[i, o]·b[j, c] (LyCORIS ``HadaWeightTucker``), i.e. as a matrix in the conv
layout ``[out, in·kh·kw]`` it is aᵀ @ Z with Z[i, (c, h, w)] = Σ_j t[i, j, h, w]·b[j, c].

Either way each Hadamard factor is a product A_k @ B_k, and the face-splitting identity gives the exact
factorisation ΔW = U @ V of inner size r1·r2:

    U[o, (a, b)] = A1[o, a] · A2[o, b]     (row-wise Khatri–Rao,    [out, r1·r2])
    V[(a, b), i] = B1[a, i] · B2[b, i]     (column-wise Khatri–Rao, [r1·r2, in·k…])

so the operator is ``LowRank(U, V)`` and the effective rank is at most r1·r2 (reported in ``extra``).
"""

from __future__ import annotations

import math

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.adapters.lora import (
    FactorKind,
    assemble,
    mat,
    missing_finding,
    priority_of,
    shapes_of,
    trailing_ones,
    zero_sized,
)
from audit.adapters.lora_tucker import tucker_core_times_down
from audit.spectra import LowRank

PLAIN = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
TUCKER = ("hada_t1", "hada_t2")


def face_split(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> LowRank:
    """(a1 @ b1) ⊙ (a2 @ b2) as LowRank(U, V) with U the row-wise and V the column-wise Khatri–Rao product."""
    m, r1 = a1.shape
    r2 = a2.shape[1]
    n = b1.shape[1]
    U = (a1[:, :, None] * a2[:, None, :]).reshape(m, r1 * r2)
    V = (b1[:, None, :] * b2[None, :, :]).reshape(r1 * r2, n)
    return LowRank(U, V)


def analyse(group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
    tucker = any(r in group.parts for r in TUCKER)
    roles = PLAIN + TUCKER if tucker else PLAIN
    problems = missing_finding(group, roles)
    shp = shapes_of(group, src, roles)
    for r, s in shp.items():
        if len(s) < 2:
            problems.append(findings.make("LA207", f"{r} has shape {list(s)}, expected at least 2 dims", group.key))
    problems += zero_sized(shp, group)
    rank = out_f = in_f = None
    kernel: tuple[int, ...] = ()
    extra: dict = {"tucker": tucker}
    inner = None  # (rows of A1/A2 factor = inner sizes) for the Khatri–Rao
    n_cols = None

    def bad(msg: str, code: str = "LA207"):
        problems.append(findings.make(code, msg, group.key))

    if not problems and not tucker:
        w1a, w1b, w2a, w2b = (shp[r] for r in PLAIN)
        for r in ("hada_w1_a", "hada_w2_a"):
            if not trailing_ones(shp[r]):
                bad(f"{r} has shape {list(shp[r])}, expected [out, r]")
        if not problems:
            if w1a[1] != w1b[0]:
                bad(f"hada_w1_a has rank {w1a[1]} but hada_w1_b has rank {w1b[0]}", "LA204")
            if w2a[1] != w2b[0]:
                bad(f"hada_w2_a has rank {w2a[1]} but hada_w2_b has rank {w2b[0]}", "LA204")
            if w1a[0] != w2a[0]:
                bad(f"hada_w1_a and hada_w2_a disagree on out ({w1a[0]} vs {w2a[0]})")
            if math.prod(w1b[1:]) != math.prod(w2b[1:]) or (len(w1b) > 2 and len(w2b) > 2 and w1b[1:] != w2b[1:]):
                bad(f"hada_w1_b {list(w1b)} and hada_w2_b {list(w2b)} disagree on in")
        if not problems:
            rank, out_f = w1b[0], w1a[0]
            in_f = w1b[1]
            kernel = tuple(w1b[2:]) if len(w1b) > 2 else tuple(w2b[2:])
            if len(w1b) == 2 and len(w2b) > 2:
                in_f = w2b[1]
            if len(w1b) == 2 and len(w2b) == 2:
                extra["in_includes_kernel"] = True  # conv kernel folded into in, shape cannot tell
            inner = (w1a[1], w2a[1])
            n_cols = math.prod(w1b[1:])
    elif not problems and tucker:
        w1a, w1b, w2a, w2b = (shp[r] for r in PLAIN)
        t1, t2 = shp["hada_t1"], shp["hada_t2"]
        for r in PLAIN:
            if len(shp[r]) != 2 and not trailing_ones(shp[r]):
                bad(f"{r} has shape {list(shp[r])}, expected [r, out] or [r, in] in the Tucker form")
        if not problems:
            for k, t, a, b in ((1, t1, w1a, w1b), (2, t2, w2a, w2b)):
                if t[0] != a[0] or t[1] != b[0]:
                    bad(f"hada_t{k} has inner ranks {list(t[:2])} but hada_w{k}_a / hada_w{k}_b have ranks "
                        f"{a[0]} / {b[0]}", "LA204")
            if w1a[1] != w2a[1]:
                bad(f"hada_w1_a and hada_w2_a disagree on out ({w1a[1]} vs {w2a[1]})")
            if w1b[1] != w2b[1]:
                bad(f"hada_w1_b and hada_w2_b disagree on in ({w1b[1]} vs {w2b[1]})")
            if t1[2:] != t2[2:]:
                bad(f"hada_t1 {list(t1)} and hada_t2 {list(t2)} disagree on the kernel")
        if not problems:
            rank, out_f, in_f = w1b[0], w1a[1], w1b[1]
            kernel = tuple(t1[2:])
            inner = (w1a[0], w2a[0])
            n_cols = w1b[1] * math.prod(kernel)

    if rank is None and len(shp.get("hada_w1_b", ())) >= 1:
        rank = shp["hada_w1_b"][0]  # reported even when the layer is broken

    cost = 0
    if inner is not None:
        extra["r1"], extra["r2"] = int(inner[0]), int(inner[1])
        extra["rank_bound"] = int(inner[0] * inner[1])
        cost = (out_f + n_cols) * inner[0] * inner[1]

    def build():
        if tucker:
            a1 = mat(src.array(group.parts["hada_w1_a"])).T
            a2 = mat(src.array(group.parts["hada_w2_a"])).T
            b1 = tucker_core_times_down(src.array(group.parts["hada_t1"]), mat(src.array(group.parts["hada_w1_b"])))
            b2 = tucker_core_times_down(src.array(group.parts["hada_t2"]), mat(src.array(group.parts["hada_w2_b"])))
        else:
            a1 = mat(src.array(group.parts["hada_w1_a"]))
            a2 = mat(src.array(group.parts["hada_w2_a"]))
            b1 = mat(src.array(group.parts["hada_w1_b"]))
            b2 = mat(src.array(group.parts["hada_w2_b"]))
        return face_split(a1, b1, a2, b2)

    return assemble("loha", group, src, ctx, rank=rank, out_features=out_f, in_features=in_f, kernel=kernel,
                    problems=problems, build=build, cost=cost, extra=extra)


ADAPTER = FactorKind(
    kind="loha",
    owns=frozenset(PLAIN + TUCKER + ("alpha",)),
    detects=frozenset(PLAIN + TUCKER),
    priority=priority_of("loha"),
    _analyse=analyse,
)
