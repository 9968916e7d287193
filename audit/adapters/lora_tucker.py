"""LoRA with a Tucker/CP core (LyCORIS ``use_tucker`` / ``use_cp`` on convolutions): kind ``lora-tucker``.

Tensors: ``lora_down [r, in, 1, 1]``, ``lora_mid [r, r, kh, kw]``, ``lora_up [out, r, 1, 1]``, optional 0-d
``alpha`` (scale alpha/r with r = ``lora_down.shape[0]``). LyCORIS ``rebuild_tucker(mid, upᵀ, down)`` gives

    ΔW[o, i, h, w] = Σ_{m,n} mid[m, n, h, w] · up[o, m] · down[n, i].

Flattened to the conv layout ``[out, in·kh·kw]`` this is ΔW = up₂ @ Z with the small matrix

    Z[m, (i, h, w)] = Σ_n mid[m, n, h, w] · down[n, i]          ([r, in·kh·kw])

so the operator is ``LowRank(up₂, Z)``; the dense ΔW is never formed.
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
from audit.spectra import LowRank

ROLES = ("lora_down", "lora_mid", "lora_up")


def tucker_core_times_down(mid: np.ndarray, down2: np.ndarray) -> np.ndarray:
    """Z = Σ_n mid[m, n, k…] · down[n, i], laid out as [m, (i, k…)]."""
    z = np.tensordot(mid, down2, axes=([1], [0]))  # [m, k…, i]
    z = np.moveaxis(z, -1, 1)  # [m, i, k…]
    return z.reshape(z.shape[0], -1)


def analyse(group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
    problems = missing_finding(group, ROLES)
    shp = shapes_of(group, src, ROLES)
    down, mid, up = shp.get("lora_down"), shp.get("lora_mid"), shp.get("lora_up")
    rank = out_f = in_f = None
    kernel: tuple[int, ...] = ()
    for role, s, want in (("lora_down", down, "[r, in(, 1, 1)]"), ("lora_up", up, "[out, r(, 1, 1)]")):
        if s is not None and (len(s) < 2 or not trailing_ones(s)):
            problems.append(findings.make("LA207", f"{role} has shape {list(s)}, expected {want}", group.key))
    if mid is not None and len(mid) < 2:
        problems.append(findings.make("LA207", f"lora_mid has shape {list(mid)}, expected [r, r, kh, kw]",
                                      group.key))
    if down is not None and len(down) >= 2:
        rank, in_f = down[0], down[1]
    if up is not None and len(up) >= 2:
        out_f = up[0]
    if mid is not None and len(mid) >= 2:
        kernel = tuple(mid[2:])
    if not problems:
        if mid[1] != down[0]:
            problems.append(findings.make(
                "LA204", f"lora_mid has inner ranks {list(mid[:2])} but lora_down has rank {down[0]}", group.key))
        if mid[0] != up[1]:
            problems.append(findings.make(
                "LA204", f"lora_mid has inner ranks {list(mid[:2])} but lora_up has rank {up[1]}", group.key))
    problems += zero_sized(shp, group)

    cost = 0
    if mid is not None and down is not None and len(mid) >= 2 and len(down) >= 2:
        cost = mid[0] * down[1] * math.prod(mid[2:])

    def build():
        d = mat(src.array(group.parts["lora_down"]))
        m = src.array(group.parts["lora_mid"])
        u = mat(src.array(group.parts["lora_up"]))
        return LowRank(u, tucker_core_times_down(m, d))

    return assemble("lora-tucker", group, src, ctx, rank=rank, out_features=out_f, in_features=in_f,
                    kernel=kernel, problems=problems, build=build, cost=cost, extra={})


ADAPTER = FactorKind(
    kind="lora-tucker",
    owns=frozenset({"lora_down", "lora_mid", "lora_up", "alpha"}),
    detects=frozenset({"lora_mid"}),
    priority=priority_of("lora_tucker"),
    _analyse=analyse,
)
