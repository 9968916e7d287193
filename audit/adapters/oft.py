"""``oft``: diagonal OFT — a block-diagonal orthogonal rotation of the output rows of the base weight.

Stored: ``oft_blocks [n, b, b]`` (``n·b = out_features``), optional ``rescale [out, 1, …]``, and ``alpha``,
which is **not a scale** but the norm constraint on the rotation generator (0 or absent = none).

Mathematics (LyCORIS ``diag_oft``, ComfyUI ``weight_adapter/oft``, sd-scripts ``networks/oft``):

* ``Q = B − Bᵀ`` per block (skew-symmetric).
* Constraint: with ``‖Q‖`` the Frobenius norm of the *whole* ``[n, b, b]`` tensor (all blocks together), when
  ``‖Q‖ + 1e-8 > c`` the generator becomes ``Q · c / (‖Q‖ + 1e-8)``. The trainers use ``c = alpha ·
  out_features`` (LyCORIS multiplies the stored alpha by ``out_dim`` again when it loads a file; sd-scripts
  clamps at ``alpha · out_dim`` too, "for backward compatibility"), and ``alpha ≤ 0`` means no constraint in
  LyCORIS. ComfyUI compares with ``c = alpha`` itself; where the two rules disagree the ComfyUI variant is
  reported in ``extra["comfyui"]``. (sd-scripts given an explicit ``alpha = 0`` would clamp Q to zero; it
  defaults to 1e-3 when alpha is unset. lora-audit follows LyCORIS: 0 = no constraint.)
* Cayley: ``R = (I + Q)(I − Q)⁻¹``, orthogonal. ``I − Q`` is always invertible for a real skew ``Q``.
* Application: every loader uses ``einsum("k n m, k n ... -> k m ...", R, W_blocks)``, i.e. the block that
  multiplies the ``k``-th group of ``b`` output rows is ``R_kᵀ`` (itself the Cayley transform of ``−Q_k``).
  Then ``rescale`` multiplies the rows: ``W' = diag(s) · blockdiag(R_kᵀ) · W``.

So ``ΔW = (diag(s) · blockdiag(R_kᵀ) − I) · W``. The operator is ``BlockDiag(diag(s_k) R_kᵀ − I)``, the
*relative* operator (``delta_basis`` "relative"): ``‖ΔW‖₂ ≤ σ_max · ‖W‖₂`` and ``‖ΔW‖_F ≤ σ_max · ‖W‖_F``.
Without rescale the singular values of ``R − I`` are ``2|sin(θ/2)|`` for the rotation angles ``θ = 2
arctan(μ)``, ``±iμ`` the eigenvalues of ``Q``; ``extra`` summarises the angles. One SVD of the ``Q`` blocks
gives ``μ``, hence the angles and (without rescale) the operator's spectrum in closed form
(``BlockDiag.values``); with a rescale the blocks of the operator go through their own SVD.

The plain functions (:func:`skew`, :func:`constrain`, :func:`cayley`) and the analysis steps both kinds
share (:func:`start_analysis`, :func:`read_factors`, :func:`rotations`, :func:`overflowed`) serve ``boft`` too.
"""

from __future__ import annotations

import math

import numpy as np

from audit import findings
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext, TensorSource
from audit.adapters.scale import read_alpha
from audit.spectra import BlockDiag

KIND = "oft"
SCALE_RULE = "oft: alpha is a constraint"
NORM_EPS = 1e-8  # the loaders add it to ‖Q‖ before comparing and dividing
CONSTRAINT_RULE = "‖B − Bᵀ‖_F over all blocks rescaled to alpha·out_features when larger (LyCORIS, sd-scripts)"


# ---------------------------------------------------------------------------------------------------------
# plain mathematics


def skew(blocks: np.ndarray) -> np.ndarray:
    """``Q = B − Bᵀ`` over the last two axes."""
    return blocks - np.swapaxes(blocks, -1, -2)


def constrain(q: np.ndarray, threshold: float | None) -> tuple[np.ndarray, float, bool]:
    """``(Q', ‖Q‖_F, applied)``: ``Q`` rescaled to ``threshold`` when ``‖Q‖ + 1e-8`` exceeds it."""
    norm = float(np.linalg.norm(q.reshape(-1)))
    if threshold is not None and threshold > 0 and norm + NORM_EPS > threshold:
        return q * (threshold / (norm + NORM_EPS)), norm, True
    return q, norm, False


def cayley(q: np.ndarray) -> np.ndarray:
    """``R = (I + Q)(I − Q)⁻¹`` for a stack of skew-symmetric ``[…, b, b]`` blocks (= ``(I − Q)⁻¹(I + Q)``)."""
    eye = np.broadcast_to(np.eye(q.shape[-1]), q.shape)
    return np.linalg.solve(eye - q, eye + q)


def generator_moduli(q: np.ndarray) -> np.ndarray:
    """Moduli ``μ ≥ 0`` of the eigenvalues ``±iμ`` of each skew-symmetric block of ``q`` (its singular values),
    ``[…, b]``. Raises ``LinAlgError`` when the SVD does not converge."""
    return np.linalg.svd(q, compute_uv=False)


def cayley_minus_identity_sv(mu: np.ndarray) -> np.ndarray:
    """Singular values of ``R − I`` for the Cayley rotation ``R`` of a skew block with moduli ``μ``: ``R`` is
    orthogonal, so ``R − I`` is normal and its singular values are ``|λ − 1|`` over the eigenvalues
    ``λ = (1 + iμ)/(1 − iμ)`` of ``R``, i.e. ``2μ/√(1 + μ²)`` (= ``2|sin(θ/2)|``, ``θ = 2·arctan(μ)``).
    The same values serve ``R_kᵀ − I``."""
    return 2.0 * mu / np.hypot(1.0, mu)


def rotation_angles(mu: np.ndarray) -> np.ndarray:
    """Rotation angles ``θ = 2·arctan(μ)`` of the Cayley transforms of skew blocks with moduli ``μ``, all
    blocks together."""
    return 2.0 * np.arctan(mu.reshape(-1))


def trainer_threshold(alpha: float | None, out_features: int) -> float | None:
    return alpha * out_features if alpha is not None and alpha > 0 else None


def comfyui_threshold(alpha: float | None) -> float | None:
    return alpha if alpha is not None and alpha > 0 else None


def angle_summary(mu_raw: np.ndarray, factor: float, prefix: str = "") -> dict:
    """Max / mean rotation angle (radians) of generators ``factor · q_raw``, from the moduli ``mu_raw`` of
    ``q_raw`` (``generator_moduli``)."""
    theta = rotation_angles(mu_raw * factor)
    if theta.size == 0 or not np.all(np.isfinite(theta)):
        return {}
    return {f"{prefix}rotation_angle_max": float(theta.max()), f"{prefix}rotation_angle_mean": float(theta.mean())}


def read_rescale(group: LayerGroup, src: TensorSource, out_features: int, out: LayerAnalysis):
    """The ``rescale`` vector ``[out]`` (from ``[out]`` / ``[out, 1, …]``), None when absent; ``False`` when it
    is malformed (a finding has been added)."""
    name = group.parts.get("rescale")
    if name is None:
        return None
    shape = tuple(int(d) for d in src.shape(name))
    if not shape or shape[0] != out_features or math.prod(shape) != out_features:
        out.findings.append(findings.make(
            "LA207", f"rescale has shape {list(shape)}, expected [{out_features}, 1, …] for "
                     f"{out_features} output rows", group.key))
        return False
    s = np.asarray(src.array(name), dtype=np.float64).reshape(-1)
    out.extra["rescale_min"] = float(s.min()) if np.all(np.isfinite(s)) else None
    out.extra["rescale_max"] = float(s.max()) if np.all(np.isfinite(s)) else None
    return s


def constraint_extra(alpha: float | None, out_features: int, q: np.ndarray, mu: np.ndarray, out: LayerAnalysis):
    """Apply the trainer constraint to ``q`` (whose moduli are ``mu``); record both loader conventions in
    ``out.extra``.

    Returns ``(q_constrained, raw_norm, factor)``.
    """
    threshold = trainer_threshold(alpha, out_features)
    qc, norm, applied = constrain(q, threshold)
    factor = threshold / (norm + NORM_EPS) if applied else 1.0
    c_thr = comfyui_threshold(alpha)
    c_applied = c_thr is not None and norm + NORM_EPS > c_thr
    c_factor = c_thr / (norm + NORM_EPS) if c_applied else 1.0
    out.extra.update({
        "constraint_alpha": alpha,
        "constraint": threshold,
        "constraint_rule": CONSTRAINT_RULE,
        "q_norm": norm,
        "constraint_applied": applied,
    })
    comfy = {"constraint": c_thr, "applied": bool(c_applied)}
    if c_factor != factor:
        comfy.update(angle_summary(mu, c_factor))
        comfy["note"] = "ComfyUI clamps ‖Q‖ at alpha, not alpha·out_features: it applies a different rotation"
    out.extra["comfyui"] = comfy
    return qc, norm, factor


def _finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


# ---------------------------------------------------------------------------------------------------------
# analysis steps shared by diag-OFT and BOFT


def start_analysis(kind: str, label: str, rotation: str, group: LayerGroup, src: TensorSource):
    """The analysis both OFT kinds begin with: alpha read (it is the constraint, not a scale), the base-weight
    finding LA208 and note (``label`` names the kind, ``rotation`` the rotation matrix in the texts).

    Returns ``(out, oft_blocks tensor name)``; the name is None when the layer has no ``oft_blocks`` (LA206
    added, ``delta_basis`` "none").
    """
    where = group.key
    alpha, alpha_findings = read_alpha(group, src)
    out = LayerAnalysis(kind=kind, rank=None, alpha=alpha, scale=1.0, scale_rule=SCALE_RULE,
                        out_features=None, in_features=None, delta_basis="relative")
    out.findings.extend(alpha_findings)
    out.findings.append(findings.make(
        "LA208", f"{label} rotates the base weight: ΔW = (R − I)·W needs the base weight", where))
    out.unknowable.append(f"ΔW = ({rotation} − I)·W: its norm and spectrum need the base weight W; "
                          f"the operator is the relative rotation {rotation} − I")
    name = group.parts.get("oft_blocks")
    if name is None:
        out.findings.append(findings.make("LA206", f"{label} layer without oft_blocks", where))
        out.delta_basis = "none"
    return out, name


def read_factors(group: LayerGroup, src: TensorSource, name: str, out_features: int, out: LayerAnalysis):
    """``(blocks, rescale)`` in float64 (``rescale`` None when absent), or None when ``rescale`` is malformed
    (a finding has been added) or a value is NaN/Inf (noted as unknowable)."""
    rescale = read_rescale(group, src, out_features, out)
    blocks = np.asarray(src.array(name), dtype=np.float64)
    if rescale is False:
        return None
    if not _finite(blocks) or (rescale is not None and not _finite(rescale)):
        out.unknowable.append("oft_blocks or rescale hold NaN/Inf values: no spectrum")
        return None
    return blocks, rescale


def overflowed(x: np.ndarray, message: str, out: LayerAnalysis, where: str) -> bool:
    """True, with LA209 (``message``) added, when the Frobenius norm of ``x`` overflows float64."""
    with np.errstate(all="ignore"):
        if math.isfinite(float(np.linalg.norm(x.reshape(-1)))):
            return False
    out.findings.append(findings.make("LA209", message, where))
    return True


def rotations(blocks: np.ndarray, out_features: int, out: LayerAnalysis, where: str):
    """Cayley rotations ``R`` of the constrained generators ``B − Bᵀ`` (same shape as ``blocks``) and the
    moduli ``μ`` of those generators (``[…, b]``, see :func:`cayley_minus_identity_sv`), with the constraint
    and rotation angles recorded in ``out.extra``; None with LA209 added when they are not finite."""
    with np.errstate(all="ignore"):
        q = skew(blocks)
        if overflowed(q, "oft_blocks overflow when forming ‖B − Bᵀ‖", out, where):
            return None
        try:
            mu = generator_moduli(q)
        except np.linalg.LinAlgError:
            mu = np.full(q.shape[:-1], np.nan)
        qc, _, factor = constraint_extra(out.alpha, out_features, q, mu, out)
        out.extra.update(angle_summary(mu, factor))
        try:
            r = cayley(qc)
        except np.linalg.LinAlgError:
            r = np.full_like(qc, np.nan)
    if not _finite(r) or not _finite(mu):
        out.findings.append(findings.make("LA209", "Cayley transform of oft_blocks is not finite", where))
        return None
    return r, mu * factor


# ---------------------------------------------------------------------------------------------------------
# the adapter


class OFTAdapter:
    kind = KIND
    owns = frozenset({"oft_blocks", "rescale", "alpha"})
    detects = frozenset({"oft_blocks"})
    priority = 80

    @staticmethod
    def accepts(roles, shapes) -> bool:
        """Diag-OFT unless ``oft_blocks`` is 4-D (BOFT); malformed ranks are claimed here and reported."""
        shape = shapes.get("oft_blocks")
        return shape is None or len(shape) != 4

    def analyse(self, group: LayerGroup, src: TensorSource, ctx: ScaleContext) -> LayerAnalysis:
        where = group.key
        out, name = start_analysis(KIND, "OFT", "blockdiag(R)", group, src)
        if name is None:
            return out
        shape = tuple(int(d) for d in src.shape(name))
        if len(shape) != 3 or shape[1] != shape[2] or shape[0] <= 0 or shape[1] <= 0:
            out.findings.append(findings.make(
                "LA207", f"oft_blocks has shape {list(shape)}, expected [n_blocks, b, b] with n_blocks, b > 0",
                where))
            out.delta_basis = "none"
            return out
        n, b, _ = shape
        out_features = n * b
        out.out_features = out_features
        out.extra.update({"n_blocks": n, "block_size": b, "applied_block": "R_k transposed (loaders' einsum)"})

        factors = read_factors(group, src, name, out_features, out)
        if factors is None:
            return out
        blocks, rescale = factors
        rot = rotations(blocks, out_features, out, where)
        if rot is None:
            return out
        r, mu = rot
        applied = np.swapaxes(r, -1, -2)  # the block each loader multiplies W's row group by
        if rescale is not None:
            applied = rescale.reshape(n, b, 1) * applied
        rel = applied - np.eye(b)
        if overflowed(rel, "rescale overflows float64: no spectrum", out, where):
            return out
        # without a rescale each block R_kᵀ − I is normal: its singular values are known in closed form
        known = cayley_minus_identity_sv(mu).reshape(-1) if rescale is None else None
        out.operator = BlockDiag(np.ascontiguousarray(rel), values=known)
        return out


ADAPTER = OFTAdapter()
