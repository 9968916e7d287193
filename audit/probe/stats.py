"""Statistics of the probe: paired, clustered, relative (numpy only).

Notation (../shared/reference/probe-science.md §2.2): ``s_A(x)`` is the mean cosine of image embedding ``x`` to
the reference set ``A`` (the mean over pairwise similarities, robust to multi-modal reference sets).

* Effect: ``Δ_i = s_target(LoRA_i) − s_target(base_i)`` over the pairs; its mean, a cluster-bootstrap CI
  (subjects resampled), Cohen's d_z = mean / sd, and a one-sided sign-flip permutation p-value, flipping
  cluster means (exact enumeration when there are few clusters, Monte Carlo otherwise).
* Specificity against a control panel: ``Δ^k`` the same way for every control set ``k``;
  ``margin = mean Δ_target − max_k mean Δ^k`` with its bootstrap CI (the max is taken inside every bootstrap
  replicate), the panel rank and ``panel_p = (1 + #{k: Δ^k ≥ Δ_target}) / (K + 1)``, and the attribution rate:
  the share of images whose most similar reference set is the target, LoRA against base.
* Consistency (no reference needed): mean pairwise similarity among images of different subjects that share a
  seed and template, LoRA against base, with a sign-flip test over those groups.
* Verdicts: ``captured``, ``not_detected``, ``inconclusive``, ``shifts_style_nonspecifically``, from a
  pre-declared rule (:func:`verdict`), each with its reasons and warnings. Absolute cosines are reported but never
  used: they are not calibrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.01  # one-sided level of the primary test
PANEL_ALPHA = 0.05  # panel rank level, reachable only with at least 19 controls
MIN_PANEL = 19  # (1 + 0) / (K + 1) <= 0.05 needs K >= 19
DELTA_MIN = 0.01  # "no effect" bound on Δ when no null-LoRA calibration is available
EXACT_MAX_UNITS = 16  # sign-flip p-values are exact (2^units flips) up to this many clusters


# ---------------------------------------------------------------------------------------------------------
# similarities


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("embeddings must be a 2-D array [items, dims]")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(x)):
        raise ValueError("embeddings must be finite and non-zero")
    return x / norms


def mean_similarity(emb: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """``s_refs(x)`` for every row ``x`` of ``emb``: the mean cosine to the rows of ``refs``."""
    a, b = _unit(emb), _unit(refs)
    if a.shape[1] != b.shape[1]:
        raise ValueError("embeddings and references have different dimensions")
    return (a @ b.T).mean(axis=1)


# ---------------------------------------------------------------------------------------------------------
# the primitives


def _cluster_index(clusters, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    c = np.asarray(clusters)
    if c.shape != (n,):
        raise ValueError("clusters must give one label per pair")
    return np.unique(c, return_inverse=True)[1]


def cluster_means(values: np.ndarray, clusters=None) -> np.ndarray:
    """Mean of ``values`` within each cluster (in the order of the sorted cluster labels)."""
    v = np.asarray(values, dtype=np.float64)
    idx = _cluster_index(clusters, v.shape[0])
    sums = np.zeros((idx.max() + 1,) + v.shape[1:])
    np.add.at(sums, idx, v)
    counts = np.bincount(idx).reshape((-1,) + (1,) * (v.ndim - 1))
    return sums / counts


def signflip_p(values, clusters=None, *, n_perm: int = 10_000, rng: np.random.Generator | None = None) -> float:
    """One-sided (greater) sign-flip permutation p-value of ``mean(values) > 0``.

    With ``clusters`` the units are cluster means, flipped together (valid when pairs within a cluster are
    exchangeable under the null only as a block). Up to ``EXACT_MAX_UNITS`` units every one of the 2^units sign
    vectors is enumerated and the p-value is exact, ``#{T* ≥ T} / 2^units``; above, ``n_perm`` random flips give
    ``(1 + #{T* ≥ T}) / (1 + n_perm)``, which is valid (never below the exact value in expectation).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan")
    u = cluster_means(v, clusters)
    n = u.shape[0]
    observed = u.mean()
    tol = 1e-12 * max(1.0, float(np.abs(u).max()))
    if n <= EXACT_MAX_UNITS:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
        stats = signs @ u / n
        return float(np.count_nonzero(stats >= observed - tol) / 2**n)
    rng = rng if rng is not None else np.random.default_rng(0)
    count = 0
    for start in range(0, n_perm, 4096):
        m = min(4096, n_perm - start)
        signs = rng.integers(0, 2, size=(m, n)) * 2.0 - 1.0
        count += int(np.count_nonzero(signs @ u / n >= observed - tol))
    return (1 + count) / (1 + n_perm)


def bootstrap(values: np.ndarray, clusters=None, *, n_boot: int = 2000, rng: np.random.Generator | None = None,
              reduce=None) -> np.ndarray:
    """Cluster-bootstrap replicates: clusters drawn with replacement, the pair-weighted mean of ``values``
    (``[n]`` or ``[n, q]``) in each replicate, then ``reduce(means) -> [n_boot]`` when given."""
    v = np.asarray(values, dtype=np.float64)
    v2 = v.reshape(v.shape[0], -1)
    idx = _cluster_index(clusters, v.shape[0])
    k = idx.max() + 1
    sums = np.zeros((k, v2.shape[1]))
    np.add.at(sums, idx, v2)
    counts = np.bincount(idx).astype(np.float64)
    rng = rng if rng is not None else np.random.default_rng(0)
    draw = rng.integers(0, k, size=(n_boot, k))
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)[:, None]
    if v.ndim == 1:
        means = means[:, 0]
    return reduce(means) if reduce is not None else means


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.quantile(replicates, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def cohens_dz(values) -> float:
    """Paired effect size: mean / sd (sample sd); ±inf for a constant non-zero effect, NaN for zero."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float("nan")
    sd = v.std(ddof=1)
    m = v.mean()
    if sd == 0:
        return float("nan") if m == 0 else math.copysign(math.inf, m)
    return float(m / sd)


def holm(pvalues) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# ---------------------------------------------------------------------------------------------------------
# one arm of the probe


@dataclass
class Effect:
    n_pairs: int
    n_clusters: int
    base_sim: float  # mean absolute cosine of the base images to the target: not calibrated
    lora_sim: float
    delta_mean: float
    delta_ci95: tuple[float, float]
    p_signflip: float
    cohens_dz: float


@dataclass
class Panel:
    per_control_delta: dict[str, float]
    best_control: str
    margin: float  # mean Δ_target − max_k mean Δ^k
    margin_ci95: tuple[float, float]
    panel_rank: int  # 1 = the target moved most
    panel_p: float
    attribution_rate_lora: float
    attribution_rate_base: float


@dataclass
class Consistency:
    lora: float
    base: float
    p: float
    groups: int


@dataclass
class ArmResult:
    effect: Effect
    panel: Panel | None = None
    consistency: Consistency | None = None


def effect(lora_emb, base_emb, target_refs, clusters, *, n_perm: int = 10_000, n_boot: int = 2000,
           rng: np.random.Generator | None = None) -> tuple[Effect, np.ndarray]:
    """The paired effect towards the target, and the per-pair deltas."""
    rng = rng if rng is not None else np.random.default_rng(0)
    lora_s = mean_similarity(lora_emb, target_refs)
    base_s = mean_similarity(base_emb, target_refs)
    if lora_s.shape != base_s.shape:
        raise ValueError("LoRA and base embeddings must be paired (same number of rows)")
    delta = lora_s - base_s
    idx = _cluster_index(clusters, delta.shape[0])
    return Effect(
        n_pairs=int(delta.size), n_clusters=int(idx.max() + 1), base_sim=float(base_s.mean()),
        lora_sim=float(lora_s.mean()), delta_mean=float(delta.mean()),
        delta_ci95=percentile_ci(bootstrap(delta, clusters, n_boot=n_boot, rng=rng)),
        p_signflip=signflip_p(delta, clusters, n_perm=n_perm, rng=rng), cohens_dz=cohens_dz(delta),
    ), delta


def panel(delta_target: np.ndarray, lora_emb, base_emb, target_refs, controls: dict[str, np.ndarray], clusters, *,
          n_boot: int = 2000, rng: np.random.Generator | None = None) -> Panel:
    """Specificity of the effect against the control reference sets."""
    if not controls:
        raise ValueError("a panel needs at least one control")
    rng = rng if rng is not None else np.random.default_rng(1)
    names = list(controls)
    lora_sims = [mean_similarity(lora_emb, target_refs)] + [mean_similarity(lora_emb, controls[k]) for k in names]
    base_sims = [mean_similarity(base_emb, target_refs)] + [mean_similarity(base_emb, controls[k]) for k in names]
    deltas = np.stack([lo - ba for lo, ba in zip(lora_sims, base_sims)], axis=1)  # [n, 1 + K], target first
    means = deltas.mean(axis=0)
    target, ctrl = float(means[0]), means[1:]
    best = int(np.argmax(ctrl))
    reps = bootstrap(deltas, clusters, n_boot=n_boot, rng=rng, reduce=lambda m: m[:, 0] - m[:, 1:].max(axis=1))
    at_least = int(np.count_nonzero(ctrl >= target))

    def attribution(sims: list[np.ndarray]) -> float:
        s = np.stack(sims, axis=1)
        return float(np.mean(s[:, 0] > s[:, 1:].max(axis=1)))  # ties do not count for the target

    return Panel(
        per_control_delta={k: float(v) for k, v in zip(names, ctrl)}, best_control=names[best],
        margin=float(target - ctrl[best]), margin_ci95=percentile_ci(reps), panel_rank=1 + at_least,
        panel_p=(1 + at_least) / (len(names) + 1), attribution_rate_lora=attribution(lora_sims),
        attribution_rate_base=attribution(base_sims),
    )


def consistency(lora_emb, base_emb, groups, clusters, *, n_perm: int = 10_000,
                rng: np.random.Generator | None = None) -> Consistency | None:
    """Mean pairwise cosine among images of *different* subjects within each group (same seed, template and
    arm), LoRA against base; the sign-flip p-value is over the groups' differences. None with no usable group."""
    a, b = _unit(lora_emb), _unit(base_emb)
    g = np.asarray(groups)
    c = np.asarray(clusters)
    lora_vals, base_vals = [], []
    for key in np.unique(g):
        members = np.flatnonzero(g == key)
        different = c[members][:, None] != c[members][None, :]
        if not different.any():
            continue
        lora_vals.append(float((a[members] @ a[members].T)[different].mean()))
        base_vals.append(float((b[members] @ b[members].T)[different].mean()))
    if not lora_vals:
        return None
    diffs = np.asarray(lora_vals) - np.asarray(base_vals)
    return Consistency(lora=float(np.mean(lora_vals)), base=float(np.mean(base_vals)),
                       p=signflip_p(diffs, n_perm=n_perm, rng=rng), groups=len(lora_vals))


def analyse_arm(lora_emb, base_emb, target_refs, controls: dict[str, np.ndarray] | None, clusters, groups=None, *,
                n_perm: int = 10_000, n_boot: int = 2000, seed: int = 0) -> ArmResult:
    rng = np.random.default_rng(seed)
    eff, delta = effect(lora_emb, base_emb, target_refs, clusters, n_perm=n_perm, n_boot=n_boot, rng=rng)
    pan = panel(delta, lora_emb, base_emb, target_refs, controls, clusters, n_boot=n_boot, rng=rng) \
        if controls else None
    con = consistency(lora_emb, base_emb, groups, clusters, n_perm=n_perm, rng=rng) if groups is not None else None
    return ArmResult(eff, pan, con)


# ---------------------------------------------------------------------------------------------------------
# the verdict


@dataclass
class Verdict:
    verdict: str  # captured | not_detected | inconclusive | shifts_style_nonspecifically
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def verdict(result: ArmResult, *, alpha: float = ALPHA, delta_min: float | None = None,
            min_dz: float | None = None) -> Verdict:
    """The pre-declared decision rule (probe-science.md §2.3).

    * ``captured``: p_signflip < alpha, the CI of Δ above 0, the margin over the best control and its CI above 0,
      and, with at least 19 controls, panel_p ≤ 0.05.
    * ``not_detected``: the CI of Δ lies below ``delta_min`` (a null-LoRA calibration, else 0.01).
    * ``shifts_style_nonspecifically``: a significant positive Δ that is not specific to the target.
    * ``inconclusive``: anything else, including a significant Δ with no control panel to test specificity.
    ``min_dz``: the smallest effect the design can detect (design.min_detectable_dz), for the power warning.
    """
    e, p = result.effect, result.panel
    out = Verdict("inconclusive")
    calibrated = delta_min is not None
    bound = delta_min if calibrated else DELTA_MIN
    out.warnings.append("absolute cosine similarities are not calibrated: only the paired, relative effects count")
    if not calibrated:
        out.warnings.append(f"no null-LoRA calibration: 'not detected' uses Δ ≤ {bound} as the no-effect bound")
    if min_dz is not None and min_dz > 0.8:
        out.warnings.append(f"low power: with {e.n_pairs} pairs only effects of d_z ≥ {min_dz:.2f} are reliably "
                            "detected (run without --quick for more pairs)")
    if p is None:
        out.warnings.append("no controls: specificity towards the target is untested")
    elif len(p.per_control_delta) < MIN_PANEL:
        out.warnings.append(f"{len(p.per_control_delta)} control(s): panel_p cannot go below "
                            f"{1 / (len(p.per_control_delta) + 1):.2f} (19 controls are needed for 0.05)")
    significant = e.p_signflip < alpha and e.delta_ci95[0] > 0
    out.reasons.append(f"Δ toward the target {e.delta_mean:+.4f} (95% CI {e.delta_ci95[0]:+.4f} to "
                       f"{e.delta_ci95[1]:+.4f}), p = {e.p_signflip:.4g}, d_z = {e.cohens_dz:.2f}, "
                       f"{e.n_pairs} pairs in {e.n_clusters} clusters")
    if e.delta_ci95[1] <= bound:
        out.verdict = "not_detected"
        out.reasons.append(f"the whole CI of Δ is at or below {bound}")
        return out
    if not significant:
        out.reasons.append(f"Δ is not significant at {alpha} with a CI above 0")
        return out
    if p is None:
        out.reasons.append("significant, but with no control panel the shift cannot be attributed to the target")
        return out
    out.reasons.append(f"margin over the best control ({p.best_control}) {p.margin:+.4f} (95% CI "
                       f"{p.margin_ci95[0]:+.4f} to {p.margin_ci95[1]:+.4f}); panel rank {p.panel_rank} of "
                       f"{len(p.per_control_delta) + 1}, panel p = {p.panel_p:.3g}")
    specific = p.margin > 0 and p.margin_ci95[0] > 0
    if len(p.per_control_delta) >= MIN_PANEL:
        specific = specific and p.panel_p <= PANEL_ALPHA
    if specific:
        out.verdict = "captured"
        out.reasons.append("the LoRA moves images toward the target more than toward any control")
    else:
        out.verdict = "shifts_style_nonspecifically"
        out.reasons.append("the LoRA shifts the images, but not specifically toward the target")
    return out
