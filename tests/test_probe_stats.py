"""The probe's statistics and design: hand computations, calibration under the null, CI coverage, verdicts.

Embeddings with planted similarities: an image is a unit vector whose first components are its cosines to the
reference sets (each a single basis vector) and whose last component makes up the norm, so s_A(x) is known
exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.probe import design, stats


def planted(cosines: np.ndarray) -> np.ndarray:
    """Unit rows whose cosine to basis vector k is cosines[:, k] (k < q); one spare dimension takes the rest."""
    c = np.asarray(cosines, dtype=np.float64)
    rest = np.sqrt(1.0 - (c**2).sum(axis=1))
    return np.concatenate([c, rest[:, None]], axis=1)


def refs(q: int) -> dict[int, np.ndarray]:
    eye = np.eye(q + 1)
    return {k: eye[k : k + 1] for k in range(q)}


# ---------------------------------------------------------------------------------------------------------
# by hand


def test_signflip_exact_by_hand():
    # mean 2; of the 8 sign vectors of (1, 2, 3) only (+, +, +) reaches 2
    assert stats.signflip_p([1.0, 2.0, 3.0]) == pytest.approx(1 / 8)
    # clusters: means (1.5, 3), observed 2.25; only (+, +) reaches it among 4
    assert stats.signflip_p([1.0, 2.0, 3.0], clusters=["a", "a", "b"]) == pytest.approx(1 / 4)
    # a zero effect: half the flips (and the ties) reach it
    assert stats.signflip_p([1.0, -1.0]) == pytest.approx(3 / 4)
    assert math.isnan(stats.signflip_p([]))


def test_signflip_monte_carlo_matches_exact_when_both_apply():
    rng = np.random.default_rng(3)
    v = rng.normal(0.3, 1.0, size=16)
    exact = stats.signflip_p(v)  # 16 units: enumerated
    old = stats.EXACT_MAX_UNITS
    try:
        stats.EXACT_MAX_UNITS = 0
        mc = stats.signflip_p(v, n_perm=40_000, rng=np.random.default_rng(0))
    finally:
        stats.EXACT_MAX_UNITS = old
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / 40_000) + 1e-4


def test_cohens_dz_holm_and_cluster_means_by_hand():
    assert stats.cohens_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # mean 2, sd 1
    assert stats.cohens_dz([0.5, 0.5]) == math.inf and math.isnan(stats.cohens_dz([0.0, 0.0]))
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    np.testing.assert_allclose(stats.cluster_means([1.0, 2.0, 4.0], ["b", "a", "b"]), [2.0, 2.5])


def test_mean_similarity_is_the_mean_pairwise_cosine():
    emb = np.array([[1.0, 0.0], [0.0, 2.0]])
    ref = np.array([[1.0, 1.0], [3.0, 0.0]])
    # row 0: cos to (1,1) = 1/√2, to (3,0) = 1 → mean; row 1: 1/√2 and 0
    np.testing.assert_allclose(stats.mean_similarity(emb, ref), [(1 / math.sqrt(2) + 1) / 2, 1 / (2 * math.sqrt(2))])
    with pytest.raises(ValueError):
        stats.mean_similarity(np.zeros((1, 2)), ref)


def test_panel_arithmetic_on_planted_similarities():
    # 4 pairs; similarities to (target, c1, c2, c3); base at 0.2 everywhere
    base = np.full((4, 4), 0.2)
    lora = base + np.array([0.20, 0.10, 0.30, 0.05])  # Δ target 0.2, controls 0.1, 0.3, 0.05
    r = refs(4)
    controls = {"c1": r[1], "c2": r[2], "c3": r[3]}
    pan = stats.panel(None, planted(lora), planted(base), r[0], controls, clusters=[0, 1, 2, 3], n_boot=200)
    assert pan.per_control_delta == pytest.approx({"c1": 0.1, "c2": 0.3, "c3": 0.05})
    assert pan.best_control == "c2" and pan.margin == pytest.approx(-0.1)
    assert pan.panel_rank == 2 and pan.panel_p == pytest.approx((1 + 1) / 4)
    assert pan.margin_ci95 == pytest.approx((-0.1, -0.1))  # no variation between pairs
    assert pan.attribution_rate_lora == 0.0  # c2 (0.5) beats the target (0.4) on every LoRA image
    assert pan.attribution_rate_base == 0.0  # all tied at 0.2: a tie is not the target


# ---------------------------------------------------------------------------------------------------------
# calibration


@pytest.mark.parametrize("units,exact", [(10, True), (24, False)])
def test_signflip_p_is_uniform_under_the_null(units, exact):
    """Symmetric null deltas: P(p ≤ α) ≈ α (never above it by more than noise), exact and Monte Carlo."""
    rng = np.random.default_rng(11)
    sims = 1000 if exact else 400
    ps = np.array([stats.signflip_p(rng.standard_t(4, size=units), n_perm=999, rng=rng) for _ in range(sims)])
    for alpha in (0.01, 0.05, 0.1, 0.25, 0.5):
        rate = np.mean(ps <= alpha)
        se = math.sqrt(alpha * (1 - alpha) / sims)
        assert rate <= alpha + 3.5 * se, (alpha, rate)
        assert rate >= alpha - 3.5 * se - (1 / 2**units if exact else 0.002), (alpha, rate)


def test_signflip_has_power_against_a_planted_shift():
    rng = np.random.default_rng(5)
    ps = [stats.signflip_p(rng.normal(1.2, 1.0, size=16)) for _ in range(200)]
    assert np.mean(np.array(ps) < 0.01) > 0.8  # n ≈ (3.61/1.2)² ≈ 9 pairs give 90% power; 16 give more


def test_cluster_bootstrap_ci_covers_the_true_mean():
    """12 subjects × 4 pairs with a subject-level random effect: the 95% percentile CI covers the true mean in
    about 95% of datasets (percentile intervals run a little short with 12 clusters)."""
    rng = np.random.default_rng(7)
    mu, sims, hits = 0.05, 400, 0
    clusters = np.repeat(np.arange(12), 4)
    for _ in range(sims):
        v = mu + rng.normal(0, 0.03, size=12)[clusters] + rng.normal(0, 0.02, size=48)
        lo, hi = stats.percentile_ci(stats.bootstrap(v, clusters, n_boot=1000, rng=rng))
        hits += lo <= mu <= hi
    assert 0.88 <= hits / sims <= 0.99


# ---------------------------------------------------------------------------------------------------------
# verdicts on planted worlds


def _world(rng, delta_target: float, delta_controls: list[float], n_subjects: int = 8, per: int = 2,
           noise: float = 0.01):
    q = 1 + len(delta_controls)
    n = n_subjects * per
    clusters = np.repeat(np.arange(n_subjects), per)
    base = 0.6 / math.sqrt(q) + rng.normal(0, 0.02, size=(n, q))  # the planted vectors stay below unit norm
    shift = np.array([delta_target, *delta_controls])
    lora = base + shift + rng.normal(0, noise, size=(n, q))
    r = refs(q)
    controls = {f"control-{k}": r[k] for k in range(1, q)}
    return planted(lora), planted(base), r[0], controls, clusters


def test_target_lora_is_captured_with_a_full_panel():
    rng = np.random.default_rng(1)
    world = _world(rng, 0.08, [0.0] * 19)
    res = stats.analyse_arm(*world, n_boot=1000)
    v = stats.verdict(res)
    assert v.verdict == "captured", v.reasons
    assert res.panel.panel_rank == 1 and res.panel.panel_p == pytest.approx(1 / 20)
    assert not any("control(s)" in w for w in v.warnings)


def test_off_target_lora_shifts_but_is_not_captured():
    """The §5 pitfall: significant toward the target, but more toward a control."""
    rng = np.random.default_rng(2)
    res = stats.analyse_arm(*_world(rng, 0.05, [0.0, 0.09, -0.02]), n_boot=1000)
    assert res.effect.p_signflip < 0.01 and res.effect.delta_ci95[0] > 0
    v = stats.verdict(res)
    assert v.verdict == "shifts_style_nonspecifically"
    assert any("3 control(s)" in w for w in v.warnings)


def test_null_lora_is_not_detected_and_no_panel_is_inconclusive():
    rng = np.random.default_rng(3)
    null = stats.analyse_arm(*_world(rng, 0.0, [0.0, 0.0], noise=0.001), n_boot=1000)
    assert stats.verdict(null).verdict == "not_detected"
    lora, base, target, _, clusters = _world(rng, 0.08, [0.0])
    alone = stats.analyse_arm(lora, base, target, None, clusters, n_boot=1000)
    v = stats.verdict(alone, min_dz=design.min_detectable_dz(16))
    assert v.verdict == "inconclusive"
    assert any("no controls" in w for w in v.warnings) and any("low power" in w for w in v.warnings)
    # a calibrated no-effect bound from a null LoRA replaces the default 0.01
    assert stats.verdict(null, delta_min=-1.0).verdict == "inconclusive"


def test_consistency_rises_when_the_lora_homogenises_images():
    rng = np.random.default_rng(4)
    n_subjects, seeds = 8, 4
    clusters = np.repeat(np.arange(n_subjects), seeds)
    groups = np.tile(np.arange(seeds), n_subjects)
    base = rng.normal(size=(n_subjects * seeds, 16))
    look = rng.normal(size=16)
    lora = base + 2.0 * look  # a shared look pulls every image together
    con = stats.consistency(lora, base, groups, clusters)
    assert con.groups == seeds and con.lora > con.base and con.p == pytest.approx(1 / 2**seeds)


# ---------------------------------------------------------------------------------------------------------
# design


def test_plan_pairs_arms_and_prompts():
    quick = design.plan("style", trigger="zxq style", quick=True)
    assert len(quick) == 2 * 8 * 1 * 2  # arms × subjects × templates × seeds
    trig = [i for i in quick if i.arm == "trigger"]
    plain = [i for i in quick if i.arm == "plain"]
    assert [(i.subject, i.seed) for i in trig] == [(i.subject, i.seed) for i in plain]
    assert all(i.prompt.endswith(", zxq style") for i in trig)
    assert all("zxq" not in i.prompt for i in plain)
    assert len({i.cluster for i in quick}) == 8
    full = design.plan("likeness")
    assert len(full) == 16 * 2 * 2 and all(i.arm == "plain" for i in full)
    for item in design.plan("style", subjects=24, templates=3):
        words = item.prompt.lower().replace(",", " ").split()
        assert not set(words) & set(design.STYLE_WORDS), item.prompt
    with pytest.raises(ValueError):
        design.plan("style", seeds=(1, 1))
    assert design.min_detectable_dz(13) == pytest.approx(3.61 / math.sqrt(13), rel=0.01)
