"""``boft``: butterfly OFT — a product of ``m`` permuted block-diagonal rotations of the output rows.

Stored: ``oft_blocks [m, n, b, b]`` (``m`` butterfly stages, ``n·b = out_features``), optional ``rescale``
and ``alpha`` (the norm constraint, exactly as in diag-OFT: see ``audit.adapters.oft``; the norm is taken over
the whole 4-D tensor, all stages together).

Butterfly convention (LyCORIS ``functional/boft.py``, ComfyUI ``weight_adapter/boft.py``), on the output axis
of ``W``: for stage ``i`` let ``K = 2^i · (b // 2)``. Write an output index as ``o = c·2K + g·K + κ`` with
``g ∈ {0, 1}``, ``κ < K``; the permutation ``P_i`` moves row ``o`` to position ``p = c·2K + κ·2 + g`` (the
``(c g k) -> (c k g)`` regrouping), the permuted rows are cut into ``n`` consecutive groups of ``b``, group
``d`` is multiplied by ``R_{i,d}`` itself (``einsum("b i j, b j ... -> b i ...")``, not transposed as in
diag-OFT), and the inverse permutation restores the order:

    S_i = P_iᵀ · blockdiag(R_{i,0}, …, R_{i,n−1}) · P_i,     W' = diag(s) · S_{m−1} ⋯ S_1 S_0 · W.

``R_total = S_{m−1} ⋯ S_0`` is orthogonal. Stage ``i`` mixes rows only inside chunks of ``2^i·b``, so with
fewer stages than a full butterfly ``R_total`` is block-diagonal (blocks of ``2^(m−1)·b`` rows) and the
operator is ``BlockDiag`` of those blocks minus I; a full butterfly gives a dense ``out × out`` matrix:
``Dense(diag(s)·R_total − I)``, or ``RotationMinusI(R_total)`` without a rescale (R_total − I is then normal and
its spectrum comes from a symmetric eigenproblem). The product is built chunk by chunk
(:func:`butterfly_blocks`, about ``2·out·c·b`` flops for blocks of ``c`` rows, ``8·out·c`` bytes). It is the *relative* operator (``delta_basis`` "relative":
``ΔW = operator · W``). Above ``DENSE_LIMIT`` output rows it is not built; ``extra["sigma_max_bound"]`` then
bounds it through ``‖R_total − I‖₂ ≤ min(2, Σ_i ‖S_i − I‖₂)``.
"""

from __future__ import annotations

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.adapters.oft import (
    SCALE_RULE,  # noqa: F401  (the same rule as diag-OFT, kept as this module's SCALE_RULE)
    cayley_minus_identity_sv,
    overflowed,
    read_factors,
    rotations,
    start_analysis,
)
from audit.spectra import BlockDiag, Dense, RotationMinusI

KIND = "boft"
DENSE_LIMIT = 4096  # out_features above which the dense out×out operator is not built (8·out² bytes)


def stage_spans(m: int, b: int) -> list[int]:
    return [(2**i) * (b // 2) for i in range(m)]


def butterfly_blocks(r: np.ndarray) -> np.ndarray:
    """The diagonal blocks ``[size/c, c, c]`` of ``R_total = S_{m−1} ⋯ S_0`` for stage rotations
    ``r [m, n, b, b]``: ``c = 2^(m−1)·b`` rows, the most the ``m`` stages can mix (one block, ``c = n·b``, when
    the butterfly is full; an odd ``b`` gives one dense block).

    Stage ``i`` only mixes rows inside chunks of ``2^i·b``, so the partial product after stage ``i`` is
    block-diagonal with blocks of that size: each stage is applied chunk by chunk (the row permutation is the
    same inside every chunk), about ``2·size·c·b`` flops in all instead of ``m·size²·b`` for a dense product.
    """
    m, n, b, _ = r.shape
    size = n * b
    if b % 2:  # an odd block straddles the pairing chunks: one dense chunk throughout
        total = np.eye(size)[None]
    else:
        total = np.broadcast_to(np.eye(b), (n, b, b)).copy()  # the identity, in chunks of b
    for i, span in enumerate(stage_spans(m, b)):
        chunk = 2 * span if b % 2 == 0 else size
        if chunk > total.shape[-1]:  # the chunks double: pair up the blocks, zeros between them
            grown = np.zeros((size // chunk, chunk, chunk))
            half = total.shape[-1]
            grown[:, :half, :half] = total[0::2]
            grown[:, half:, half:] = total[1::2]
            total = grown
        # the stage's row permutation inside one chunk ((c g k) -> (c k g), the same in every chunk)
        local = np.arange(chunk).reshape(-1, 2, span).transpose(0, 2, 1).reshape(-1)
        per = chunk // b  # rotation blocks per chunk
        mixed = np.matmul(r[i].reshape(size // chunk, per, b, b), total[:, local].reshape(size // chunk, per, b, chunk))
        total = np.empty_like(total)
        total[:, local] = mixed.reshape(size // chunk, chunk, chunk)
    return total


class BOFTAdapter:
    kind = KIND
    owns = frozenset({"oft_blocks", "rescale", "alpha"})
    detects = frozenset({"oft_blocks"})
    priority = 90

    @staticmethod
    def accepts(roles, shapes) -> bool:
        shape = shapes.get("oft_blocks")
        return shape is not None and len(shape) == 4

    @staticmethod
    def working_bytes(shapes) -> int:
        """The dense out×out R_total (float64) and its Gram copy, for the pipeline's chunk budget."""
        shape = shapes.get("oft_blocks")
        if shape is None or len(shape) != 4:
            return 0
        size = min(int(shape[1]) * int(shape[2]), DENSE_LIMIT)
        return 2 * size * size * 8

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        where = group.key
        out, name = start_analysis(KIND, "BOFT", "R_total", group, src)
        if name is None:
            return out
        shape = tuple(int(d) for d in src.shape(name))
        bad = None
        if len(shape) != 4 or shape[2] != shape[3] or min(shape) <= 0:
            bad = "expected [m, n_blocks, b, b] with every size > 0"
        else:
            m, n, b, _ = shape
            size = n * b
            if b < 2:
                bad = "block size must be at least 2 for the butterfly pairing"
            elif any(size % (2 * k) for k in stage_spans(m, b)):
                bad = f"{size} output rows cannot be paired by {m} butterfly stages of block size {b}"
        if bad:
            out.findings.append(findings.make("LA207", f"oft_blocks has shape {list(shape)}: {bad}", where))
            out.delta_basis = "none"
            return out
        out.out_features = size
        out.extra.update({"stages": m, "n_blocks": n, "block_size": b,
                          "operator_cost": f"dense {size}x{size} (relative operator R_total − I)"})

        factors = read_factors(group, src, name, size, out)
        if factors is None:
            return out
        blocks, rescale = factors
        rot = rotations(blocks, size, out, where)
        if rot is None:
            return out
        r, mu = rot

        # per-stage ‖S_i − I‖₂ = max over blocks of σ_max(R_{i,d} − I) (a permutation does not change it),
        # in closed form from the generators' moduli
        stage = cayley_minus_identity_sv(mu).max(axis=(1, 2))
        out.extra["stage_sigma_max"] = [float(x) for x in stage]
        s_max = float(np.abs(rescale).max()) if rescale is not None else 1.0
        s_dev = float(np.abs(rescale - 1.0).max()) if rescale is not None else 0.0
        # ‖diag(s)R − I‖ ≤ max|s|·‖R − I‖ + max|s − 1|
        out.extra["sigma_max_bound"] = s_max * min(2.0, float(stage.sum())) + s_dev

        if size > DENSE_LIMIT:
            out.unknowable.append(
                f"spectrum not computed: the dense {size}x{size} relative operator exceeds the "
                f"{DENSE_LIMIT} row limit (extra.sigma_max_bound bounds it)")
            return out
        blocks = butterfly_blocks(r)  # the diagonal blocks of R_total (one when the butterfly is full)
        chunk = blocks.shape[-1]
        if rescale is not None:
            blocks = rescale.reshape(-1, chunk, 1) * blocks
        if chunk < size:  # m stages mix rows only within chunks: diag(s)·R_total is block-diagonal
            blocks[:, np.arange(chunk), np.arange(chunk)] -= 1.0
            if overflowed(blocks, "rescale overflows float64: no spectrum", out, where):
                return out
            out.extra["operator_cost"] = f"{size // chunk} blocks of {chunk}x{chunk} (relative operator R_total − I)"
            out.operator = BlockDiag(blocks)
            return out
        total = blocks[0]
        if rescale is None or bool(np.all(rescale == 1.0)):
            out.operator = RotationMinusI(total)  # R_total is orthogonal: a symmetric eigenproblem suffices
            return out
        total[np.diag_indices(size)] -= 1.0
        if overflowed(total, "rescale overflows float64: no spectrum", out, where):
            return out
        out.operator = Dense(total)
        return out


ADAPTER = BOFTAdapter()
