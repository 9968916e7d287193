"""full, ia3, oft, boft, glora, norm and textual-inversion adapters against dense float64 references.

Every reference here is written independently of audit/adapters: Cayley transforms by an explicit
``X (I − Q) = (I + Q)`` solve, block-diagonal matrices with scipy, butterfly permutations with explicit loops
over their index formula, GLoRA deltas from a random base weight.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.adapters import _MODULES, boft, detect, full, glora, ia3, norm, oft, textual_inversion
from audit.adapters.base import LayerAnalysis, LayerGroup, ScaleContext
from audit.spectra import Backend, BlockDiag, Dense, LowRank, RotationMinusI, singular_values
from conftest import real_fixtures_dir

KOHYA = ScaleContext()


class DictSource:
    """In-memory TensorSource: role tensors as float64 arrays."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}

    def shape(self, name):
        return tuple(self.tensors[name].shape)

    def dtype(self, name):
        return "F64"

    def array(self, name):
        return self.tensors[name].copy()


def run(adapter, parts: dict[str, np.ndarray], fmt: str = "kohya", ctx: ScaleContext = KOHYA) -> LayerAnalysis:
    names = {role: f"m.{role}" for role in parts}
    group = LayerGroup(key="unet:m", component="unet", module="m", parts=names, format=fmt)
    src = DictSource({names[r]: a for r, a in parts.items()})
    result = adapter.analyse(group, src, ctx)
    assert isinstance(result, LayerAnalysis)
    assert result.kind == adapter.kind
    json.dumps(result.extra, allow_nan=False)  # plain, strict-JSON numbers only
    return result


def codes(a: LayerAnalysis) -> set[str]:
    return {f.code for f in a.findings}


def sv_of(op, backend=None) -> np.ndarray:
    (sv,) = singular_values([op], backend)
    return sv


def dense_sv(m: np.ndarray) -> np.ndarray:
    return np.linalg.svd(m, compute_uv=False)


def assert_spectrum(got: np.ndarray, ref: np.ndarray, rtol: float = 1e-10) -> None:
    """The top values agree to ``rtol`` of the largest; the reference has nothing beyond them."""
    assert got.shape[0] <= ref.shape[0]
    top = ref[0] if ref.size and ref[0] > 0 else 1.0
    np.testing.assert_allclose(got, ref[: got.shape[0]], rtol=0, atol=rtol * top)
    assert np.all(ref[got.shape[0]:] <= rtol * top)
    np.testing.assert_allclose(math.sqrt(float((got**2).sum())), math.sqrt(float((ref**2).sum())),
                               rtol=1e-10, atol=1e-12)


def dense_of(op) -> np.ndarray:
    """The dense matrix of an operator (tests only)."""
    if isinstance(op, Dense):
        return op.M
    if isinstance(op, LowRank):
        return op.U @ op.V
    if isinstance(op, BlockDiag):
        return scipy.linalg.block_diag(*op.blocks)
    if isinstance(op, RotationMinusI):
        return op.R - np.eye(op.R.shape[0])
    raise TypeError(type(op))


def cayley_ref(B: np.ndarray) -> np.ndarray:
    """R = (I + Q)(I − Q)⁻¹ for one block, Q = B − Bᵀ, via the solve X (I − Q) = I + Q."""
    Q = B - B.T
    I = np.eye(B.shape[0])
    return np.linalg.solve((I - Q).T, (I + Q).T).T


def test_priorities_follow_module_order():
    mods = {"full": full, "ia3": ia3, "oft": oft, "boft": boft, "glora": glora, "norm": norm,
            "textual_inversion": textual_inversion}
    for name, mod in mods.items():
        assert mod.ADAPTER.priority == _MODULES.index(name) * 10
        assert mod.ADAPTER.detects <= mod.ADAPTER.owns


@pytest.mark.parametrize("shapes,kind", [
    ({"diff": (4, 4), "diff_b": (4,)}, "full"),
    ({"diff_b": (4,)}, "full"),
    ({"weight": (4,), "on_input": ()}, "ia3"),
    ({"weight": (1, 4)}, "ia3"),
    ({"oft_blocks": (2, 3, 3), "alpha": ()}, "oft"),
    ({"oft_blocks": (1, 1, 1, 2, 2)}, "oft"),
    ({"oft_blocks": (2, 2, 3, 3), "rescale": (6, 1)}, "boft"),
    ({"a1": (4, 2), "a2": (2, 4), "b1": (5, 2), "b2": (2, 4), "alpha": ()}, "glora"),
    ({"b1": (5, 2)}, "glora"),
    ({"w_norm": (4,), "b_norm": (4,)}, "norm"),
    ({"set_weight": (4,)}, "norm"),
    ({"embedding": (2, 768)}, "textual-inversion"),
])
def test_registry_detects_these_kinds(shapes, kind):
    group = LayerGroup(key="k", component="unet", module="m", parts={r: r for r in shapes}, format="kohya")
    found = detect(group, shapes)
    assert found is not None and found.kind == kind
    assert set(shapes) - {"alpha"} <= found.owns | {"alpha"}


# ---------------------------------------------------------------------------------------------------------
# full


def test_full_linear_exact_spectrum_and_bias():
    rng = np.random.default_rng(10)
    diff, bias = rng.standard_normal((12, 9)), rng.standard_normal(12)
    a = run(full.ADAPTER, {"diff": diff, "diff_b": bias})
    assert (a.out_features, a.in_features, a.kernel) == (12, 9, ())
    assert (a.scale, a.scale_rule, a.delta_basis) == (1.0, "no-alpha", "exact")
    assert_spectrum(sv_of(a.operator), dense_sv(diff))
    assert a.extra["bias_delta_l2"] == pytest.approx(math.sqrt(sum(x * x for x in bias)), rel=1e-12)
    assert a.extra["bias_delta_max_abs"] == pytest.approx(max(abs(x) for x in bias), rel=1e-12)
    assert not a.findings


def test_full_conv_flattens_kernel():
    rng = np.random.default_rng(11)
    diff = rng.standard_normal((8, 4, 3, 3))
    a = run(full.ADAPTER, {"diff": diff})
    assert (a.out_features, a.in_features, a.kernel) == (8, 4, (3, 3))
    ref = np.array([[diff[o, i, h, w] for i in range(4) for h in range(3) for w in range(3)] for o in range(8)])
    assert_spectrum(sv_of(a.operator), dense_sv(ref))
    assert math.sqrt(float((sv_of(a.operator) ** 2).sum())) == pytest.approx(np.sqrt((diff**2).sum()), rel=1e-12)


def test_full_vector_and_bias_only_have_no_spectrum():
    v = np.array([3.0, -4.0])
    a = run(full.ADAPTER, {"diff": v})
    assert a.operator is None and a.extra["diff_l2"] == pytest.approx(5.0)
    b = run(full.ADAPTER, {"diff_b": v})
    assert b.operator is None and b.extra["bias_delta_l2"] == pytest.approx(5.0) and b.out_features == 2


@pytest.mark.parametrize("parts", [
    {"diff": np.zeros(())},
    {"diff": np.zeros((2, 1, 1, 1, 1, 1))},
    {"diff": np.zeros((0, 4))},
    {"diff": np.ones((3, 4)), "diff_b": np.ones(5)},
    {"diff": np.ones((3, 4)), "diff_b": np.ones((3, 2))},
])
def test_full_hostile_shapes_give_findings(parts):
    a = run(full.ADAPTER, parts)
    assert "LA207" in codes(a)


def test_full_nonfinite_gives_no_operator():
    d = np.ones((3, 3))
    d[1, 1] = np.nan
    a = run(full.ADAPTER, {"diff": d})
    assert a.operator is None and a.unknowable


# ---------------------------------------------------------------------------------------------------------
# ia3


def test_ia3_lycoris_output_axis_numbers_by_hand():
    v = np.array([0.5, -0.25, 2.0, -1.5])
    a = run(ia3.ADAPTER, {"weight": v, "on_input": np.array(0.0)})
    assert a.operator is None and a.delta_basis == "none" and "LA208" in codes(a)
    e = a.extra
    assert e["convention"] == "lycoris" and e["axis"] == "output" and a.out_features == 4
    assert e["vector_length"] == 4
    assert e["vector_min"] == -1.5 and e["vector_max"] == 2.0
    assert e["vector_mean"] == pytest.approx((0.5 - 0.25 + 2.0 - 1.5) / 4)
    assert e["vector_l2"] == pytest.approx(math.sqrt(0.25 + 0.0625 + 4.0 + 2.25))
    assert e["relative_bound"] == 2.0
    assert e["factor_min"] == pytest.approx(-0.5) and e["factor_max"] == pytest.approx(3.0)
    assert e["factors_negative"] == 1 and e["factors_zero"] == 0
    # the bound holds for a base weight: ΔW = W' − W with W' = W ⊙ (1 + v) on the rows
    rng = np.random.default_rng(20)
    W = rng.standard_normal((4, 7))
    dW = W * (1.0 + v)[:, None] - W
    assert np.linalg.norm(dW, 2) <= e["relative_bound"] * np.linalg.norm(W, 2) + 1e-12
    assert np.linalg.norm(dW) <= e["relative_bound"] * np.linalg.norm(W) + 1e-12


def test_ia3_on_input_and_conv():
    v = np.array([0.1, 0.2, -0.3])
    a = run(ia3.ADAPTER, {"weight": v, "on_input": np.array(1.0)})
    assert a.extra["axis"] == "input" and a.in_features == 3 and a.out_features is None
    rng = np.random.default_rng(21)
    W = rng.standard_normal((5, 3))
    dW = W * (1.0 + v)[None, :] - W
    assert np.linalg.norm(dW, 2) <= a.extra["relative_bound"] * np.linalg.norm(W, 2) + 1e-12
    c = run(ia3.ADAPTER, {"weight": v.reshape(1, 3, 1, 1), "on_input": np.array(0)})
    assert c.extra["axis"] == "output" and c.out_features == 3


def test_ia3_peft_convention():
    l = np.array([[1.5], [0.5], [1.0]])  # [out, 1]: output scaling, W' = W ⊙ l
    a = run(ia3.ADAPTER, {"weight": l}, fmt="peft")
    e = a.extra
    assert e["convention"] == "peft" and e["axis"] == "output"
    assert e["relative_bound"] == pytest.approx(0.5)
    assert e["delta_l2"] == pytest.approx(math.sqrt(0.25 + 0.25))
    assert e["factor_min"] == pytest.approx(0.5) and e["factor_max"] == pytest.approx(1.5)
    r = run(ia3.ADAPTER, {"weight": l.T}, fmt="peft")
    assert r.extra["axis"] == "input" and r.in_features == 3


def test_ia3_accepts_only_vectors_without_on_input():
    assert ia3.ADAPTER.accepts({"weight"}, {"weight": (1, 8)})
    assert ia3.ADAPTER.accepts({"weight"}, {"weight": (8,)})
    assert not ia3.ADAPTER.accepts({"weight"}, {"weight": (8, 4)})
    assert ia3.ADAPTER.accepts({"weight", "on_input"}, {"weight": (8, 4), "on_input": ()})


@pytest.mark.parametrize("parts", [
    {"weight": np.ones((3, 4)), "on_input": np.array(0.0)},
    {"weight": np.ones(0), "on_input": np.array(0.0)},
    {"weight": np.ones(3), "on_input": np.ones(2)},
])
def test_ia3_hostile(parts):
    assert "LA207" in codes(run(ia3.ADAPTER, parts))


# ---------------------------------------------------------------------------------------------------------
# norm


def test_norm_vector_deltas_by_hand():
    w, b = np.array([1.0, -2.0, 2.0]), np.array([0.0, 0.5, -3.0])
    a = run(norm.ADAPTER, {"w_norm": w, "b_norm": b})
    assert a.operator is None and a.delta_basis == "exact" and a.out_features == 3
    assert a.extra["w_norm_l2"] == pytest.approx(3.0)
    assert a.extra["b_norm_l2"] == pytest.approx(math.sqrt(0.25 + 9.0))
    assert a.extra["max_abs"] == 3.0
    assert not a.findings


def test_norm_set_weight_replaces():
    s = np.array([1.0, 1.0, 2.0, -2.0])
    a = run(norm.ADAPTER, {"set_weight": s})
    assert a.operator is None and a.delta_basis == "none" and "LA208" in codes(a)
    assert a.extra["set_weight_l2"] == pytest.approx(math.sqrt(10.0))
    assert (a.extra["set_weight_min"], a.extra["set_weight_max"]) == (-2.0, 2.0)
    assert a.extra["set_weight_shape"] == [4]


@pytest.mark.parametrize("parts", [
    {"w_norm": np.ones(3), "b_norm": np.ones(4)},
    {"w_norm": np.ones((3, 2))},
    {"w_norm": np.ones(0)},
    {"set_weight": np.ones((0, 2))},
])
def test_norm_hostile(parts):
    assert "LA207" in codes(run(norm.ADAPTER, parts))


# ---------------------------------------------------------------------------------------------------------
# textual inversion


def test_textual_inversion_embedding():
    rng = np.random.default_rng(30)
    e = rng.standard_normal((4, 768))
    a = run(textual_inversion.ADAPTER, {"embedding": e})
    assert (a.rank, a.in_features, a.scale, a.scale_rule, a.delta_basis) == (4, 768, 1.0, "embedding", "exact")
    assert_spectrum(sv_of(a.operator), dense_sv(e))
    np.testing.assert_allclose(a.extra["vector_l2"], [math.sqrt(float(np.dot(x, x))) for x in e], rtol=1e-12)
    one = run(textual_inversion.ADAPTER, {"embedding": e[0]})
    assert one.rank == 1 and one.in_features == 768
    assert_spectrum(sv_of(one.operator), np.array([np.sqrt(np.dot(e[0], e[0]))]))


def test_textual_inversion_real_cloneofsimo_tokens():
    path = real_fixtures_dir() / "cloneofsimo-lora_disney.safetensors"
    if not path.is_file():
        pytest.skip("real fixtures not available")
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    for token in ("<s1>", "<s2>"):
        e = tensors[token]
        assert e.shape == (768,)
        a = run(textual_inversion.ADAPTER, {"embedding": e})
        assert (a.rank, a.in_features) == (1, 768)  # the CLIP-L width of SD1
        ref = math.sqrt(sum(float(x) * float(x) for x in e))
        assert a.extra["vector_l2"][0] == pytest.approx(ref, rel=1e-12)
        assert_spectrum(sv_of(a.operator), np.array([ref]))


@pytest.mark.parametrize("shape", [(1, 2, 3), (0, 768), (), (3, 0)])
def test_textual_inversion_hostile(shape):
    a = run(textual_inversion.ADAPTER, {"embedding": np.ones(shape)})
    assert "LA207" in codes(a) and a.operator is None


# ---------------------------------------------------------------------------------------------------------
# oft


def oft_reference(blocks, alpha=None, rescale=None, comfy=False):
    """(applied rotation blocks, R_k) following the documented rule, written out longhand."""
    n, b, _ = blocks.shape
    Q = np.stack([blk - blk.T for blk in blocks])
    norm_q = math.sqrt(float((Q**2).sum()))
    c = None if not alpha else (alpha if comfy else alpha * n * b)
    if c is not None and norm_q + 1e-8 > c:
        blocks = blocks * (c / (norm_q + 1e-8))  # B − Bᵀ is linear in B
    R = [cayley_ref(blk) for blk in blocks]
    return R


def oft_apply_ref(R, W, rescale=None):
    """W' rows: W'[k·b + m] = Σ_n R_k[n, m] · W[k·b + n], then rows times rescale (loop form)."""
    b = R[0].shape[0]
    Wp = np.zeros_like(W)
    for k, Rk in enumerate(R):
        for m in range(b):
            for nn in range(b):
                Wp[k * b + m] += Rk[nn, m] * W[k * b + nn]
    if rescale is not None:
        Wp = Wp * rescale.reshape(-1, *([1] * (W.ndim - 1)))
    return Wp


@pytest.mark.parametrize("n,b", [(4, 3), (1, 8), (6, 2), (3, 1)])
def test_oft_relative_operator_matches_reference(n, b):
    rng = np.random.default_rng(40 + n * b)
    blocks = 0.3 * rng.standard_normal((n, b, b))
    a = run(oft.ADAPTER, {"oft_blocks": blocks})
    assert a.out_features == n * b and a.delta_basis == "relative" and a.scale == 1.0
    assert a.scale_rule == "oft: alpha is a constraint" and "LA208" in codes(a)
    R = oft_reference(blocks)
    rel = scipy.linalg.block_diag(*[Rk.T for Rk in R]) - np.eye(n * b)
    sv = sv_of(a.operator)
    assert a.operator.values is not None  # the closed form 2μ/√(1+μ²), checked here against a dense SVD
    assert_spectrum(sv, dense_sv(rel))
    # the operator applied to a base weight reproduces W' and bounds ΔW
    W = rng.standard_normal((n * b, 5))
    Wp = oft_apply_ref(R, W)
    np.testing.assert_allclose((dense_of(a.operator) + np.eye(n * b)) @ W, Wp, rtol=0, atol=1e-12)
    dW = Wp - W
    assert np.linalg.norm(dW, 2) <= sv[0] * np.linalg.norm(W, 2) * (1 + 1e-12) + 1e-14
    # singular values of R − I are 2|sin(θ/2)|, θ = 2·arctan(μ): 2μ/√(1+μ²)
    mu = np.concatenate([dense_sv(blk - blk.T) for blk in blocks])
    np.testing.assert_allclose(np.sort(sv), np.sort(2 * mu / np.sqrt(1 + mu * mu)), atol=1e-12)
    theta = 2 * np.arctan(mu)
    assert a.extra["rotation_angle_max"] == pytest.approx(theta.max(), abs=1e-12)
    assert a.extra["rotation_angle_mean"] == pytest.approx(theta.mean(), abs=1e-12)


def test_oft_conv_weight_rotation():
    rng = np.random.default_rng(41)
    blocks = 0.5 * rng.standard_normal((2, 4, 4))
    a = run(oft.ADAPTER, {"oft_blocks": blocks})
    W = rng.standard_normal((8, 3, 3, 3))
    Wp = oft_apply_ref(oft_reference(blocks), W)
    got = ((dense_of(a.operator) + np.eye(8)) @ W.reshape(8, -1)).reshape(W.shape)
    np.testing.assert_allclose(got, Wp, rtol=0, atol=1e-12)


def test_oft_constraint_lycoris_and_comfyui():
    rng = np.random.default_rng(42)
    n, b = 4, 4
    blocks = rng.standard_normal((n, b, b))
    qn = math.sqrt(float(sum(((x - x.T) ** 2).sum() for x in blocks)))
    # trainer threshold alpha·out below ‖Q‖: applied
    alpha = 0.5 * qn / (n * b)
    a = run(oft.ADAPTER, {"oft_blocks": blocks, "alpha": np.array(alpha)})
    assert a.alpha == pytest.approx(alpha) and a.scale == 1.0
    assert a.extra["constraint_applied"] is True
    assert a.extra["constraint"] == pytest.approx(alpha * n * b)
    assert a.extra["q_norm"] == pytest.approx(qn, rel=1e-12)
    ref = scipy.linalg.block_diag(*[Rk.T for Rk in oft_reference(blocks, alpha)]) - np.eye(n * b)
    assert_spectrum(sv_of(a.operator), dense_sv(ref))
    unconstrained = scipy.linalg.block_diag(*[Rk.T for Rk in oft_reference(blocks)]) - np.eye(n * b)
    assert not np.allclose(dense_sv(ref), dense_sv(unconstrained))
    # ComfyUI (threshold alpha) clamps too, harder: its angles are smaller
    comfy = a.extra["comfyui"]
    assert comfy["applied"] is True and comfy["constraint"] == pytest.approx(alpha)
    mu_c = np.concatenate([dense_sv(x - x.T) for x in blocks]) * alpha / (qn + 1e-8)
    assert comfy["rotation_angle_max"] == pytest.approx(2 * np.arctan(mu_c).max(), rel=1e-10)

    # alpha·out above ‖Q‖ but alpha below: the trainer leaves Q alone, ComfyUI does not
    alpha2 = 2 * qn / (n * b)
    c = run(oft.ADAPTER, {"oft_blocks": blocks, "alpha": np.array(alpha2)})
    assert c.extra["constraint_applied"] is False and c.extra["comfyui"]["applied"] is True
    assert "note" in c.extra["comfyui"]
    assert_spectrum(sv_of(c.operator), dense_sv(unconstrained))

    # alpha 0: no constraint anywhere
    z = run(oft.ADAPTER, {"oft_blocks": blocks, "alpha": np.array(0.0)})
    assert z.extra["constraint"] is None and z.extra["constraint_applied"] is False
    assert "note" not in z.extra["comfyui"]
    assert_spectrum(sv_of(z.operator), dense_sv(unconstrained))


def test_oft_rescale():
    rng = np.random.default_rng(43)
    blocks = 0.4 * rng.standard_normal((3, 2, 2))
    s = 1 + 0.2 * rng.standard_normal(6)
    a = run(oft.ADAPTER, {"oft_blocks": blocks, "rescale": s.reshape(6, 1)})
    R = oft_reference(blocks)
    W = rng.standard_normal((6, 4))
    Wp = oft_apply_ref(R, W, s)
    np.testing.assert_allclose((dense_of(a.operator) + np.eye(6)) @ W, Wp, rtol=0, atol=1e-12)
    rel = np.diag(s) @ scipy.linalg.block_diag(*[Rk.T for Rk in R]) - np.eye(6)
    assert a.operator.values is None  # a rescale breaks normality: the blocks go through an SVD
    assert_spectrum(sv_of(a.operator), dense_sv(rel))
    assert a.extra["rescale_min"] == pytest.approx(s.min()) and a.extra["rescale_max"] == pytest.approx(s.max())


@pytest.mark.parametrize("parts", [
    {"oft_blocks": np.ones((2, 3, 4))},
    {"oft_blocks": np.ones((0, 3, 3))},
    {"oft_blocks": np.ones((1, 1, 1, 2, 2))},
    {"oft_blocks": np.ones((3, 3))},
    {"oft_blocks": np.ones((2, 2, 2)), "rescale": np.ones(3)},
])
def test_oft_hostile(parts):
    a = run(oft.ADAPTER, parts)
    assert "LA207" in codes(a) and a.operator is None


def test_oft_claims_everything_but_4d():
    assert oft.ADAPTER.accepts({"oft_blocks"}, {"oft_blocks": (2, 3, 3)})
    assert oft.ADAPTER.accepts({"oft_blocks"}, {"oft_blocks": (1, 1, 1, 2, 2)})
    assert not oft.ADAPTER.accepts({"oft_blocks"}, {"oft_blocks": (2, 2, 3, 3)})
    assert boft.ADAPTER.accepts({"oft_blocks"}, {"oft_blocks": (2, 2, 3, 3)})
    assert not boft.ADAPTER.accepts({"oft_blocks"}, {"oft_blocks": (2, 3, 3)})


def test_oft_nonfinite_and_overflow():
    blocks = np.ones((2, 2, 2))
    blocks[0, 0, 1] = np.inf
    a = run(oft.ADAPTER, {"oft_blocks": blocks})
    assert a.operator is None
    huge = np.zeros((1, 2, 2))
    huge[0, 0, 1], huge[0, 1, 0] = 1e308, -1e308
    h = run(oft.ADAPTER, {"oft_blocks": huge})
    assert h.operator is None and "LA209" in codes(h)


# ---------------------------------------------------------------------------------------------------------
# boft


def butterfly_perm_matrix(size: int, span: int) -> np.ndarray:
    """P with (P x)[p] = x[o]: o = c·2K + g·K + κ goes to p = c·2K + κ·2 + g (explicit loops)."""
    P = np.zeros((size, size))
    for c in range(size // (2 * span)):
        for g in range(2):
            for kappa in range(span):
                P[c * 2 * span + kappa * 2 + g, c * 2 * span + g * span + kappa] = 1.0
    return P


def boft_reference(blocks, alpha=None):
    """R_total = Π S_i, S_i = P_iᵀ blockdiag(R_i) P_i, stage 0 applied first."""
    m, n, b, _ = blocks.shape
    size = n * b
    Q = blocks - np.swapaxes(blocks, -1, -2)
    qn = math.sqrt(float((Q**2).sum()))
    if alpha and qn + 1e-8 > alpha * size:
        blocks = blocks * (alpha * size / (qn + 1e-8))
    total = np.eye(size)
    for i in range(m):
        span = 2**i * (b // 2)
        P = butterfly_perm_matrix(size, span)
        S = P.T @ scipy.linalg.block_diag(*[cayley_ref(blocks[i, d]) for d in range(n)]) @ P
        total = S @ total
    return total


def boft_apply_reshape(blocks, W):
    """The loaders' reshape form of one forward pass (regroup rows, rotate groups, regroup back)."""
    m, n, b, _ = blocks.shape
    x = W.copy()
    for i in range(m):
        span = 2**i * (b // 2)
        rest = x.shape[1:]
        x = x.reshape(-1, 2, span, *rest).swapaxes(1, 2).reshape(n, b, *rest)
        R = np.stack([cayley_ref(blocks[i, d]) for d in range(n)])
        x = np.einsum("dij,dj...->di...", R, x)
        x = x.reshape(-1, span, 2, *rest).swapaxes(1, 2).reshape(n * b, *rest)
    return x


@pytest.mark.parametrize("m,n,b", [(3, 4, 4), (4, 8, 2), (1, 3, 4), (2, 2, 6), (2, 8, 4), (3, 16, 2)])
def test_boft_matches_loop_reference(m, n, b):
    rng = np.random.default_rng(50 + m * n * b)
    blocks = 0.3 * rng.standard_normal((m, n, b, b))
    a = run(boft.ADAPTER, {"oft_blocks": blocks})
    size = n * b
    assert a.out_features == size and a.delta_basis == "relative" and a.extra["stages"] == m
    total = boft_reference(blocks)
    np.testing.assert_allclose(total @ total.T, np.eye(size), atol=1e-12)  # orthogonal
    sv = sv_of(a.operator)
    assert_spectrum(sv, dense_sv(total - np.eye(size)))
    W = rng.standard_normal((size, 5))
    Wp = boft_apply_reshape(blocks, W)
    np.testing.assert_allclose(total @ W, Wp, rtol=0, atol=1e-12)
    np.testing.assert_allclose((dense_of(a.operator) + np.eye(size)) @ W, Wp, rtol=0, atol=1e-12)
    assert np.linalg.norm(Wp - W, 2) <= sv[0] * np.linalg.norm(W, 2) * (1 + 1e-12) + 1e-14
    assert sv[0] <= a.extra["sigma_max_bound"] + 1e-12
    chunk = min(size, 2 ** (m - 1) * b)  # fewer stages than a full butterfly: block-diagonal, exactly
    assert isinstance(a.operator, BlockDiag if chunk < size else RotationMinusI)
    off = total - scipy.linalg.block_diag(*[total[i:i + chunk, i:i + chunk] for i in range(0, size, chunk)])
    assert np.abs(off).max() == 0.0


def test_boft_partial_butterfly_with_rescale():
    rng = np.random.default_rng(53)
    blocks = 0.3 * rng.standard_normal((2, 8, 4, 4))  # 32 rows, 2 stages: chunks of 8
    s = 1 + 0.1 * rng.standard_normal(32)
    a = run(boft.ADAPTER, {"oft_blocks": blocks, "rescale": s.reshape(32, 1, 1, 1)})
    assert isinstance(a.operator, BlockDiag) and a.operator.blocks.shape == (4, 8, 8)
    assert_spectrum(sv_of(a.operator), dense_sv(np.diag(s) @ boft_reference(blocks) - np.eye(32)))


def test_boft_constraint_and_rescale():
    rng = np.random.default_rng(51)
    blocks = rng.standard_normal((2, 2, 4, 4))
    qn = math.sqrt(float(((blocks - np.swapaxes(blocks, -1, -2)) ** 2).sum()))
    alpha = 0.3 * qn / 8
    s = 1 + 0.1 * rng.standard_normal(8)
    a = run(boft.ADAPTER, {"oft_blocks": blocks, "alpha": np.array(alpha), "rescale": s.reshape(8, 1, 1, 1)})
    assert a.extra["constraint_applied"] is True
    rel = np.diag(s) @ boft_reference(blocks, alpha) - np.eye(8)
    assert_spectrum(sv_of(a.operator), dense_sv(rel))
    assert dense_sv(rel)[0] <= a.extra["sigma_max_bound"] + 1e-12


def test_boft_dense_limit(monkeypatch):
    rng = np.random.default_rng(52)
    blocks = 0.5 * rng.standard_normal((3, 4, 4, 4))
    monkeypatch.setattr(boft, "DENSE_LIMIT", 8)
    a = run(boft.ADAPTER, {"oft_blocks": blocks})
    assert a.operator is None and any("limit" in u for u in a.unknowable)
    true = dense_sv(boft_reference(blocks) - np.eye(16))[0]
    assert true <= a.extra["sigma_max_bound"] + 1e-12
    assert len(a.extra["stage_sigma_max"]) == 3


@pytest.mark.parametrize("shape", [(3, 3, 2, 2), (1, 4, 1, 1), (2, 2, 3, 4), (0, 2, 2, 2), (1, 0, 2, 2)])
def test_boft_hostile(shape):
    a = run(boft.ADAPTER, {"oft_blocks": np.ones(shape)})
    assert "LA207" in codes(a) and a.operator is None


# ---------------------------------------------------------------------------------------------------------
# glora


def test_glora_linear_partial_delta():
    rng = np.random.default_rng(60)
    out_f, in_f, r, alpha = 7, 6, 3, 1.5
    a1, a2 = rng.standard_normal((in_f, r)), rng.standard_normal((r, in_f))
    b1, b2 = rng.standard_normal((out_f, r)), rng.standard_normal((r, in_f))
    a = run(glora.ADAPTER, {"a1": a1, "a2": a2, "b1": b1, "b2": b2, "alpha": np.array(alpha)})
    assert (a.rank, a.in_features, a.out_features, a.alpha) == (r, in_f, out_f, alpha)
    assert a.scale == pytest.approx(alpha / r) and a.scale_rule == "alpha/rank"
    assert a.delta_basis == "exact-partial" and a.extra["layout"] == "lycoris" and "LA208" in codes(a)
    W = rng.standard_normal((out_f, in_f))
    dW = (W @ a1 @ a2 + b1 @ b2) * alpha / r  # the full GLoRA delta for this base
    base_part = (W @ a1 @ a2) * alpha / r
    np.testing.assert_allclose(a.scale * dense_of(a.operator), dW - base_part, atol=1e-12)
    assert_spectrum(sv_of(a.operator) * a.scale, dense_sv(dW - base_part))
    rel = np.array(a.extra["relative_singular_values"])
    assert_spectrum(rel, dense_sv(a1 @ a2 * alpha / r))
    assert np.linalg.norm(base_part, 2) <= a.extra["relative_sigma_max"] * np.linalg.norm(W, 2) * (1 + 1e-12)


def test_glora_conv_and_tucker():
    rng = np.random.default_rng(61)
    out_f, in_f, r = 5, 4, 2
    a1 = rng.standard_normal((in_f, r, 1, 1))
    a2 = rng.standard_normal((r, in_f, 1, 1))
    b1 = rng.standard_normal((out_f, r, 1, 1))
    b2 = rng.standard_normal((r, in_f, 3, 3))
    a = run(glora.ADAPTER, {"a1": a1, "a2": a2, "b1": b1, "b2": b2})
    assert a.kernel == (3, 3) and a.scale == 1.0 and a.scale_rule == "missing-alpha=>1"
    W = rng.standard_normal((out_f, in_f, 3, 3))
    A = a1[:, :, 0, 0] @ a2[:, :, 0, 0]
    dW = np.einsum("oihw,ij->ojhw", W, A) + np.einsum("or,rihw->oihw", b1[:, :, 0, 0], b2)
    b_part = dW - np.einsum("oihw,ij->ojhw", W, A)
    assert_spectrum(sv_of(a.operator), dense_sv(b_part.reshape(out_f, -1)))
    # Tucker: b2 [r, in, 1, 1], bm [r, r, 3, 3]
    b2t = rng.standard_normal((r, in_f, 1, 1))
    bm = rng.standard_normal((r, r, 3, 3))
    t = run(glora.ADAPTER, {"a1": a1, "a2": a2, "b1": b1, "b2": b2t, "bm": bm})
    ref = np.zeros((out_f, in_f, 3, 3))
    for m in range(r):
        for n in range(r):
            ref += bm[m, n][None, None] * np.outer(b1[:, m, 0, 0], b2t[n, :, 0, 0])[:, :, None, None]
    assert t.kernel == (3, 3)
    np.testing.assert_allclose(dense_of(t.operator), ref.reshape(out_f, -1), atol=1e-12)
    assert_spectrum(sv_of(t.operator), dense_sv(ref.reshape(out_f, -1)))


def test_glora_old_layout():
    rng = np.random.default_rng(62)
    out_f, in_f, r = 6, 5, 2
    a1, a2 = rng.standard_normal((r, in_f)), rng.standard_normal((in_f, r))
    b1, b2 = rng.standard_normal((r, in_f)), rng.standard_normal((out_f, r))
    a = run(glora.ADAPTER, {"a1": a1, "a2": a2, "b1": b1, "b2": b2, "alpha": np.array(4.0)})
    assert a.extra["layout"] == "lycoris-old" and a.rank == r and a.scale == pytest.approx(2.0)
    assert (a.in_features, a.out_features) == (in_f, out_f)
    assert_spectrum(sv_of(a.operator), dense_sv(b2 @ b1))
    assert_spectrum(np.array(a.extra["relative_singular_values"]), dense_sv(2.0 * a2 @ a1))


def test_glora_square_ambiguity_prefers_small_rank():
    rng = np.random.default_rng(63)
    d, r = 6, 2
    new = {"a1": rng.standard_normal((d, r)), "a2": rng.standard_normal((r, d)),
           "b1": rng.standard_normal((d, r)), "b2": rng.standard_normal((r, d))}
    a = run(glora.ADAPTER, new)
    assert a.extra["layout"] == "lycoris" and a.rank == r and "layout_note" in a.extra
    assert_spectrum(sv_of(a.operator), dense_sv(new["b1"] @ new["b2"]))


@pytest.mark.parametrize("parts,code", [
    ({"a1": np.ones((4, 2)), "a2": np.ones((2, 4)), "b1": np.ones((5, 2))}, "LA206"),
    ({"a1": np.ones((4, 2)), "a2": np.ones((3, 4)), "b1": np.ones((5, 2)), "b2": np.ones((2, 4))}, "LA207"),
    ({"a1": np.ones((4, 2)), "a2": np.ones((2, 4)), "b1": np.ones((5, 2)), "b2": np.ones((0, 4))}, "LA207"),
    ({"a1": np.ones(4), "a2": np.ones((2, 4)), "b1": np.ones((5, 2)), "b2": np.ones((2, 4))}, "LA207"),
    ({"a1": np.ones((4, 2, 3, 3)), "a2": np.ones((2, 4, 1, 1)), "b1": np.ones((5, 2)),
      "b2": np.ones((2, 4))}, "LA207"),
    ({"a1": np.ones((4, 2)), "a2": np.ones((2, 4)), "b1": np.ones((5, 2)), "b2": np.ones((2, 4, 3, 3)),
      "bm": np.ones((2, 2, 3, 3))}, "LA207"),
])
def test_glora_hostile(parts, code):
    a = run(glora.ADAPTER, parts)
    assert code in codes(a) and a.operator is None


def test_overflowing_factors_give_findings_not_infinite_spectra():
    big = np.full((3, 3), 1e200)
    a = run(full.ADAPTER, {"diff": big})
    assert a.operator is None and "LA209" in codes(a)
    g = run(glora.ADAPTER, {"a1": np.ones((3, 1)), "a2": np.ones((1, 3)), "b1": np.full((3, 1), 1e200),
                            "b2": np.full((1, 3), 1e200)})
    assert g.operator is None and "LA209" in codes(g)
    assert g.extra["relative_singular_values"] == [pytest.approx(3.0)]
    t = run(textual_inversion.ADAPTER, {"embedding": big})
    assert t.operator is None and "LA209" in codes(t)
    o = run(oft.ADAPTER, {"oft_blocks": np.zeros((1, 2, 2)), "rescale": np.array([1e308, 1e308])})
    assert o.operator is None and "LA209" in codes(o)


# ---------------------------------------------------------------------------------------------------------
# torch backend agreement


def test_torch_backend_agrees():
    torch = pytest.importorskip("torch")  # noqa: F841
    rng = np.random.default_rng(70)
    ops = [
        run(full.ADAPTER, {"diff": rng.standard_normal((6, 4, 3, 3))}).operator,
        run(textual_inversion.ADAPTER, {"embedding": rng.standard_normal((3, 16))}).operator,
        run(oft.ADAPTER, {"oft_blocks": rng.standard_normal((4, 3, 3))}).operator,
        run(boft.ADAPTER, {"oft_blocks": 0.3 * rng.standard_normal((3, 4, 4, 4))}).operator,
        run(glora.ADAPTER, {"a1": rng.standard_normal((5, 2)), "a2": rng.standard_normal((2, 5)),
                            "b1": rng.standard_normal((7, 2)), "b2": rng.standard_normal((2, 5))}).operator,
    ]
    ref = singular_values(ops)
    got = singular_values(ops, Backend("cpu-torch"))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-10 * max(r[0], 1.0))


# ---------------------------------------------------------------------------------------------------------
# hostile shapes, fuzzed: findings, never exceptions

_ADAPTERS = [full.ADAPTER, ia3.ADAPTER, oft.ADAPTER, boft.ADAPTER, glora.ADAPTER, norm.ADAPTER,
             textual_inversion.ADAPTER]
_shape = st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple)
_values = st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e6, 1e300, -1e300, np.nan, np.inf])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_shapes_never_raise(data):
    adapter = data.draw(st.sampled_from(_ADAPTERS))
    roles = data.draw(st.lists(st.sampled_from(sorted(adapter.owns)), min_size=1, unique=True))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    parts = {}
    for role in roles:
        shape = data.draw(_shape)
        arr = rng.standard_normal(shape) if math.prod(shape) else np.zeros(shape)
        if math.prod(shape) and data.draw(st.booleans()):
            arr.reshape(-1)[0] = data.draw(_values)
        parts[role] = arr
    a = run(adapter, parts)
    for f in a.findings:
        assert f.code.startswith("LA2")
    if a.operator is not None:
        (sv,) = singular_values([a.operator])
        assert np.all(np.isfinite(sv))


@pytest.mark.parametrize("m,n,b", [(1, 4, 4), (2, 4, 4), (3, 4, 4), (4, 8, 2), (2, 8, 4), (1, 2, 3), (2, 4, 3),
                                   (2, 8, 3)])
def test_boft_butterfly_blocks_assemble_the_dense_product(m, n, b):
    """The chunk-by-chunk product equals the dense Π P_iᵀ blockdiag(R_i) P_i, odd block sizes included."""
    size = n * b
    assert not any(size % (2 * k) for k in boft.stage_spans(m, b))  # a valid butterfly
    rng = np.random.default_rng(m * 100 + n * 10 + b)
    blocks = 0.4 * rng.standard_normal((m, n, b, b))
    r = np.stack([[cayley_ref(blocks[i, d]) for d in range(n)] for i in range(m)])
    got = boft.butterfly_blocks(r)
    assert got.shape[-1] == (min(size, 2 ** (m - 1) * b) if b % 2 == 0 else size)
    np.testing.assert_allclose(scipy.linalg.block_diag(*got), boft_reference(blocks), rtol=0, atol=1e-13)
