"""Exact singular spectra of structured operators, batched, written once against the array API.

Adapters describe a layer's weight delta as a structured operator built from the file's factors; this module
turns operators into singular values without ever forming the dense delta:

* ``LowRank(U, V)``  M = U @ V (U [m,k], V [k,n]): reduced QR of U and of Vᵀ, then the SVD of the small core
  R_U @ R_Vᵀ. Exact: M = Q_U (R_U R_Vᵀ) Q_Vᵀ with orthonormal Q's.
* ``Kron(P, Q)``     M = P ⊗ Q: the singular values are all products σ_i(P)·σ_j(Q).
* ``Dense(M)``       a matrix stored as such (full/diff deltas, embeddings): its singular values.
* ``BlockDiag(B)``   M = blockdiag(B[0], ..., B[n-1]): the union of the blocks' singular values.

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


Operator = Union[LowRank, Dense, BlockDiag, Kron]


# ---------------------------------------------------------------------------------------------------------
# backends


class Backend:
    """An array namespace plus the transfers to and from host numpy."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        if device == "cpu":
            import array_api_compat.numpy as xp

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

    # Kron is resolved recursively after its children; collect leaves first.
    leaves: list[tuple[int, Operator]] = []
    kron_parts: dict[int, tuple[int, int]] = {}
    flat: list[Operator] = []

    def add(op: Operator) -> int:
        if isinstance(op, Kron):
            i = len(flat)
            flat.append(op)
            kron_parts[i] = (add(op.left), add(op.right))
            return i
        i = len(flat)
        flat.append(op)
        leaves.append((i, op))
        return i

    roots = [add(op) for op in ops]
    values: dict[int, np.ndarray] = {}

    groups: dict[tuple, list[tuple[int, Operator]]] = defaultdict(list)
    for i, op in leaves:
        if isinstance(op, LowRank):
            groups[("lr", op.U.shape, op.V.shape)].append((i, op))
        elif isinstance(op, Dense):
            groups[("dense", op.M.shape)].append((i, op))
        elif isinstance(op, BlockDiag):
            groups[("bd", op.blocks.shape[1:])].append((i, op))
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


def _finite(op: Operator) -> bool:
    arrays = (op.U, op.V) if isinstance(op, LowRank) else (op.M,) if isinstance(op, Dense) else (op.blocks,)
    return all(np.isfinite(a).all() for a in arrays)


def _solve_group(kind: str, members: list, values: dict, backend: Backend) -> None:
    """Singular values of one batch of same-shaped operators, written into ``values``.

    Operators with NaN/Inf entries get a NaN spectrum (LAPACK is never handed non-finite input).
    """
    xp = backend.xp
    bad = [m for m in members if not _finite(m[1])]
    for i, op in bad:
        values[i] = np.full(min(op.shape), np.nan)
    members = [m for m in members if _finite(m[1])]
    if not members:
        return
    if kind == "lr":
        U = backend.put(np.stack([op.U for _, op in members]))
        Vt = backend.put(np.stack([op.V.T for _, op in members]))
        ru = xp.linalg.qr(U, mode="reduced").R  # [b, min(m,k), k]
        rv = xp.linalg.qr(Vt, mode="reduced").R  # [b, min(n,k), k]
        core = xp.matmul(ru, xp.matrix_transpose(rv))
        sv = backend.get(xp.linalg.svdvals(core))
        for j, (i, _) in enumerate(members):
            values[i] = sv[j]
    elif kind == "dense":
        M = backend.put(np.stack([op.M for _, op in members]))
        sv = backend.get(xp.linalg.svdvals(M))
        for j, (i, _) in enumerate(members):
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
