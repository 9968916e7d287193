"""Factor-based adapter kinds (lora, locon, lora-tucker, loha, lokr, dora) and the scale conventions.

Every spectrum is checked against a dense float64 ΔW built here, independently of the adapter modules, in the
true weight layout ([out, in] for linear layers, [out, in, kh, kw] for convolutions, flattened to
[out, in·kh·kw] only for the SVD).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.adapters import _MODULES, dora, locon, loha, lokr, lora, lora_tucker
from audit.adapters.base import LayerGroup, ScaleContext
from audit.adapters.scale import effective_scale, match_pattern, read_alpha
from audit.spectra import Backend, singular_values

MINE = (dora, lora_tucker, locon, lora, loha, lokr)


# ---------------------------------------------------------------------------------------------------------
# an in-memory TensorSource and a local detector over this file's kinds


class DictSource:
    def __init__(self, tensors: dict[str, np.ndarray]):
        self.t = {k: np.asarray(v) for k, v in tensors.items()}
        self.reads: list[str] = []

    def shape(self, name):
        return tuple(self.t[name].shape)

    def dtype(self, name):
        return "F64"

    def array(self, name):
        self.reads.append(name)
        return np.asarray(self.t[name], dtype=np.float64)


def layer(parts: dict[str, np.ndarray], module="down_blocks.0.attn.to_k", fmt="kohya"):
    names = {role: f"{module}.{role}" for role in parts}
    group = LayerGroup(key=f"unet:{module}", component="unet", module=module, parts=names, format=fmt)
    src = DictSource({names[r]: v for r, v in parts.items()})
    return group, src


def detect(group, src):
    roles = set(group.parts)
    shapes = {r: src.shape(n) for r, n in group.parts.items()}
    for a in sorted((m.ADAPTER for m in MINE), key=lambda a: a.priority):
        if a.detects & roles and a.accepts(roles, shapes):
            return a
    return None


def analyse(parts, ctx=None, **kw):
    group, src = layer(parts, **kw)
    adapter = detect(group, src)
    assert adapter is not None
    return adapter.analyse(group, src, ctx or ScaleContext())


def codes(analysis):
    return [f.code for f in analysis.findings]


# ---------------------------------------------------------------------------------------------------------
# dense references (independent of the modules under test)


def dense_lora(up, down):
    """ΔW in the weight layout: [out, in] or [out, in, kh, kw]."""
    up2 = up.reshape(up.shape[0], up.shape[1])
    if down.ndim == 2:
        return np.einsum("or,ri->oi", up2, down)
    return np.einsum("or,rihw->oihw", up2, down)


def dense_tucker(up, mid, down):
    up2 = up.reshape(up.shape[0], up.shape[1])
    down2 = down.reshape(down.shape[0], down.shape[1])
    out = np.zeros((up2.shape[0], down2.shape[1]) + mid.shape[2:])
    for m in range(mid.shape[0]):
        for n in range(mid.shape[1]):
            out += mid[m, n][None, None] * np.outer(up2[:, m], down2[n, :])[:, :, None, None]
    return out


def dense_loha(w1a, w1b, w2a, w2b):
    return (w1a @ w1b) * (w2a @ w2b)


def dense_loha_tucker(t1, w1a, w1b, t2, w2a, w2b):
    f1 = np.einsum("ijhw,io,jc->ochw", t1, w1a, w1b)
    f2 = np.einsum("ijhw,io,jc->ochw", t2, w2a, w2b)
    return f1 * f2


def dense_kron4(w1, w2):
    """ΔW[i·c + p, j·d + q, h, w] = w1[i, j]·w2[p, q, h, w], by explicit loops over w1."""
    a, b = w1.shape
    c, d = w2.shape[:2]
    out = np.zeros((a * c, b * d) + w2.shape[2:])
    for i in range(a):
        for j in range(b):
            out[i * c:(i + 1) * c, j * d:(j + 1) * d] = w1[i, j] * w2
    return out


def flat(dw):
    return dw.reshape(dw.shape[0], -1)


def check_spectrum(analysis, dense, expected_len, scale=None):
    """Operator spectrum × |scale| against the SVD of scale·ΔW (dense reference)."""
    s = analysis.scale if scale is None else scale
    assert analysis.operator is not None
    M = flat(dense) * s
    ref = np.linalg.svd(M, compute_uv=False)
    sv = singular_values([analysis.operator])[0] * abs(analysis.scale)
    assert len(sv) == expected_len
    top = ref[0]
    np.testing.assert_allclose(sv, ref[:expected_len], rtol=1e-10, atol=1e-12 * top)
    assert np.all(ref[expected_len:] <= 1e-10 * top)
    np.testing.assert_allclose(math.sqrt(float(np.sum(sv**2))), np.linalg.norm(M), rtol=1e-10)
    assert analysis.operator.shape == M.shape
    # the same operator through the torch backend (float64 on the CPU)
    sv_t = singular_values([analysis.operator], Backend("cpu-torch"))[0] * abs(analysis.scale)
    np.testing.assert_allclose(sv_t, sv, rtol=0, atol=1e-10 * max(top, 1e-300))
    return sv


def rng_for(*seed):
    return np.random.default_rng(list(seed))


# ---------------------------------------------------------------------------------------------------------
# registration


def test_priorities_follow_modules_order():
    for m in MINE:
        name = m.__name__.rsplit(".", 1)[1]
        assert m.ADAPTER.priority == _MODULES.index(name) * 10
    assert [m.ADAPTER.kind for m in MINE] == ["dora", "lora-tucker", "locon", "lora", "loha", "lokr"]


def test_registry_detection_when_all_kinds_exist():
    from audit.adapters import detect as registry_detect

    rng = rng_for(0)
    group, src = layer({"lora_down": rng.normal(size=(4, 8, 3, 3)), "lora_up": rng.normal(size=(6, 4, 1, 1))})
    shapes = {r: src.shape(n) for r, n in group.parts.items()}
    try:
        found = registry_detect(group, shapes)
    except ImportError:
        pytest.skip("not every adapter module exists yet")
    assert found.kind == "locon"


# ---------------------------------------------------------------------------------------------------------
# LoRA


@pytest.mark.parametrize(
    "out,inp,r",
    [(6, 5, 2), (5, 7, 1), (4, 3, 8), (16, 12, 12), (9, 9, 9)],  # includes rank 1 and rank > min dim
)
def test_lora_linear(out, inp, r):
    rng = rng_for(out, inp, r)
    up, down = rng.normal(size=(out, r)), rng.normal(size=(r, inp))
    a = analyse({"lora_up": up, "lora_down": down, "alpha": np.array(2.0)})
    assert (a.kind, a.rank, a.out_features, a.in_features, a.kernel) == ("lora", r, out, inp, ())
    assert (a.alpha, a.scale, a.scale_rule) == (2.0, 2.0 / r, "alpha/rank")
    assert a.delta_basis == "exact" and a.findings == []
    check_spectrum(a, dense_lora(up, down), min(out, inp, r))


def test_lora_1x1_conv_is_lora():
    rng = rng_for(1)
    up, down = rng.normal(size=(10, 3, 1, 1)), rng.normal(size=(3, 7, 1, 1))
    a = analyse({"lora_up": up, "lora_down": down})
    assert (a.kind, a.kernel, a.out_features, a.in_features) == ("lora", (1, 1), 10, 7)
    assert (a.scale, a.scale_rule) == (1.0, "missing-alpha=>1")
    check_spectrum(a, dense_lora(up, down), 3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(out=st.integers(1, 9), inp=st.integers(1, 9), r=st.integers(1, 10), conv=st.booleans(),
       kh=st.integers(1, 3), kw=st.integers(1, 3), alpha=st.floats(0.5, 64), seed=st.integers(0, 2**16))
def test_lora_locon_shape_space(out, inp, r, conv, kh, kw, alpha, seed):
    rng = rng_for(seed)
    if conv:
        down, up = rng.normal(size=(r, inp, kh, kw)), rng.normal(size=(out, r, 1, 1))
    else:
        down, up = rng.normal(size=(r, inp)), rng.normal(size=(out, r))
    a = analyse({"lora_up": up, "lora_down": down, "alpha": np.array(alpha, dtype=np.float32)})
    assert a.kind == ("locon" if conv and kh * kw > 1 else "lora")
    assert a.kernel == ((kh, kw) if conv else ())
    np.testing.assert_allclose(a.scale, float(np.float32(alpha)) / r, rtol=1e-12)
    cols = inp * (kh * kw if conv else 1)
    check_spectrum(a, dense_lora(up, down), min(out, cols, r))


def test_lora_up_bias_norm_reported():
    rng = rng_for(2)
    bias = rng.normal(size=6)
    a = analyse({"lora_up": rng.normal(size=(6, 2)), "lora_down": rng.normal(size=(2, 5)), "lora_up_bias": bias},
                ctx=ScaleContext(convention="unit"))
    assert a.extra["up_bias_norm"] == pytest.approx(math.sqrt(float(bias @ bias)), rel=1e-12)
    assert (a.scale, a.scale_rule) == (1.0, "unit")
    bad = analyse({"lora_up": rng.normal(size=(6, 2)), "lora_down": rng.normal(size=(2, 5)),
                   "lora_up_bias": rng.normal(size=7)})
    assert "LA207" in codes(bad) and bad.operator is not None  # a bad bias does not hide the spectrum


def test_lora_rank_mismatch_gives_la204_and_no_operator():
    rng = rng_for(3)
    group, src = layer({"lora_up": rng.normal(size=(6, 3)), "lora_down": rng.normal(size=(4, 5))})
    a = lora.ADAPTER.analyse(group, src, ScaleContext())
    assert "LA204" in codes(a) and a.operator is None
    assert not any(n.endswith(("lora_up", "lora_down")) for n in src.reads)  # no factor was even read


def test_lora_missing_tensor_gives_la206():
    rng = rng_for(4)
    a = analyse({"lora_down": rng.normal(size=(4, 5)), "alpha": np.array(4.0)})
    assert a.kind == "lora" and "LA206" in codes(a) and a.operator is None
    assert a.rank == 4


def test_lora_bad_up_shape_gives_la207():
    rng = rng_for(5)
    a = analyse({"lora_up": rng.normal(size=(6, 2, 3, 3)), "lora_down": rng.normal(size=(2, 5))})
    assert "LA207" in codes(a) and a.operator is None


def test_non_finite_factor_gives_no_operator():
    rng = rng_for(6)
    up = rng.normal(size=(6, 2))
    up[1, 1] = np.nan
    a = analyse({"lora_up": up, "lora_down": rng.normal(size=(2, 5))})
    assert a.operator is None and "NaN" in a.extra["spectrum_skipped"]


# ---------------------------------------------------------------------------------------------------------
# LoCon and LoRA-Tucker


@pytest.mark.parametrize("out,inp,r,kh,kw", [(8, 4, 3, 3, 3), (5, 6, 2, 1, 3), (3, 2, 7, 3, 3), (4, 4, 1, 5, 5)])
def test_locon(out, inp, r, kh, kw):
    rng = rng_for(out, inp, r, kh, kw)
    down, up = rng.normal(size=(r, inp, kh, kw)), rng.normal(size=(out, r, 1, 1))
    a = analyse({"lora_up": up, "lora_down": down, "alpha": np.array(1.0)})
    assert (a.kind, a.kernel, a.out_features, a.in_features, a.rank) == ("locon", (kh, kw), out, inp, r)
    check_spectrum(a, dense_lora(up, down), min(out, inp * kh * kw, r))


def test_locon_accepts_only_spatial_kernels():
    acc = locon.ADAPTER.accepts
    assert acc({"lora_down", "lora_up"}, {"lora_down": (4, 8, 3, 3), "lora_up": (8, 4, 1, 1)})
    assert not acc({"lora_down", "lora_up"}, {"lora_down": (4, 8, 1, 1), "lora_up": (8, 4, 1, 1)})
    assert not acc({"lora_down", "lora_up"}, {"lora_down": (4, 8), "lora_up": (8, 4)})
    assert not acc({"lora_down", "lora_up", "lora_mid"}, {"lora_down": (4, 8, 3, 3), "lora_mid": (4, 4, 3, 3)})


@pytest.mark.parametrize("out,inp,r,kh,kw", [(8, 6, 3, 3, 3), (4, 5, 6, 3, 3), (7, 3, 1, 3, 1), (2, 9, 4, 3, 3)])
def test_lora_tucker(out, inp, r, kh, kw):
    rng = rng_for(out, inp, r, kh, kw, 7)
    down = rng.normal(size=(r, inp, 1, 1))
    mid = rng.normal(size=(r, r, kh, kw))
    up = rng.normal(size=(out, r, 1, 1))
    a = analyse({"lora_up": up, "lora_mid": mid, "lora_down": down, "alpha": np.array(3.0)})
    assert (a.kind, a.kernel, a.out_features, a.in_features, a.rank) == ("lora-tucker", (kh, kw), out, inp, r)
    assert a.scale == pytest.approx(3.0 / r)
    check_spectrum(a, dense_tucker(up, mid, down), min(out, inp * kh * kw, r))


def test_lora_tucker_index_convention_is_not_transposed():
    """mid[m, n] pairs up's column m with down's row n; the transposed core gives a different ΔW."""
    rng = rng_for(8)
    r, kh, kw = 3, 3, 3
    down, up = rng.normal(size=(r, 4, 1, 1)), rng.normal(size=(5, r, 1, 1))
    mid = rng.normal(size=(r, r, kh, kw))
    a = analyse({"lora_up": up, "lora_mid": mid, "lora_down": down})
    right = np.linalg.svd(flat(dense_tucker(up, mid, down)), compute_uv=False)
    wrong = np.linalg.svd(flat(dense_tucker(up, mid.transpose(1, 0, 2, 3), down)), compute_uv=False)
    sv = singular_values([a.operator])[0]
    np.testing.assert_allclose(sv, right[: len(sv)], rtol=1e-10)
    assert not np.allclose(sv, wrong[: len(sv)], rtol=1e-6)


def test_lora_tucker_rank_mismatch():
    rng = rng_for(9)
    a = analyse({"lora_up": rng.normal(size=(5, 3, 1, 1)), "lora_mid": rng.normal(size=(3, 2, 3, 3)),
                 "lora_down": rng.normal(size=(4, 4, 1, 1))})
    assert a.kind == "lora-tucker" and "LA204" in codes(a) and a.operator is None


# ---------------------------------------------------------------------------------------------------------
# LoHa


@pytest.mark.parametrize(
    "out,inp,r1,r2",
    [(7, 5, 2, 3), (6, 6, 1, 1), (10, 12, 3, 2), (4, 9, 4, 4), (12, 11, 2, 5)],  # r1 ≠ r2; r1·r2 > min dim
)
def test_loha_linear(out, inp, r1, r2):
    rng = rng_for(out, inp, r1, r2)
    w1a, w1b = rng.normal(size=(out, r1)), rng.normal(size=(r1, inp))
    w2a, w2b = rng.normal(size=(out, r2)), rng.normal(size=(r2, inp))
    a = analyse({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": np.array(1.5)})
    assert (a.kind, a.rank, a.out_features, a.in_features) == ("loha", r1, out, inp)
    assert a.scale == pytest.approx(1.5 / r1) and a.scale_rule == "alpha/rank"
    assert (a.extra["r1"], a.extra["r2"], a.extra["rank_bound"]) == (r1, r2, r1 * r2)
    check_spectrum(a, dense_loha(w1a, w1b, w2a, w2b), min(out, inp, r1 * r2))


@pytest.mark.parametrize("stored_4d", [False, True])
def test_loha_conv_plain(stored_4d):
    rng = rng_for(10, stored_4d)
    out, inp, kh, kw, r1, r2 = 6, 3, 3, 3, 2, 3
    w1a, w2a = rng.normal(size=(out, r1)), rng.normal(size=(out, r2))
    b1, b2 = rng.normal(size=(r1, inp, kh, kw)), rng.normal(size=(r2, inp, kh, kw))
    dense = dense_loha(w1a, b1.reshape(r1, -1), w2a, b2.reshape(r2, -1)).reshape(out, inp, kh, kw)
    parts = {"hada_w1_a": w1a, "hada_w2_a": w2a,
             "hada_w1_b": b1 if stored_4d else b1.reshape(r1, -1),
             "hada_w2_b": b2 if stored_4d else b2.reshape(r2, -1)}
    a = analyse(parts)
    if stored_4d:
        assert (a.kernel, a.in_features) == ((kh, kw), inp)
    else:
        assert (a.kernel, a.in_features, a.extra["in_includes_kernel"]) == ((), inp * kh * kw, True)
    check_spectrum(a, dense, min(out, inp * kh * kw, r1 * r2))


@pytest.mark.parametrize("out,inp,r1,r2,kh,kw", [(6, 4, 2, 3, 3, 3), (5, 5, 3, 3, 3, 3), (3, 2, 2, 1, 1, 3)])
def test_loha_tucker(out, inp, r1, r2, kh, kw):
    rng = rng_for(out, inp, r1, r2, kh, kw, 11)
    t1, t2 = rng.normal(size=(r1, r1, kh, kw)), rng.normal(size=(r2, r2, kh, kw))
    w1a, w1b = rng.normal(size=(r1, out)), rng.normal(size=(r1, inp))
    w2a, w2b = rng.normal(size=(r2, out)), rng.normal(size=(r2, inp))
    a = analyse({"hada_t1": t1, "hada_t2": t2, "hada_w1_a": w1a, "hada_w1_b": w1b,
                 "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": np.array(4.0)})
    assert (a.kind, a.kernel, a.out_features, a.in_features, a.rank) == ("loha", (kh, kw), out, inp, r1)
    assert a.extra["tucker"] and a.extra["rank_bound"] == r1 * r2
    check_spectrum(a, dense_loha_tucker(t1, w1a, w1b, t2, w2a, w2b), min(out, inp * kh * kw, r1 * r2))


def test_loha_shape_findings():
    rng = rng_for(12)
    base = {"hada_w1_a": rng.normal(size=(6, 2)), "hada_w1_b": rng.normal(size=(2, 5)),
            "hada_w2_a": rng.normal(size=(6, 3)), "hada_w2_b": rng.normal(size=(3, 5))}
    a = analyse({**base, "hada_w2_b": rng.normal(size=(2, 5))})
    assert "LA204" in codes(a) and a.operator is None
    a = analyse({**base, "hada_w2_a": rng.normal(size=(7, 3))})
    assert "LA207" in codes(a) and a.operator is None
    a = analyse({k: v for k, v in base.items() if k != "hada_w2_b"})
    assert "LA206" in codes(a) and a.operator is None and a.rank == 2
    a = analyse({**base, "hada_t1": rng.normal(size=(2, 2, 3, 3))})  # Tucker core without its partner
    assert "LA206" in codes(a) and a.operator is None


def test_loha_operator_size_is_bounded(monkeypatch):
    monkeypatch.setattr(lora, "MAX_OPERATOR_ELEMENTS", 100)
    rng = rng_for(13)
    a = analyse({"hada_w1_a": rng.normal(size=(6, 4)), "hada_w1_b": rng.normal(size=(4, 5)),
                 "hada_w2_a": rng.normal(size=(6, 4)), "hada_w2_b": rng.normal(size=(4, 5))})
    assert a.operator is None and "limit 100" in a.extra["spectrum_skipped"]


# ---------------------------------------------------------------------------------------------------------
# LoKr


def lokr_parts(rng, a, b, c, d, kernel, w1_mode, w2_mode, r):
    """Factor tensors for one LoKr layer and its dense ΔW (weight layout)."""
    parts: dict[str, np.ndarray] = {}
    if w1_mode == "full":
        w1 = rng.normal(size=(a, b))
        parts["lokr_w1"] = w1
    else:
        w1a, w1b = rng.normal(size=(a, r)), rng.normal(size=(r, b))
        parts["lokr_w1_a"], parts["lokr_w1_b"] = w1a, w1b
        w1 = w1a @ w1b
    if w2_mode == "full":
        w2 = rng.normal(size=(c, d, *kernel))
        parts["lokr_w2"] = w2
    elif w2_mode == "low-rank":
        w2a, w2b = rng.normal(size=(c, r)), rng.normal(size=(r, d, *kernel))
        parts["lokr_w2_a"], parts["lokr_w2_b"] = w2a, w2b.reshape(r, -1)
        w2 = np.einsum("cr,rd...->cd...", w2a, w2b)
    else:  # tucker
        t2 = rng.normal(size=(r, r, *kernel))
        w2a, w2b = rng.normal(size=(r, c)), rng.normal(size=(r, d))
        parts["lokr_t2"], parts["lokr_w2_a"], parts["lokr_w2_b"] = t2, w2a, w2b
        w2 = np.einsum("ij...,ip,jq->pq...", t2, w2a, w2b)
    dense = np.kron(w1, w2) if not kernel else dense_kron4(w1, w2)
    return parts, dense


def lokr_len(a, b, c, cols, w1_mode, w2_mode, r):
    left = min(a, b) if w1_mode == "full" else min(a, b, r)
    right = min(c, cols) if w2_mode == "full" else min(c, cols, r)
    return left * right


@pytest.mark.parametrize("w1_mode", ["full", "low-rank"])
@pytest.mark.parametrize("w2_mode,kernel", [("full", ()), ("low-rank", ()), ("full", (3, 3)),
                                             ("low-rank", (3, 3)), ("tucker", (3, 3)), ("tucker", (1, 3))])
def test_lokr_combinations(w1_mode, w2_mode, kernel):
    rng = rng_for(len(w1_mode), len(w2_mode), len(kernel))
    a_, b_, c_, d_, r = 2, 3, 5, 4, 2
    parts, dense = lokr_parts(rng, a_, b_, c_, d_, kernel, w1_mode, w2_mode, r)
    an = analyse({**parts, "alpha": np.array(3.0)})
    assert an.kind == "lokr"
    assert (an.out_features, an.kernel) == (a_ * c_, kernel if w2_mode != "low-rank" else ())
    assert an.extra["w1"] == w1_mode and an.extra["w2"] == w2_mode
    both_full = w1_mode == "full" and w2_mode == "full"
    if both_full:
        assert (an.scale, an.scale_rule, an.rank) == (1.0, "lokr-full=>1", None)
        assert an.extra["alpha_ignored"]
    else:
        assert (an.scale, an.scale_rule, an.rank) == (3.0 / r, "alpha/rank", r)
    cols = d_ * math.prod(kernel)
    n = lokr_len(a_, b_, c_, cols, w1_mode, w2_mode, r)
    assert an.extra["rank_bound"] == n
    check_spectrum(an, dense, n)


def test_lokr_w2b_stored_4d_keeps_kernel():
    rng = rng_for(14)
    w1 = rng.normal(size=(2, 2))
    w2a, w2b = rng.normal(size=(3, 2)), rng.normal(size=(2, 4, 3, 3))
    a = analyse({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b})
    assert (a.kernel, a.in_features) == ((3, 3), 8)
    check_spectrum(a, dense_kron4(w1, np.einsum("cr,rdhw->cdhw", w2a, w2b)), 2 * 2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=st.integers(1, 4), b=st.integers(1, 4), c=st.integers(1, 6), d=st.integers(1, 6), r=st.integers(1, 5),
       w1_mode=st.sampled_from(["full", "low-rank"]), w2_mode=st.sampled_from(["full", "low-rank", "tucker"]),
       kernel=st.sampled_from([(), (3, 3), (1, 1), (2, 3)]), seed=st.integers(0, 2**16))
def test_lokr_shape_space(a, b, c, d, r, w1_mode, w2_mode, kernel, seed):
    if w2_mode == "tucker" and not kernel:
        kernel = (3, 3)
    rng = rng_for(seed)
    parts, dense = lokr_parts(rng, a, b, c, d, kernel, w1_mode, w2_mode, r)
    an = analyse({**parts, "alpha": np.array(2.0)})
    assert (an.out_features, an.kind) == (a * c, "lokr")
    assert an.operator.shape == flat(dense).shape
    check_spectrum(an, dense, lokr_len(a, b, c, d * math.prod(kernel), w1_mode, w2_mode, r))


def test_lokr_findings():
    rng = rng_for(15)
    a = analyse({"lokr_w1_a": rng.normal(size=(2, 2)), "lokr_w1_b": rng.normal(size=(3, 3)),
                 "lokr_w2": rng.normal(size=(4, 4))})
    assert "LA204" in codes(a) and a.operator is None
    a = analyse({"lokr_w1": rng.normal(size=(2, 3)), "lokr_w2_a": rng.normal(size=(4, 2))})
    assert "LA206" in codes(a) and a.operator is None
    a = analyse({"lokr_w2": rng.normal(size=(4, 4))})
    assert "LA206" in codes(a) and a.operator is None
    a = analyse({"lokr_w1": rng.normal(size=(2, 3)), "lokr_t2": rng.normal(size=(2, 3, 3, 3)),
                 "lokr_w2_a": rng.normal(size=(2, 4)), "lokr_w2_b": rng.normal(size=(2, 4))})
    assert "LA204" in codes(a) and a.operator is None


# ---------------------------------------------------------------------------------------------------------
# DoRA


def magnitude_stats(m):
    m = np.asarray(m, dtype=np.float64).ravel()
    return {"min": m.min(), "max": m.max(), "mean": m.mean(), "norm": np.sqrt(np.sum(m * m))}


@pytest.mark.parametrize(
    "mshape,fmt,axis",
    [
        ("out,1", "kohya", "row"),
        ("1,in", "onetrainer", "column"),
        ("out", "diffusers-peft", "row"),
    ],
)
def test_dora_linear_axes(mshape, fmt, axis):
    rng = rng_for(16, len(mshape))
    out, inp, r = 7, 5, 3
    up, down = rng.normal(size=(out, r)), rng.normal(size=(r, inp))
    shape = tuple({"out": out, "in": inp, "1": 1}[p] for p in mshape.split(","))
    m = np.abs(rng.normal(size=shape)) + 0.5
    a = analyse({"lora_up": up, "lora_down": down, "alpha": np.array(1.5), "dora_scale": m}, fmt=fmt)
    assert a.kind == "dora" and a.extra["wraps"] == "lora"
    assert a.delta_basis == "direction"
    assert a.extra["magnitude_axis"] == axis and a.extra["magnitude_shape"] == list(shape)
    for k, v in magnitude_stats(m).items():
        assert a.extra["magnitude"][k] == pytest.approx(v, rel=1e-12)
    assert "LA208" in codes(a) and "LA207" not in codes(a)
    assert any("needs the base weight W" in u for u in a.unknowable)
    assert a.scale == pytest.approx(1.5 / r)
    check_spectrum(a, dense_lora(up, down), min(out, inp, r))


@pytest.mark.parametrize("mshape,fmt,axis", [((6, 1, 1, 1), "kohya", "row"), ((1, 4, 1, 1), "kohya", "column"),
                                             ((1, 6, 1, 1), "peft", "row")])
def test_dora_conv_axes(mshape, fmt, axis):
    rng = rng_for(17, *mshape)
    down, up = rng.normal(size=(2, 4, 3, 3)), rng.normal(size=(6, 2, 1, 1))
    a = analyse({"lora_up": up, "lora_down": down, "dora_scale": np.ones(mshape)}, fmt=fmt)
    assert (a.kind, a.extra["wraps"], a.kernel, a.extra["magnitude_axis"]) == ("dora", "locon", (3, 3), axis)
    check_spectrum(a, dense_lora(up, down), 2)


def test_dora_wraps_loha_and_lokr():
    rng = rng_for(18)
    w1a, w1b, w2a, w2b = (rng.normal(size=s) for s in ((6, 2), (2, 5), (6, 3), (3, 5)))
    a = analyse({"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                 "dora_scale": np.ones((6, 1))})
    assert (a.kind, a.extra["wraps"], a.extra["magnitude_axis"]) == ("dora", "loha", "row")
    check_spectrum(a, dense_loha(w1a, w1b, w2a, w2b), 5)
    parts, dense = lokr_parts(rng, 2, 3, 4, 2, (), "full", "low-rank", 2)
    a = analyse({**parts, "dora_scale": np.ones((1, 6))})
    assert (a.kind, a.extra["wraps"], a.extra["magnitude_axis"]) == ("dora", "lokr", "column")
    check_spectrum(a, dense, lokr_len(2, 3, 4, 2, "full", "low-rank", 2))


def test_dora_bad_axis_and_missing_direction():
    rng = rng_for(19)
    a = analyse({"lora_up": rng.normal(size=(6, 2)), "lora_down": rng.normal(size=(2, 5)),
                 "dora_scale": np.ones((3, 1))})
    assert a.extra["magnitude_axis"] == "unknown" and "LA207" in codes(a)
    assert a.operator is not None  # the direction spectrum does not depend on the magnitude
    a = analyse({"dora_scale": np.ones((6, 1)), "alpha": np.array(1.0)})
    assert a.kind == "dora" and a.operator is None and "LA206" in codes(a) and "LA208" in codes(a)


# ---------------------------------------------------------------------------------------------------------
# scale conventions


def test_kohya_scale_rules():
    assert effective_scale("lora", 8, 4.0, ScaleContext(), "m") == (0.5, "alpha/rank", [])
    assert effective_scale("lora", 8, None, ScaleContext(), "m") == (1.0, "missing-alpha=>1", [])
    assert effective_scale("lora", 8, 0.0, ScaleContext(), "m") == (1.0, "alpha=0=>1", [])
    assert effective_scale("lora", None, 4.0, ScaleContext(), "m")[:2] == (1.0, "no-rank=>1")
    assert effective_scale("lokr", 4, 8.0, ScaleContext(), "m", factors_decomposed=False)[:2] == (1.0, "lokr-full=>1")
    assert effective_scale("lokr", 4, 8.0, ScaleContext(), "m", factors_decomposed=True)[:2] == (2.0, "alpha/rank")
    assert effective_scale("lora", 4, None, ScaleContext(convention="unit"), "m")[:2] == (1.0, "unit")
    assert effective_scale("oft", 4, 1e-3, ScaleContext(), "m")[:2] == (1.0, "alpha-not-scale=>1")


def test_peft_scale_rules_and_patterns():
    ctx = ScaleContext(convention="peft", lora_alpha=16, r=8, source="metadata:lora_adapter_metadata")
    assert effective_scale("lora", 8, None, ctx, "blocks.0.attn.to_q")[:2] == (2.0, "peft lora_alpha/r")
    rs = ScaleContext(convention="peft", lora_alpha=16, r=8, use_rslora=True)
    s, rule, _ = effective_scale("lora", 8, None, rs, "to_q")
    assert (s, rule) == (pytest.approx(16 / math.sqrt(8)), "peft lora_alpha/sqrt(r)")
    pat = ScaleContext(convention="peft", lora_alpha=16, r=8, rank_pattern={"to_k": 4, "0.attn.to_k": 2},
                       alpha_pattern={"attn.to_k": 6})
    # longest suffix wins; "0.attn.to_k" (r=2) beats "to_k" (r=4)
    assert effective_scale("lora", 2, None, pat, "blocks.0.attn.to_k")[:2] == (3.0, "peft lora_alpha/r")
    assert effective_scale("lora", 4, None, pat, "blocks.1.attn.to_k")[:2] == (1.5, "peft lora_alpha/r")
    # suffixes match at a "." boundary only, and patterns are literal text, not regular expressions
    assert effective_scale("lora", 8, None, pat, "blocks.1.attn.xto_k")[:2] == (2.0, "peft lora_alpha/r")
    assert match_pattern({".*": 1}, "a.b") is None
    # a stored per-layer rank differing from the config's: LA211
    s, rule, fs = effective_scale("lora", 16, None, ctx, "to_v")
    assert s == 2.0 and [f.code for f in fs] == ["LA211"]
    assert effective_scale("lora", 8, None, ScaleContext(convention="peft"), "m")[:2] == (1.0, "peft no-config=>1")


def test_peft_scale_through_an_adapter():
    rng = rng_for(20)
    ctx = ScaleContext(convention="peft", lora_alpha=8, r=4, rank_pattern={"to_out.0": 2},
                       alpha_pattern={"to_out.0": 1})
    a = analyse({"lora_up": rng.normal(size=(5, 2)), "lora_down": rng.normal(size=(2, 6))}, ctx=ctx,
                module="blocks.3.attn.to_out.0", fmt="diffusers-peft")
    assert (a.scale, a.scale_rule, a.alpha) == (0.5, "peft lora_alpha/r", 1.0)


@pytest.mark.parametrize("bad", [np.array(np.nan), np.array(-1.0), np.array([1.0, 2.0, 3.0]), np.array(np.inf),
                                 np.array(2e6)])
def test_bad_alpha_gives_la205_and_is_ignored(bad):
    rng = rng_for(21)
    a = analyse({"lora_up": rng.normal(size=(5, 4)), "lora_down": rng.normal(size=(4, 6)), "alpha": bad})
    assert "LA205" in codes(a)
    assert (a.alpha, a.scale, a.scale_rule) == (None, 1.0, "missing-alpha=>1")
    assert a.operator is not None


def test_read_alpha_accepts_one_element_tensors():
    group, src = layer({"alpha": np.array([8.0], dtype=np.float16)})
    assert read_alpha(group, src) == (8.0, [])
    group, src = layer({"alpha": np.zeros((3,))})
    value, fs = read_alpha(group, src)
    assert value is None and [f.code for f in fs] == ["LA205"]
    assert src.reads == []  # a non-scalar alpha is rejected from its shape, without reading it


# ---------------------------------------------------------------------------------------------------------
# a real LyCORIS LoKr file (kohya names, every factor low-rank, conv kernels folded into w1_b / w2_b)


def _real_dir():
    return __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


class SafetensorsSource:
    def __init__(self, path):
        from safetensors import safe_open

        self.f = safe_open(str(path), "np")

    def shape(self, name):
        return tuple(self.f.get_slice(name).get_shape())

    def dtype(self, name):
        return self.f.get_slice(name).get_dtype()

    def array(self, name):
        return np.asarray(self.f.get_tensor(name), dtype=np.float64)


@pytest.mark.parametrize("fname,dim", [("lycoris-lokr-falcon4.safetensors", 4),
                                       ("lycoris-lokr-falcon16.safetensors", 16)])
def test_real_lycoris_lokr(fname, dim):
    path = _real_dir() / fname
    if not path.exists():
        pytest.skip("real fixtures not available")
    src = SafetensorsSource(path)
    modules: dict[str, dict[str, str]] = {}
    for name in src.f.keys():
        module, role = name.rsplit(".", 1)
        modules.setdefault(module, {})[role] = name
    assert len(modules) == 350
    checked = 0
    for i, (module, parts) in enumerate(sorted(modules.items())):
        group = LayerGroup(key=module, component="unet" if "unet" in module else "te", module=module,
                           parts=parts, format="kohya")
        a = detect(group, src).analyse(group, src, ScaleContext())
        assert a.kind == "lokr" and a.findings == []
        assert (a.rank, a.alpha, a.scale, a.scale_rule) == (dim, float(dim), 1.0, "alpha/rank")
        if "mlp_fc1" in module and module.startswith("lora_te"):
            assert (a.out_features, a.in_features) == (3072, 768)  # CLIP-L fc1
        if module == "lora_unet_down_blocks_0_resnets_0_conv1":
            assert (a.out_features, a.in_features) == (320, 320 * 9) and a.extra["in_includes_kernel"]
        w1 = src.array(parts["lokr_w1_a"]) @ src.array(parts["lokr_w1_b"])
        w2 = src.array(parts["lokr_w2_a"]) @ src.array(parts["lokr_w2_b"])
        if w1.size * w2.size <= 400_000 and i % 3 == 0:
            check_spectrum(a, np.kron(w1, w2), a.extra["rank_bound"])
            checked += 1
    assert checked >= 10
