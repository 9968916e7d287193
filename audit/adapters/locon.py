"""LoCon: LoRA on a convolution with a spatial kernel (kohya ``conv_dim``, LyCORIS ``locon``).

Tensors: ``lora_down [r, in, kh, kw]`` (a conv with the layer's kernel), ``lora_up [out, r, 1, 1]``, optional
0-d ``alpha``. The conv weight layout is ``[out, in, kh, kw]``; flattened to ``[out, in·kh·kw]`` the delta is
ΔW = up₂ @ down₂ with up₂ = up ``[out, r]`` and down₂ = down ``[r, in·kh·kw]``, so the operator is
``LowRank(up₂, down₂)`` and ``kernel = (kh, kw)``. Conv1d/conv3d downs (``[r, in, k…]``) work the same way.

The analysis is shared with ``lora`` (audit/adapters/lora.py): the kind is decided by the kernel alone, and a
1×1 kernel is ``lora``.
"""

from __future__ import annotations

import math

from audit.adapters.lora import FactorKind, analyse_updown, priority_of


def _accepts(roles: set, shapes: dict) -> bool:
    """Only downs with a spatial kernel larger than 1×1 (and no Tucker core) are LoCon."""
    if "lora_mid" in roles:
        return False
    down = shapes.get("lora_down")
    return down is not None and len(down) > 2 and math.prod(down[2:]) > 1


ADAPTER = FactorKind(
    kind="locon",
    owns=frozenset({"lora_down", "lora_up", "alpha", "lora_up_bias"}),
    detects=frozenset({"lora_down", "lora_up"}),
    priority=priority_of("locon"),
    _analyse=analyse_updown,
    _accepts=_accepts,
)
