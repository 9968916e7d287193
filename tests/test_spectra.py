"""The batched spectra engine against dense float64 references."""

import numpy as np
import pytest
import scipy.linalg

from audit.spectra import Backend, BlockDiag, Dense, Kron, LowRank, metrics, singular_values


def dense_sv(m: np.ndarray) -> np.ndarray:
    return np.linalg.svd(m, compute_uv=False)


def assert_spectrum(got: np.ndarray, ref: np.ndarray) -> None:
    """Top len(got) reference values match; the reference has nothing beyond them."""
    assert got.shape[0] <= ref.shape[0]
    scale = ref[0] if ref.size and ref[0] > 0 else 1.0
    np.testing.assert_allclose(got, ref[: got.shape[0]], rtol=0, atol=1e-10 * scale)
    assert np.all(ref[got.shape[0]:] <= 1e-10 * scale)


@pytest.mark.parametrize("m,k,n", [(50, 4, 30), (3, 8, 5), (64, 64, 64), (1, 1, 1), (7, 2, 1)])
def test_lowrank_matches_dense(m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    U, V = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    (sv,) = singular_values([LowRank(U, V)])
    assert_spectrum(sv, dense_sv(U @ V))
    assert sv.shape[0] == min(m, k, n)


def test_batched_groups_keep_order():
    rng = np.random.default_rng(1)
    ops, refs = [], []
    for i in range(12):
        shape = [(10, 3, 6), (8, 2, 8)][i % 2]
        U, V = rng.standard_normal(shape[:2]), rng.standard_normal(shape[1:])
        ops.append(LowRank(U, V))
        refs.append(dense_sv(U @ V))
        M = rng.standard_normal((4, 5))
        ops.append(Dense(M))
        refs.append(dense_sv(M))
    for got, ref in zip(singular_values(ops), refs):
        assert_spectrum(got, ref)


def test_kron_of_lowrank_and_dense_nested():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 5))
    B = LowRank(rng.standard_normal((6, 2)), rng.standard_normal((2, 7)))
    C = rng.standard_normal((2, 2))
    op = Kron(Kron(Dense(A), B), Dense(C))
    ref = dense_sv(np.kron(np.kron(A, B.U @ B.V), C))
    (sv,) = singular_values([op])
    assert_spectrum(sv, ref)


def test_blockdiag():
    rng = np.random.default_rng(3)
    blocks = rng.standard_normal((5, 4, 4))
    (sv,) = singular_values([BlockDiag(blocks)])
    assert_spectrum(sv, dense_sv(scipy.linalg.block_diag(*blocks)))


def test_zero_and_metrics_by_hand():
    (sv,) = singular_values([LowRank(np.zeros((4, 2)), np.ones((2, 3)))])
    assert np.all(sv == 0)
    m = metrics(sv)
    assert (m.fro, m.spectral, m.energy_rank_90) == (0.0, 0.0, 0)
    # diag(3, 4): fro 5, spectral 4, stable rank 25/16, energy 16/25=0.64 then 1.0
    m = metrics(np.array([4.0, 3.0]))
    assert m.fro == pytest.approx(5.0)
    assert m.spectral == 4.0
    assert m.stable_rank == pytest.approx(25 / 16)
    p = np.array([4 / 7, 3 / 7])
    assert m.entropy_rank == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert (m.energy_rank_90, m.energy_rank_99) == (2, 2)
    m = metrics(np.array([10.0, 1.0, 1.0, 0.0]))
    # energies 100, 1, 1 of 102: 0.980 after one value, 0.990 after two
    assert (m.energy_rank_90, m.energy_rank_99) == (1, 2)
    flat = metrics(np.ones(8))
    assert flat.entropy_rank == pytest.approx(8.0) and flat.stable_rank == pytest.approx(8.0)


def test_torch_backend_agrees_with_numpy():
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    ops = [LowRank(rng.standard_normal((40, 8)), rng.standard_normal((8, 30))),
           Kron(Dense(rng.standard_normal((2, 3))), LowRank(rng.standard_normal((5, 2)), rng.standard_normal((2, 4)))),
           BlockDiag(rng.standard_normal((3, 4, 4))), Dense(rng.standard_normal((6, 9)))]
    for a, b in zip(singular_values(ops), singular_values(ops, Backend("cpu-torch"))):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * a[0])


@pytest.mark.parametrize("cond", [1.0, 1e3, 1e6, 1e12, float("inf")])
def test_lowrank_is_accurate_for_ill_conditioned_factors(cond):
    """Cholesky QR is only trusted for well-conditioned factors; the rest fall back to Householder QR."""
    rng = np.random.default_rng(7)
    m, k, n = 300, 8, 200
    q1, _ = np.linalg.qr(rng.standard_normal((m, k)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, k)))
    s = np.geomspace(1.0, 1.0 / cond, k) if np.isfinite(cond) else np.r_[np.ones(k - 2), 0.0, 0.0]
    U = q1 * s  # condition number `cond` (or rank-deficient)
    V = (q2 * np.linspace(1, 2, k)).T
    ops = [LowRank(U, V), LowRank(rng.standard_normal((m, k)), rng.standard_normal((k, n)))]
    for got, (u, v) in zip(singular_values(ops), [(U, V), (ops[1].U, ops[1].V)]):
        ref = dense_sv(u @ v)
        np.testing.assert_allclose(got, ref[:k], rtol=0, atol=1e-12 * ref[0])
        big = ref[:k] > 1e-6 * ref[0]
        np.testing.assert_allclose(got[big], ref[:k][big], rtol=1e-8)


@pytest.mark.parametrize("cond_u,cond_v,aligned,fast", [
    (1.0, 1.0, True, True),  # orthonormal factors: β = 1
    (10.0, 10.0, True, True),  # κ(UV) = 100: still well inside the bound
    (1e3, 1e3, True, False),  # κ(UV) = 1e6: β > 1e4, the QR path
    (1e3, 1e3, False, True),  # opposed spectra: UV = 1e-3·Q₁Q₂ᵀ, β = ‖U‖‖V‖/σ_min(UV) = 1e3 bounds κ(U), κ(V)
    (1e5, 1e5, False, False),  # the same with β = 1e5: the QR path
    (1e6, 1.0, True, False),  # one ill-conditioned factor
])
def test_lowrank_gram_path_is_taken_only_when_its_bound_holds(monkeypatch, cond_u, cond_v, aligned, fast):
    """The CPU Gram path (σ² = eig(R_U R_Vᵀ R_V R_Uᵀ)) keeps a member only when ‖U‖‖V‖/σ_min(UV) is provably
    small; either way every singular value above 1e-6·σ_max agrees with a dense SVD to a relative 1e-8."""
    from audit import spectra

    taken = []
    orig = spectra._lowrank_gram

    def spy(members, values):
        left = orig(members, values)
        taken.extend(i for i, _ in members if i in values)
        return left

    monkeypatch.setattr(spectra, "_lowrank_gram", spy)
    rng = np.random.default_rng(11)
    m, k, n = 200, 16, 150
    q1, _ = np.linalg.qr(rng.standard_normal((m, k)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, k)))
    su = np.geomspace(1.0, 1.0 / cond_u, k)
    sv = np.geomspace(1.0, 1.0 / cond_v, k)
    core = np.diag(sv if aligned else sv[::-1])
    U, V = q1 * su, core @ q2.T
    (got,) = singular_values([LowRank(U, V)])
    assert (0 in taken) is fast
    ref = dense_sv(U @ V)[:k]
    big = ref > 1e-6 * ref[0]
    np.testing.assert_allclose(got[big], ref[big], rtol=1e-8)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * ref[0])


def test_lowrank_gram_path_hands_back_degenerate_members():
    """Rank-deficient, non-finite and overflowing members leave the Gram path for the QR path, without
    disturbing the well-conditioned members of the same batch."""
    from audit import spectra

    rng = np.random.default_rng(5)
    m, k, n = 60, 6, 40
    good = LowRank(rng.standard_normal((m, k)), rng.standard_normal((k, n)))
    deficient_u = rng.standard_normal((m, k))
    deficient_u[:, -1] = deficient_u[:, 0]
    deficient = LowRank(deficient_u, rng.standard_normal((k, n)))
    nan_u = rng.standard_normal((m, k))
    nan_u[3, 2] = np.nan
    huge = LowRank(rng.standard_normal((m, k)) * 1e200, rng.standard_normal((k, n)))
    members = [(0, good), (1, deficient), (2, LowRank(nan_u, good.V)), (3, huge)]
    values: dict = {}
    left = spectra._lowrank_gram(members, values)
    assert list(values) == [0] and [i for i, _ in left] == [1, 2, 3]
    assert_spectrum(values[0], dense_sv(good.U @ good.V))
    got = singular_values([op for _, op in members])
    assert_spectrum(got[1], dense_sv(deficient.U @ deficient.V))
    assert np.isnan(got[2]).all()


@pytest.mark.parametrize("shape", [(40, 40), (120, 30), (30, 120)])
@pytest.mark.parametrize("cond", [1.0, 1e3, 1e6, 1e12, float("inf")])
def test_dense_is_accurate_whatever_its_conditioning(shape, cond):
    """Well-conditioned dense matrices go through their Gram matrix, the rest through the SVD: both agree with
    a dense SVD to a relative 1e-8 on every singular value above 1e-6·σ_max."""
    rng = np.random.default_rng(int(np.log10(cond)) if np.isfinite(cond) else 99)
    m, n = shape
    k = min(m, n)
    q1, _ = np.linalg.qr(rng.standard_normal((m, k)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, k)))
    s = np.geomspace(1.0, 1.0 / cond, k) if np.isfinite(cond) else np.r_[np.ones(k - 3), 0.0, 0.0, 0.0]
    M = (q1 * s) @ q2.T
    other = rng.standard_normal(shape)
    for got, ref_m in zip(singular_values([Dense(M), Dense(other), Dense(M * 3.0)]), [M, other, M * 3.0]):
        ref = dense_sv(ref_m)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * ref[0])
        big = ref > 1e-6 * ref[0]
        np.testing.assert_allclose(got[big], ref[big], rtol=1e-8)


def test_dense_with_nonfinite_entries_gets_nan_spectrum():
    bad = np.ones((5, 5))
    bad[2, 3] = np.nan
    got, ok = singular_values([Dense(bad), Dense(np.eye(5))])
    assert np.isnan(got).all() and got.shape == (5,)
    np.testing.assert_allclose(ok, np.ones(5))


def test_blockdiag_closed_form_values_are_used_sorted():
    blocks = np.stack([np.diag([3.0, 1.0]), np.diag([2.0, 0.5])])
    (sv,) = singular_values([BlockDiag(blocks, values=np.array([1.0, 3.0, 0.5, 2.0]))])
    np.testing.assert_allclose(sv, [3.0, 2.0, 1.0, 0.5])
    (nan,) = singular_values([BlockDiag(blocks, values=np.array([1.0, np.nan, 0.5, 2.0]))])
    assert np.isnan(nan).all()
