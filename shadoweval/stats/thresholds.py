"""Off-policy evaluation of router thresholds, and a threshold recommendation with a guarantee.

For a router whose score means P(strong needed) (route strong when score ≥ t), what would
threshold t have done on the same traffic? Only requests with a score between t and the
threshold in force t₀ change tier, and their outcome on the other tier is what the shadow
labels measure: forward shadows (cheap-routed, re-run on strong) say whether moving them up
removes harm, reverse shadows (strong-routed, re-run on cheap) whether moving them down adds
harm, and both carry the other tier's cost. Every label is weighted by 1/π.

Per request i (all traffic of the window, N requests) and threshold t:

    served cheap under t:  1[sᵢ < t]
    harm(t)  = (1/N) Σᵢ 1[sᵢ < t]·yᵢ              yᵢ = strong_needed (DESIGN.md, Judge)
    cost(t)  = (1/N) Σᵢ (cᵢ + switchᵢ(t)·(oᵢ − cᵢ))  cᵢ own cost, oᵢ the other tier's cost

Estimators, per stratum h (segment × routed tier) with N_h requests and labelled set L_h:
- Hájek: Σ_{i∈h} vᵢ ≈ N_h · Σ_{L_h} wᵢvᵢ / Σ_{L_h} wᵢ, wᵢ = 1/πᵢ (Hájek 1971). At t = t₀ no
  request switches and the harm estimate is the observed Hájek harm rate of the cheap-routed
  labels times the cheap share, exactly.
- Doubly robust (Dudík, Langford & Li 2011, "Doubly Robust Policy Evaluation and Learning",
  ICML): only the switching part is modelled — Σ_{i∈h} switchᵢ·m(sᵢ) over all requests plus
  the Hájek mean of the residual switchᵢ·(yᵢ − m(sᵢ)) — where m is the Cox recalibration
  logit m(s) = a + b·logit(s) fitted to the labels (weighted), and for cost the other
  tier's cost as a per-tier ratio of the own cost. Unbiased whatever m is; lower variance
  when m is good. `estimator="auto"` takes the one with the smaller mean bootstrap error.

Intervals are simultaneous over the grid: a stratified bootstrap of the labelled units
(B replicates, m held fixed), the band estimate ± q·se(t) where q is the (confidence)
quantile of maxₜ |estimate*(t) − estimate(t)| / se(t) (studentized max-deviation band).

The recommendation on a curve (Learn then Test) is `threshold_recommendation.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from shadoweval.stats import calibration

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

Estimator = Literal["hajek", "doubly_robust", "auto"]


@dataclass(frozen=True)
class ThresholdCurve:
    """What each threshold of the grid would have done on the window's traffic.

    Per-request figures (harm as a share of all traffic, cost in USD per request); every
    `*_low`/`*_high` pair is a band simultaneous over the grid at `confidence`.
    """

    threshold: FloatArray
    threshold_in_force: float
    strong_share: FloatArray  # known exactly: the share of scores ≥ t
    harm_rate: FloatArray
    harm_se: FloatArray
    harm_low: FloatArray
    harm_high: FloatArray
    harm_rate_among_cheap: FloatArray  # harm / share served cheap (nan where none is cheap)
    cost_per_request_usd: FloatArray
    cost_low_usd: FloatArray
    cost_high_usd: FloatArray
    savings_vs_always_strong_usd: FloatArray  # per request
    savings_vs_always_strong_low_usd: FloatArray
    savings_vs_always_strong_high_usd: FloatArray
    savings_vs_in_force_usd: FloatArray  # per request; positive saves money
    savings_vs_in_force_low_usd: FloatArray
    savings_vs_in_force_high_usd: FloatArray
    labels_in_band: IntArray  # labels with a score between t and t₀
    n_requests: int
    n_labels: int
    estimator: str
    confidence: float
    replicates: int
    hajek_mean_harm_se: float
    doubly_robust_mean_harm_se: float


def default_grid(threshold_in_force: float, points: int = 101) -> FloatArray:
    """Equally spaced thresholds on [0, 1] plus the threshold in force."""
    grid = np.round(np.linspace(0.0, 1.0, points), 6)
    return np.unique(np.append(grid, float(threshold_in_force)))


def _expit(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


def outcome_model(score: FloatArray, label: FloatArray, weight: FloatArray) -> FloatArray:
    """m(s) = expit(a + b·logit(s)), the weighted Cox recalibration of the score, as a
    function evaluated later; falls back to the weighted label mean when the fit fails."""
    if label.size >= 10 and 0.0 < float(np.sum(label)) < label.size:
        fit = calibration.cox_calibration(score, label, weight)
        if fit.converged:
            return np.array([fit.intercept, fit.slope], dtype=float)
    mean = float(np.sum(weight * label) / np.sum(weight)) if label.size else 0.0
    mean = min(max(mean, 1e-6), 1 - 1e-6)
    return np.array([math.log(mean / (1 - mean)), 0.0], dtype=float)


def _predict(coefficients: FloatArray, score: FloatArray) -> FloatArray:
    s = np.clip(score, 1e-6, 1 - 1e-6)
    return _expit(coefficients[0] + coefficients[1] * np.log(s / (1 - s)))


def _check(
    score: FloatArray, strong_routed: BoolArray, arrays: dict[str, npt.NDArray[np.generic]]
) -> None:
    n = score.size
    if np.any(~np.isfinite(score)) or np.any((score < 0) | (score > 1)):
        raise ValueError("score must lie in [0, 1]")
    for name, values in {"strong_routed": strong_routed, **arrays}.items():
        if values.shape != (n,):
            raise ValueError(f"{name} has {values.size} values for {n} requests")


def threshold_curve(
    *,
    score: npt.ArrayLike,
    strong_routed: npt.ArrayLike,
    cost_usd: npt.ArrayLike,
    labelled: npt.ArrayLike,
    strong_needed: npt.ArrayLike,
    other_cost_usd: npt.ArrayLike,
    inclusion_probability: npt.ArrayLike,
    threshold_in_force: float,
    stratum: npt.ArrayLike | None = None,
    grid: npt.ArrayLike | None = None,
    estimator: Estimator = "auto",
    replicates: int = 400,
    confidence: float = 0.95,
    seed: int = 0,
) -> ThresholdCurve:
    """The off-policy curve over `grid` (default `default_grid`) for every request of a window.

    Arrays hold one value per request: `labelled` marks requests with a finished verdict,
    whose `strong_needed` (0/1), `other_cost_usd` (the shadow's cost on the other tier, USD)
    and `inclusion_probability` π are read; other entries are ignored (nan is fine). A
    missing own `cost_usd` (nan) stands at its tier's mean. `stratum` (e.g. a segment code)
    splits the Hájek normalisation further than the tier. Deterministic for a `seed`.
    """
    s = np.asarray(score, dtype=float)
    strong = np.asarray(strong_routed, dtype=bool)
    own_cost = np.array(cost_usd, dtype=float)  # a copy: missing costs are filled in below
    is_labelled = np.asarray(labelled, dtype=bool)
    y_all = np.asarray(strong_needed, dtype=float)
    other_all = np.asarray(other_cost_usd, dtype=float)
    pi_all = np.asarray(inclusion_probability, dtype=float)
    groups = np.zeros(s.size, dtype=np.int64) if stratum is None else np.asarray(stratum)
    _check(
        s,
        strong,
        {
            "cost_usd": own_cost,
            "labelled": is_labelled,
            "strong_needed": y_all,
            "other_cost_usd": other_all,
            "inclusion_probability": pi_all,
            "stratum": groups,
        },
    )
    if s.size == 0:
        raise ValueError("no requests")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    if replicates < 20:
        raise ValueError("replicates must be at least 20")
    if np.any(is_labelled & ~((pi_all > 0) & (pi_all <= 1))):
        raise ValueError("inclusion_probability of labelled requests must lie in (0, 1]")
    if np.any(is_labelled & ~np.isin(y_all, (0.0, 1.0))):
        raise ValueError("strong_needed of labelled requests must be 0 or 1")
    # A decision logged without its cost stands at its tier's mean logged cost.
    for tier in (False, True):
        known = np.isfinite(own_cost) & (strong == tier)
        missing = ~np.isfinite(own_cost) & (strong == tier)
        own_cost[missing] = float(own_cost[known].mean()) if known.any() else 0.0
    t0 = float(threshold_in_force)
    thresholds = default_grid(t0) if grid is None else np.unique(np.asarray(grid, dtype=float))
    n = s.size
    n_grid = thresholds.size
    rng = np.random.default_rng(seed)

    w_all = np.where(is_labelled, 1.0 / np.where(is_labelled, pi_all, 1.0), 0.0)
    y_lab = y_all[is_labelled]
    coefficients = outcome_model(s[is_labelled], y_lab, w_all[is_labelled])
    m_harm = _predict(coefficients, s)
    # The other tier's cost as a ratio of the own cost, per routed tier (Hájek ratio of the
    # labelled pairs); one tier without labels borrows the inverse of the other's ratio.
    other_filled = np.where(is_labelled & np.isfinite(other_all), other_all, np.nan)
    ratio: dict[bool, float] = {}
    for tier in (False, True):
        rows = is_labelled & (strong == tier) & np.isfinite(other_filled)
        denominator = float(np.sum(w_all[rows] * own_cost[rows]))
        if rows.any() and denominator > 0:
            ratio[tier] = float(np.sum(w_all[rows] * other_filled[rows]) / denominator)
    if len(ratio) == 1:
        (known,) = ratio.items()
        ratio[not known[0]] = 1.0 / known[1] if known[1] > 0 else 1.0
    if not ratio:
        ratio = {False: 1.0, True: 1.0}
    m_cost_delta = own_cost * np.where(strong, ratio[True] - 1.0, ratio[False] - 1.0)
    d_all = np.where(np.isfinite(other_filled), other_filled - own_cost, m_cost_delta)

    harm_h = np.zeros(n_grid)
    harm_dr = np.zeros(n_grid)
    cost_h = np.zeros(n_grid)
    cost_dr = np.zeros(n_grid)
    boot_harm_h = np.zeros((replicates, n_grid))
    boot_harm_dr = np.zeros((replicates, n_grid))
    boot_cost_h = np.zeros((replicates, n_grid))
    boot_cost_dr = np.zeros((replicates, n_grid))
    base_cost = float(np.sum(own_cost))
    for group in np.unique(groups):
        for tier in (False, True):
            members = (groups == group) & (strong == tier)
            n_h = int(members.sum())
            if n_h == 0:
                continue
            rows = np.flatnonzero(members & is_labelled)
            if rows.size == 0:
                # Nothing measured here: the model stands in (both estimators), and the band
                # rule of the recommendation keeps moves into this stratum untested.
                modelled_harm = _served_cheap_sum(s[members], m_harm[members], thresholds)
                _, modelled_cost = _switched_sums(
                    s[members], m_cost_delta[members], tier, thresholds
                )
                for point, boot in ((harm_h, boot_harm_h), (harm_dr, boot_harm_dr)):
                    point += modelled_harm
                    boot += modelled_harm[None, :]
                for point, boot in ((cost_h, boot_cost_h), (cost_dr, boot_cost_dr)):
                    point += modelled_cost
                    boot += modelled_cost[None, :]
                continue
            w = w_all[rows]
            y = y_all[rows]
            base = 0.0 if tier else 1.0  # harm of the routed tier: only cheap answers harm
            signed_switch = _signed_switch(s[rows], tier, thresholds)
            any_switch = np.abs(signed_switch)
            values = {
                "harm_h": base * y[:, None] + signed_switch * y[:, None],
                "harm_dr": base * y[:, None] + signed_switch * (y - m_harm[rows])[:, None],
                "cost_h": any_switch * d_all[rows][:, None],
                "cost_dr": any_switch * (d_all[rows] - m_cost_delta[rows])[:, None],
            }
            counts = rng.multinomial(rows.size, np.full(rows.size, 1.0 / rows.size), replicates)
            boot_w = counts * w[None, :]
            boot_norm = n_h / boot_w.sum(axis=1)
            norm = n_h / w.sum()
            # The DR estimator's model part over all the stratum's requests: exact sums.
            harm_model, _ = _switched_sums(s[members], m_harm[members], tier, thresholds)
            _, cost_model = _switched_sums(s[members], m_cost_delta[members], tier, thresholds)
            harm_dr += harm_model
            boot_harm_dr += harm_model[None, :]
            cost_dr += cost_model
            boot_cost_dr += cost_model[None, :]
            for name, point, boot in (
                ("harm_h", harm_h, boot_harm_h),
                ("harm_dr", harm_dr, boot_harm_dr),
                ("cost_h", cost_h, boot_cost_h),
                ("cost_dr", cost_dr, boot_cost_dr),
            ):
                point += norm * (w @ values[name])
                boot += boot_norm[:, None] * (boot_w @ values[name])

    se_h = boot_harm_h.std(axis=0, ddof=1) / n
    se_dr = boot_harm_dr.std(axis=0, ddof=1) / n
    mean_se_h, mean_se_dr = float(np.mean(se_h)), float(np.mean(se_dr))
    use_dr = estimator == "doubly_robust" or (estimator == "auto" and mean_se_dr < mean_se_h)
    harm_total, boot_harm = (harm_dr, boot_harm_dr) if use_dr else (harm_h, boot_harm_h)
    cost_delta, boot_cost = (cost_dr, boot_cost_dr) if use_dr else (cost_h, boot_cost_h)

    harm = harm_total / n
    harm_boot = boot_harm / n
    cost = (base_cost + cost_delta) / n
    cost_boot = (base_cost + boot_cost) / n
    always_strong = int(np.argmin(thresholds))  # t = min grid: (nearly) everyone strong
    in_force = (
        int(np.flatnonzero(np.isclose(thresholds, t0))[0])
        if np.any(np.isclose(thresholds, t0))
        else None
    )
    savings_strong = cost[always_strong] - cost
    savings_strong_boot = cost_boot[:, [always_strong]] - cost_boot
    in_force_cost = cost[in_force] if in_force is not None else base_cost / n
    in_force_boot = cost_boot[:, [in_force]] if in_force is not None else base_cost / n
    savings_now = in_force_cost - cost
    savings_now_boot = in_force_boot - cost_boot

    sorted_scores = np.sort(s)
    requests_below = np.searchsorted(sorted_scores, thresholds, side="left")
    served_cheap_share = requests_below / n
    s_lab = s[is_labelled]
    sorted_labelled = np.sort(s_lab)
    lo_band = np.minimum(thresholds, t0)
    hi_band = np.maximum(thresholds, t0)
    labels_in_band = (
        np.searchsorted(sorted_labelled, hi_band, side="left")
        - np.searchsorted(sorted_labelled, lo_band, side="left")
    ).astype(np.int64)
    # Rare harm: a region whose few labels all happened to be fine has a bootstrap error of
    # 0, which would certify anything. Floor the error at what one more harmful label gives,
    # over the region served cheap and over the band that moves down (above t₀).
    above = thresholds > t0
    lab_below = s_lab[:, None] < thresholds[None, :]
    lab_band = lab_below & (s_lab >= t0)[:, None] & above[None, :]
    band_requests = np.where(
        above, requests_below - np.searchsorted(sorted_scores, t0, side="left"), 0
    )
    w_lab = w_all[is_labelled]
    floor = np.maximum(
        _rare_event_floor(lab_below, w_lab, y_lab, requests_below, n),
        _rare_event_floor(lab_band, w_lab, y_lab, band_requests, n),
    )
    return assemble_curve(
        thresholds=thresholds,
        threshold_in_force=t0,
        served_cheap_share=served_cheap_share,
        estimates=(harm, cost, savings_strong, savings_now),
        replicates_of=(harm_boot, cost_boot, savings_strong_boot, savings_now_boot),
        harm_floor=floor,
        labels_in_band=labels_in_band,
        n_requests=n,
        n_labels=int(is_labelled.sum()),
        doubly_robust=use_dr,
        confidence=confidence,
        replicates=replicates,
        mean_harm_se=(mean_se_h, mean_se_dr),
    )


def assemble_curve(
    *,
    thresholds: FloatArray,
    threshold_in_force: float,
    served_cheap_share: FloatArray,
    estimates: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    replicates_of: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
    harm_floor: FloatArray,
    labels_in_band: IntArray,
    n_requests: int,
    n_labels: int,
    doubly_robust: bool,
    confidence: float,
    replicates: int,
    mean_harm_se: tuple[float, float],
) -> ThresholdCurve:
    """The curve from its point estimates (harm, cost, savings vs always-strong, savings vs the
    threshold in force) and their bootstrap replicates: simultaneous bands, harm clipped to
    [0, 1] and floored at the rare-event error. Shared by the per-request path and the
    SQL-binned path (stats.threshold_bins), so both answer in one shape."""
    harm, cost, savings_strong, savings_now = estimates
    harm_boot, cost_boot, savings_strong_boot, savings_now_boot = replicates_of
    harm_se, harm_low, harm_high = _band(harm, harm_boot, confidence, harm_floor)
    _, cost_low, cost_high = _band(cost, cost_boot, confidence)
    _, strong_low, strong_high = _band(savings_strong, savings_strong_boot, confidence)
    _, now_low, now_high = _band(savings_now, savings_now_boot, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        among_cheap = np.where(served_cheap_share > 0, harm / served_cheap_share, np.nan)
    return ThresholdCurve(
        threshold=thresholds,
        threshold_in_force=threshold_in_force,
        strong_share=1.0 - served_cheap_share,
        harm_rate=harm,
        harm_se=harm_se,
        harm_low=np.maximum(harm_low, 0.0),
        harm_high=np.minimum(harm_high, 1.0),
        harm_rate_among_cheap=among_cheap,
        cost_per_request_usd=cost,
        cost_low_usd=cost_low,
        cost_high_usd=cost_high,
        savings_vs_always_strong_usd=savings_strong,
        savings_vs_always_strong_low_usd=strong_low,
        savings_vs_always_strong_high_usd=strong_high,
        savings_vs_in_force_usd=savings_now,
        savings_vs_in_force_low_usd=now_low,
        savings_vs_in_force_high_usd=now_high,
        labels_in_band=labels_in_band,
        n_requests=n_requests,
        n_labels=n_labels,
        estimator="doubly_robust" if doubly_robust else "hajek",
        confidence=confidence,
        replicates=replicates,
        hajek_mean_harm_se=mean_harm_se[0],
        doubly_robust_mean_harm_se=mean_harm_se[1],
    )


def _band(
    estimate: FloatArray,
    boot: FloatArray,
    confidence: float,
    floor: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Studentized max-deviation bootstrap band, simultaneous over the grid: estimate ± q·se,
    q the `confidence` quantile of maxₜ |boot(t) − estimate(t)| / se(t)."""
    se = boot.std(axis=0, ddof=1)
    if floor is not None:
        se = np.maximum(se, floor)
    varying = se > 1e-15
    if not varying.any():
        return se, estimate.copy(), estimate.copy()
    deviation = np.abs(boot[:, varying] - estimate[None, varying]) / se[None, varying]
    q = float(np.quantile(deviation.max(axis=1), confidence))
    return se, estimate - q * se, estimate + q * se


def _signed_switch(score: FloatArray, strong_tier: bool, thresholds: FloatArray) -> FloatArray:
    """Per request and threshold: +1 a strong-routed request moves down (its harm arrives),
    −1 a cheap-routed request moves up (its harm leaves), 0 it keeps its tier."""
    below = score[:, None] < thresholds[None, :]
    out: FloatArray = below.astype(float) if strong_tier else -(~below).astype(float)
    return out


def _served_cheap_sum(score: FloatArray, values: FloatArray, thresholds: FloatArray) -> FloatArray:
    """Σ values over requests with score < t, per threshold (sorted cumulative sums)."""
    order = np.argsort(score)
    cumulative = np.concatenate([[0.0], np.cumsum(values[order])])
    out: FloatArray = cumulative[np.searchsorted(score[order], thresholds, side="left")]
    return out


def _switched_sums(
    score: FloatArray, values: FloatArray, strong_tier: bool, thresholds: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Σ signed_switch·values and Σ |signed_switch|·values per threshold, without the
    requests × thresholds matrix."""
    below = _served_cheap_sum(score, values, thresholds)
    if strong_tier:
        return below, below
    moved_up = float(np.sum(values)) - below
    return -moved_up, moved_up


def _rare_event_floor(
    labelled_region: BoolArray,
    weight: FloatArray,
    label: FloatArray,
    region_requests: npt.NDArray[np.integer],
    n: int,
) -> FloatArray:
    """Per column: (N_region/N)·√(q(1−q)/n_region), q the region's weighted harm rate with
    one harmful label of mean weight added — the least error n_region labels can have.
    `labelled_region` holds the labelled requests' rows only."""
    region = labelled_region.astype(float)
    n_labels = region.sum(axis=0)
    total = weight @ region
    harmful = (weight * label) @ region
    mean_w = np.where(n_labels > 0, total / np.maximum(n_labels, 1), 1.0)
    q = (harmful + mean_w) / (total + mean_w)
    share = region_requests / n
    floor: FloatArray = share * np.sqrt(q * (1 - q) / np.maximum(n_labels, 1))
    return floor
