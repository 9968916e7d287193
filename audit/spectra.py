"""Exact singular spectra of structured operators, batched, written once against the array API.

Adapters describe a layer's weight delta as a structured operator built from the file's factors; this module
turns operators into singular values without ever forming the dense delta:

* ``LowRank(U, V)``  M = U @ V (U [m,k], V [k,n]): reduced QR of U and of Vᵀ, then the SVD of the small core
  R_U @ R_Vᵀ. Exact: M = Q_U (R_U R_Vᵀ) Q_Vᵀ with orthonormal Q's. On the CPU, members whose
  ‖U‖‖V‖/σ_min(M) is provably at most ``CHOLESKY_MAX_COND`` take the R's from Cholesky factors of the Gram
  matrices and σ² from the eigenvalues of core·coreᵀ (see ``_lowrank_gram``).
* ``Kron(P, Q)``     M = P ⊗ Q: the singular values are all products σ_i(P)·σ_j(Q).
* ``Dense(M)``       a matrix stored as such (full/diff deltas, embeddings): its singular values, from the
  eigenvalues of its Gram matrix when it is well conditioned (see ``_dense_svdvals``), else from an SVD.
* ``BlockDiag(B)``   M = blockdiag(B[0], ..., B[n-1]): the union of the blocks' singular values (or the
  ``values`` the adapter derived in closed form, e.g. a Cayley rotation minus I: see adapters.oft).
* ``RotationMinusI(R)`` M = R − I for an orthogonal R (BOFT): M is normal, so its singular values are
  |λ − 1| over the eigenvalues λ = e^{±iθ} of R, i.e. σ² = 2 − 2cos θ, the eigenvalues of the symmetric
  MᵀM = 2I − R − Rᵀ: one symmetric eigenvalue problem (about 2.5× cheaper than an SVD of M). Forming
  2I − R − Rᵀ costs an absolute error of about ε in σ², so σ keeps a relative accuracy of ε/σ²: 1e-8 for
  σ = 1e-4, while rotations trained in practice are far larger.

Operators of the same type and shapes are stacked and handled in one batched call. The namespace is numpy on
the CPU (float64) and torch on a GPU (float32 by default); torch is imported only when a GPU is asked for.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Union

import numpy as np


@dataclass
class LowRank:
    U: np.ndarray  # [m, k]
    V: np.ndarray  # [k, n]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.U.shape[0], self.V.shape[1])


@dataclass
class Dense:
    M: np.ndarray  # [m, n]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.M.shape)


@dataclass
class BlockDiag:
    blocks: np.ndarray  # [n_blocks, b, b]
    values: np.ndarray | None = None  # the singular values when known in closed form (no SVD needed)

    @property
    def shape(self) -> tuple[int, int]:
        n, r, c = self.blocks.shape
        return (n * r, n * c)


@dataclass
class Kron:
    left: "Operator"
    right: "Operator"

    @property
    def shape(self) -> tuple[int, int]:
        (a, b), (c, d) = self.left.shape, self.right.shape
        return (a * c, b * d)


@dataclass
class RotationMinusI:
    R: np.ndarray  # [n, n], orthogonal

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.R.shape)


Operator = Union[LowRank, Dense, BlockDiag, Kron, RotationMinusI]

# Cholesky QR is used only for factors at least this well conditioned: eps·κ² ≤ 1e-8 (see Backend.qr_r)
CHOLESKY_MAX_COND = 1e4


# ---------------------------------------------------------------------------------------------------------
# backends


class Backend:
    """An array namespace plus the transfers to and from host numpy."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        if device == "cpu":
            # numpy >= 2 implements the array API standard in its main namespace; wrapping it in
            # array_api_compat.numpy would cost 0.15 s of imports on every CPU run for nothing
            xp = np
            self.xp = xp
            self.dtype = xp.float64
            self.name = f"numpy {np.__version__} float64"
        else:
            import array_api_compat.torch as xp
            import torch

            self._torch = torch
            self.xp = xp
            self.dtype = xp.float64 if device == "cpu-torch" else xp.float32
            self._dev = "cpu" if device == "cpu-torch" else device
            self.name = f"torch {torch.__version__} {self._dev} {str(self.dtype).replace('torch.', '')}"

    def qr_r(self, factors: list[np.ndarray], *, of_transpose: bool = False) -> Any:
        """R factors of the reduced QR of each same-shaped host array (or of its transpose), batched.

        On the CPU, tall factors go through Cholesky QR: R = chol(AᵀA)ᵀ — one BLAS-3 Gram product per
        factor, straight from the decoded array with no batch copy, and a batched k×k Cholesky — instead of
        k Householder sweeps (about ten times faster on adapter factors). Cholesky QR's R carries a relative
        perturbation of order eps·κ(A)², so every factor whose condition number (from the eigenvalues of its
        k×k Gram matrix) exceeds ``CHOLESKY_MAX_COND``, and every factor whose Gram matrix is not numerically
        positive definite (rank-deficient or zero factors), is recomputed with Householder QR. The singular
        values that follow are accurate to a relative 1e-8 or better. A factor with NaN/Inf entries gets a
        NaN R. On a GPU, Householder QR (``mode="r"``) is used throughout.
        """
        if self.device != "cpu":
            a = self.put(np.stack(factors))
            return self._torch.linalg.qr(a.mT if of_transpose else a, mode="r").R

        def householder(x: np.ndarray) -> np.ndarray:
            return np.linalg.qr(x.T if of_transpose else x, mode="r")

        k = factors[0].shape[0] if of_transpose else factors[0].shape[1]
        m = factors[0].shape[1] if of_transpose else factors[0].shape[0]
        if m < k:
            return np.stack([householder(f) for f in factors])
        with np.errstate(all="ignore"):
            gram = np.stack([f @ f.T if of_transpose else f.T @ f for f in factors])
        finite = np.isfinite(gram).all(axis=(-2, -1))
        r = np.full((len(factors), k, k), np.nan)
        good = np.flatnonzero(finite)
        if good.size:
            g = gram[good]
            lam = np.linalg.eigvalsh(g)  # ascending; κ(A)² = λmax / λmin
            with np.errstate(divide="ignore", invalid="ignore"):
                ok = (lam[:, 0] > 0) & (lam[:, -1] <= CHOLESKY_MAX_COND**2 * lam[:, 0])
            chol = good[ok]
            if chol.size:
                try:
                    r[chol] = np.swapaxes(np.linalg.cholesky(gram[chol]), -1, -2)
                except np.linalg.LinAlgError:  # borderline definiteness: leave these to Householder
                    ok[:] = False
            for j in good[~ok]:
                r[j] = householder(factors[j])
        return r

    def put(self, a: np.ndarray) -> Any:
        if self.device == "cpu":
            return np.ascontiguousarray(a, dtype=np.float64)
        t = self._torch.from_numpy(np.ascontiguousarray(a))
        return t.to(device=self._dev, dtype=self.dtype)

    def get(self, a: Any) -> np.ndarray:
        if self.device == "cpu":
            return np.asarray(a, dtype=np.float64)
        return a.detach().to("cpu", dtype=self._torch.float64).numpy()


def resolve_device(device: str = "auto") -> str:
    """``auto`` uses CUDA only when torch is already importable *and* a GPU is present.

    Checking for a GPU costs a torch import, so ``auto`` first looks for an NVIDIA device node and only then
    imports torch; a CPU-only machine never pays for the import.
    """
    if device in ("cpu", "cpu-torch"):
        return device
    if device == "auto":
        import os

        if not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl")):
            return "cpu"
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError("--device cuda needs torch installed (pip install 'lora-audit[gpu]')") from exc
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is available")
        return device
    raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")


# ---------------------------------------------------------------------------------------------------------
# the engine


def singular_values(ops: list[Operator], backend: Backend | None = None) -> list[np.ndarray]:
    """Descending singular values (host float64) of each operator, computed in shape-batched calls."""
    backend = backend or Backend("cpu")
    out: list[np.ndarray | None] = [None] * len(ops)

    # Kron is resolved after its children; collect the leaves first. (A plain loop, not a recursive closure:
    # a closure that refers to itself is a reference cycle that would keep every operator's arrays alive
    # until the cyclic garbage collector happens to run.)
    leaves: list[tuple[int, Operator]] = []
    kron_parts: dict[int, tuple[int, int]] = {}
    flat: list[Operator] = []
    roots = [_flatten(op, flat, leaves, kron_parts) for op in ops]
    values: dict[int, np.ndarray] = {}

    groups: dict[tuple, list[tuple[int, Operator]]] = defaultdict(list)
    for i, op in leaves:
        if isinstance(op, BlockDiag) and op.values is not None:
            v = np.asarray(op.values, dtype=np.float64).reshape(-1)
            values[i] = np.sort(v)[::-1] if np.isfinite(v).all() else np.full(v.size, np.nan)
        elif isinstance(op, LowRank):
            groups[("lr", op.U.shape, op.V.shape)].append((i, op))
        elif isinstance(op, Dense):
            groups[("dense", op.M.shape)].append((i, op))
        elif isinstance(op, BlockDiag):
            groups[("bd", op.blocks.shape[1:])].append((i, op))
        elif isinstance(op, RotationMinusI):
            groups[("rot", op.R.shape)].append((i, op))
        else:
            raise TypeError(f"not a spectra operator: {type(op).__name__}")

    for key, members in groups.items():
        try:
            with np.errstate(all="ignore"):
                _solve_group(key[0], members, values, backend)
        except Exception:  # LAPACK failure on a pathological batch: retry member by member
            if len(members) == 1:
                values[members[0][0]] = np.full(min(members[0][1].shape), np.nan)
                continue
            for member in members:
                try:
                    with np.errstate(all="ignore"):
                        _solve_group(key[0], [member], values, backend)
                except Exception:
                    values[member[0]] = np.full(min(member[1].shape), np.nan)

    for i in sorted(kron_parts, reverse=True):  # children always have larger indices than their parent
        a, b = kron_parts[i]
        values[i] = np.sort(np.outer(values[a], values[b]).ravel())[::-1]

    for r, i in enumerate(roots):
        v = values[i]
        out[r] = v if np.isnan(v).any() else np.clip(v, 0.0, None)
    return out  # type: ignore[return-value]


def _flatten(op: Operator, flat: list, leaves: list, kron_parts: dict) -> int:
    """Index ``op`` and its Kron children into ``flat``; children always get larger indices than parents."""
    root = len(flat)
    todo = [(op, None, 0)]  # (operator, parent index, which child)
    while todo:
        node, parent, side = todo.pop()
        i = len(flat)
        flat.append(node)
        if parent is not None:
            a, b = kron_parts[parent]
            kron_parts[parent] = (i, b) if side == 0 else (a, i)
        if isinstance(node, Kron):
            kron_parts[i] = (-1, -1)
            todo.append((node.right, i, 1))
            todo.append((node.left, i, 0))
        else:
            leaves.append((i, node))
    return root


def _finite(op: Operator) -> bool:
    arrays = ((op.U, op.V) if isinstance(op, LowRank) else (op.M,) if isinstance(op, Dense)
              else (op.R,) if isinstance(op, RotationMinusI) else (op.blocks,))
    # a sum is finite only when every entry is (an overflowing sum of finite values is caught as well,
    # which is right: LAPACK would overflow on such a matrix too); far cheaper than an isfinite mask
    with np.errstate(all="ignore"):
        return all(np.isfinite(a.sum()) for a in arrays)


STACK_BYTES = 64 * 2**20  # largest stack of dense operators handed to one batched SVD / eigenvalue call


def batches(items, size_of, limit: int):
    """Consecutive runs of ``items`` whose ``size_of`` sum stays within ``limit`` (an item larger than the
    limit makes a run of its own)."""
    batch, size = [], 0
    for m in items:
        b = size_of(m)
        if batch and size + b > limit:
            yield batch
            batch, size = [], 0
        batch.append(m)
        size += b
    if batch:
        yield batch


def _dense_svdvals(M: np.ndarray, backend: Backend) -> np.ndarray:
    """Descending singular values of a stack of dense matrices ``M [b, m, n]``.

    On the CPU they come from the eigenvalues of the Gram matrix of the smaller side (one BLAS-3 product and a
    symmetric eigenproblem: 1.2-5x cheaper than an SVD on adapter shapes), exact for every matrix whose
    condition number is at most ``CHOLESKY_MAX_COND``: squaring the matrix perturbs σ² by about eps·σ_max², so
    σ keeps a relative accuracy of eps·κ²/2 ≤ 1e-8, the bound ``Backend.qr_r`` keeps for low-rank factors.
    Worse-conditioned and rank-deficient matrices go through the SVD. A GPU always uses the SVD.
    """
    xp = backend.xp
    if backend.device != "cpu":
        return backend.get(xp.linalg.svdvals(backend.put(M)))
    m, n = M.shape[-2:]
    gram = np.matmul(np.swapaxes(M, -1, -2), M) if m >= n else np.matmul(M, np.swapaxes(M, -1, -2))
    lam = np.linalg.eigvalsh(gram)  # ascending
    ok = (lam[:, 0] > 0) & (lam[:, -1] <= CHOLESKY_MAX_COND**2 * lam[:, 0])
    sv = np.sqrt(np.clip(lam[:, ::-1], 0.0, None))
    if not ok.all():
        bad = np.flatnonzero(~ok)
        sv[bad] = np.linalg.svd(M[bad], compute_uv=False)
    return sv


def _bound_sq(g: np.ndarray) -> np.ndarray:
    """An upper bound on λ_max of each symmetric PSD matrix in ``g [b, k, k]``: the smaller of its trace and
    its ∞-norm (each at most k, resp. √k, times λ_max)."""
    trace = np.trace(g, axis1=-2, axis2=-1)
    return np.minimum(trace, np.abs(g).sum(axis=-1).max(axis=-1))


def _lowrank_gram(members: list, values: dict) -> list:
    """CPU fast path for ``LowRank(U, V)`` stacks: σ(UV)² = eig(R_U R_Vᵀ R_V R_Uᵀ), with R_U = chol(UᵀU)ᵀ and
    R_V = chol(VVᵀ)ᵀ — two Gram products, two k×k Cholesky factorisations, one k×k product and one symmetric
    eigenproblem, instead of two Gram eigenproblems for the factors' conditioning, two Cholesky factorisations
    and an SVD of the core.

    Accuracy, checked after the fact for every member: with β = ‖U‖₂‖V‖₂ / σ_min(UV), the Gram products and
    Cholesky factors perturb σ_i² by about ε‖U‖²‖V‖² (a relative ε·β² for the smallest), the core product by a
    relative ε·β and its Gram eigenproblem by ε·κ(UV)² ≤ ε·β². ‖U‖₂² and ‖V‖₂² are bounded from above
    (:func:`_bound_sq`), and a member is kept only when that bound on β is at most ``CHOLESKY_MAX_COND``: the
    relative accuracy of every σ is then of order ε·β² ≤ 1e-8, the bound of the QR path. β also bounds κ(U) and
    κ(V) (σ_min(UV) ≤ σ_min(U)·‖V‖), so both Cholesky QRs are as accurate as that path's. Members with a
    non-finite Gram matrix, a failed Cholesky factorisation, fewer rows or columns than k, or a larger β are
    returned for the QR path (which gives non-finite input a NaN spectrum).
    """
    m, k = members[0][1].U.shape
    n = members[0][1].V.shape[1]
    if m < k or n < k:
        return members
    with np.errstate(all="ignore"):
        gu = np.stack([op.U.T @ op.U for _, op in members])
        gv = np.stack([op.V @ op.V.T for _, op in members])
    ok = np.isfinite(gu).all(axis=(-2, -1)) & np.isfinite(gv).all(axis=(-2, -1))
    lu = np.zeros_like(gu)
    lv = np.zeros_like(gv)
    for g, low in ((gu, lu), (gv, lv)):
        good = np.flatnonzero(ok)
        try:
            low[good] = np.linalg.cholesky(g[good])
        except np.linalg.LinAlgError:  # some are not numerically positive definite: find them one by one
            for j in good:
                try:
                    low[j] = np.linalg.cholesky(g[j])
                except np.linalg.LinAlgError:
                    ok[j] = False
    good = np.flatnonzero(ok)
    if good.size:
        core = np.matmul(np.swapaxes(lu[good], -1, -2), lv[good])  # R_U R_Vᵀ = L_Uᵀ L_V
        lam = np.linalg.eigvalsh(np.matmul(core, np.swapaxes(core, -1, -2)))  # ascending σ²
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            beta_sq = _bound_sq(gu[good]) * _bound_sq(gv[good]) / lam[:, 0]
        fine = (lam[:, 0] > 0) & (beta_sq <= CHOLESKY_MAX_COND**2)
        for j in np.flatnonzero(fine):
            values[members[good[j]][0]] = np.sqrt(lam[j, ::-1])
        ok[good[~fine]] = False
    return [member for member, fast in zip(members, ok) if not fast]


def _solve_group(kind: str, members: list, values: dict, backend: Backend) -> None:
    """Singular values of one batch of same-shaped operators, written into ``values``.

    Operators with NaN/Inf entries get a NaN spectrum: low-rank ones are detected from their small R factors
    (QR and Gram products of non-finite input are harmless: no iteration that could fail to converge), the
    others are screened before any SVD, which is iterative.
    """
    xp = backend.xp
    if kind == "lr" and backend.device == "cpu":
        members = _lowrank_gram(members, values)  # the well-conditioned ones; the rest go through QR below
        if not members:
            return
    if kind == "lr":
        # No separate finiteness pass here: a NaN/Inf entry (or an overflow) makes the Gram matrix, and so R,
        # non-finite, which the small R factors reveal at no cost; those members get a NaN spectrum.
        ru = backend.qr_r([op.U for _, op in members])  # [b, min(m,k), k]
        rv = backend.qr_r([op.V for _, op in members], of_transpose=True)  # R of Vᵀ: [b, min(n,k), k]
        ok = backend.get(xp.all(xp.isfinite(ru), axis=(-2, -1)) & xp.all(xp.isfinite(rv), axis=(-2, -1)))
        ok = ok.astype(bool)
        if not ok.all():
            for j, (i, op) in enumerate(members):
                if not ok[j]:
                    values[i] = np.full(min(op.shape), np.nan)
            keep = [j for j in range(len(members)) if ok[j]]
            if not keep:
                return
            members = [members[j] for j in keep]
            ru, rv = ru[keep], rv[keep]
        core = xp.matmul(ru, xp.matrix_transpose(rv))
        sv = backend.get(xp.linalg.svdvals(core))
        for j, (i, _) in enumerate(members):
            values[i] = sv[j]
        return
    if not all(_finite(op) for _, op in members):
        for i, op in members:
            if not _finite(op):
                values[i] = np.full(min(op.shape), np.nan)
        members = [m for m in members if _finite(m[1])]
        if not members:
            return
    if kind in ("dense", "rot"):
        # dense operators are stacked in batches of at most STACK_BYTES: a stack of large out×out matrices
        # (BOFT) would otherwise cost far more memory than the chunk of factors they were built from
        for batch in batches(members, lambda m: int(np.prod(m[1].shape)) * 8, STACK_BYTES):
            if kind == "dense":
                sv = _dense_svdvals(np.stack([op.M for _, op in batch]), backend)
            else:
                gram = []
                for _, op in batch:  # MᵀM = 2I − R − Rᵀ, formed on the host in float64
                    g = -(op.R + op.R.T)
                    g[np.diag_indices_from(g)] += 2.0
                    gram.append(g)
                ev = backend.get(xp.linalg.eigvalsh(backend.put(np.stack(gram))))  # ascending
                del gram
                sv = np.sqrt(np.clip(ev[:, ::-1], 0.0, None))
            for j, (i, _) in enumerate(batch):
                values[i] = sv[j]
    else:  # block diagonal: all blocks of all members in one call
        counts = [op.blocks.shape[0] for _, op in members]
        B = backend.put(np.concatenate([op.blocks for _, op in members]))
        sv = backend.get(xp.linalg.svdvals(B))
        start = 0
        for (i, _), n in zip(members, counts):
            values[i] = np.sort(sv[start : start + n].ravel())[::-1]
            start += n


# ---------------------------------------------------------------------------------------------------------
# metrics from a spectrum


@dataclass(frozen=True)
class SpectrumMetrics:
    fro: float  # ||M||_F = sqrt(sum σ²)
    spectral: float  # σ_max
    stable_rank: float  # ||M||_F² / ||M||_2²
    entropy_rank: float  # exp(H(p)), p_i = σ_i / Σσ (Roy & Vetterli 2007)
    energy_rank_90: int  # smallest k with Σ_{i≤k} σ_i² ≥ 0.90 Σ σ²
    energy_rank_99: int  # smallest k with Σ_{i≤k} σ_i² ≥ 0.99 Σ σ²


def metrics(sv: np.ndarray) -> SpectrumMetrics:
    """Metrics of a descending, non-negative spectrum. A zero operator gives zeros throughout."""
    sv = np.asarray(sv, dtype=np.float64)
    if sv.size == 0 or not np.all(np.isfinite(sv)) or sv[0] <= 0.0:
        bad = sv.size and not np.all(np.isfinite(sv))
        nan = float("nan")
        return SpectrumMetrics(nan if bad else 0.0, nan if bad else 0.0, nan if bad else 0.0,
                               nan if bad else 0.0, 0, 0)
    energy = sv * sv
    total = float(energy.sum())
    spectral = float(sv[0])
    p = sv / sv.sum()
    p = p[p > 0]
    entropy = float(-(p * np.log(p)).sum())
    cum = np.cumsum(energy) / total

    def energy_rank(q: float) -> int:
        # tolerate rounding in the cumulative sum so that an exact q is reached at the right k
        return int(np.searchsorted(cum, q - 1e-12, side="left")) + 1

    return SpectrumMetrics(
        fro=math.sqrt(total),
        spectral=spectral,
        stable_rank=total / (spectral * spectral),
        entropy_rank=math.exp(entropy),
        energy_rank_90=min(energy_rank(0.90), sv.size),
        energy_rank_99=min(energy_rank(0.99), sv.size),
    )
