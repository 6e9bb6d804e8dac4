"""A threshold recommendation with a guarantee, from a `ThresholdCurve`.

Recommendation: Learn then Test (Angelopoulos, Bates, Candès, Jordan & Lei 2021,
arXiv 2110.01052) with fixed-sequence testing. Harm rises with t, so the nulls
H_t: harm(t) > ε are tested from the lowest t upwards, each at level δ with the one-sided
normal p-value 1 − Φ((ε − ĥ(t))/se₀(t)), se₀ the error scaled to the null boundary
(score-type, see `_error_at_null`); the recommendation is the largest t before the first
null not rejected. The family-wise error is at most δ, so P(harm(t̂) > ε) ≤ δ
(asymptotically). A threshold above t₀ is only tested when at least `min_band_labels`
labels lie in [t₀, t) (left out of the sequence otherwise: that depends on where labels fall,
not on their outcomes); where the sequence stops above t₀, or no threshold above t₀ has
enough labels, the result says how many more labels in which score band would let it go on
(for too few labels, the band [t₀, t) reaches the furthest t whose estimated harm is within
the budget: what the sampling planner buys reverse shadows for, `sampling/threshold_band.py`).
Harm is rare, so the bootstrap error of a region whose few labels happened to be fine is 0;
the error is floored at the binomial error with one harmful label added, over the region
served cheap and over the band moving down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from shadoweval.stats.thresholds import ThresholdCurve

_NULL_SCALE_FLOOR = 0.1  # the error is scaled to the null by at most √10


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass(frozen=True)
class LabelShortfall:
    """More labels with a score in [score_low, score_high) would let the test go further."""

    score_low: float
    score_high: float
    labels_now: int
    labels_more: int | None  # None: more labels would not help (the estimate is over budget)
    reason: str


@dataclass(frozen=True)
class Recommendation:
    """The cheapest threshold whose harm is ≤ ε with probability ≥ 1 − δ (Learn then Test)."""

    harm_budget: float
    risk: float
    threshold: float | None  # None: no recommendation (see `reason`)
    threshold_in_force: float
    change: str  # raise | lower | keep | none
    reason: str
    harm_rate: float | None = None
    harm_high: float | None = None
    cost_per_request_usd: float | None = None
    savings_vs_in_force_usd: float | None = None  # per request
    savings_vs_in_force_low_usd: float | None = None
    savings_vs_in_force_high_usd: float | None = None
    p_values: list[float] = field(default_factory=list)
    tested: int = 0
    shortfall: LabelShortfall | None = None


def recommend(
    curve: ThresholdCurve,
    *,
    harm_budget: float,
    risk: float,
    min_labels: int = 100,
    min_band_labels: int = 20,
) -> Recommendation:
    """Learn then Test by fixed sequence from the lowest threshold up (see the module doc)."""
    if not 0.0 < harm_budget < 1.0:
        raise ValueError("harm_budget must lie in (0, 1)")
    if not 0.0 < risk < 1.0:
        raise ValueError("risk must lie in (0, 1)")
    t0 = curve.threshold_in_force
    if curve.n_labels < min_labels:
        return Recommendation(
            harm_budget=harm_budget,
            risk=risk,
            threshold=None,
            threshold_in_force=t0,
            change="none",
            reason=f"too few labels: {curve.n_labels} of the {min_labels} needed",
            shortfall=LabelShortfall(
                score_low=0.0,
                score_high=1.0,
                labels_now=curve.n_labels,
                labels_more=min_labels - curve.n_labels,
                reason="too few labels in the window",
            ),
        )
    se = curve.harm_se
    p_values: list[float] = []
    certified: int | None = None
    shortfall: LabelShortfall | None = None
    z = NormalDist().inv_cdf(1.0 - risk)
    for j, t in enumerate(curve.threshold):
        estimate = float(curve.harm_rate[j])
        error = _error_at_null(float(se[j]), estimate, harm_budget)
        if t > t0 and curve.labels_in_band[j] < min_band_labels:
            # Left out of the sequence, not failed: which thresholds are tested depends on
            # where the labels fall (scores and π), never on their outcomes, so the
            # fixed-sequence guarantee holds over the thresholds that remain.
            if shortfall is None:
                k = _furthest_within_budget(curve, j, harm_budget)
                k_estimate = float(curve.harm_rate[k])
                shortfall = _shortfall(
                    curve,
                    k,
                    k_estimate,
                    _error_at_null(float(se[k]), k_estimate, harm_budget),
                    z,
                    harm_budget,
                    min_band_labels,
                )
            continue
        if error <= 0.0:
            p_value = 0.0 if estimate <= harm_budget else 1.0
        else:
            p_value = 1.0 - _normal_cdf((harm_budget - estimate) / error)
        p_values.append(p_value)
        if p_value > risk:
            if t > t0:
                shortfall = _shortfall(
                    curve,
                    j,
                    estimate,
                    error,
                    z,
                    harm_budget,
                    min_band_labels,
                    reason="the next threshold up is not yet shown to keep harm within the budget",
                )
            break
        certified = j
        shortfall = None
    if certified is None:
        return Recommendation(
            harm_budget=harm_budget,
            risk=risk,
            threshold=None,
            threshold_in_force=t0,
            change="none",
            reason="no threshold has harm ≤ the budget at this risk",
            p_values=p_values,
            tested=len(p_values),
            shortfall=shortfall,
        )
    best = float(curve.threshold[certified])
    change = "keep" if math.isclose(best, t0) else ("raise" if best > t0 else "lower")
    if change == "raise":
        reason = "a higher threshold keeps harm within the budget and costs less"
    elif change == "lower":
        reason = "the threshold in force is not shown to keep harm within the budget"
    else:
        reason = "the threshold in force is the highest one shown to keep harm within the budget"
    return Recommendation(
        harm_budget=harm_budget,
        risk=risk,
        threshold=best,
        threshold_in_force=t0,
        change=change,
        reason=reason,
        harm_rate=float(curve.harm_rate[certified]),
        harm_high=float(curve.harm_high[certified]),
        cost_per_request_usd=float(curve.cost_per_request_usd[certified]),
        savings_vs_in_force_usd=float(curve.savings_vs_in_force_usd[certified]),
        savings_vs_in_force_low_usd=float(curve.savings_vs_in_force_low_usd[certified]),
        savings_vs_in_force_high_usd=float(curve.savings_vs_in_force_high_usd[certified]),
        p_values=p_values,
        tested=len(p_values),
        shortfall=shortfall,
    )


def _furthest_within_budget(curve: ThresholdCurve, j: int, harm_budget: float) -> int:
    """The last threshold from j up whose estimated harm stays within the budget all the way
    (j itself when none): where too few labels stop the sequence, the band the labels are
    wanted in reaches as far as a step up could plausibly go, not just to the next grid point
    (a band one grid step wide would be filled, and the test moved up, a step at a time)."""
    k = j
    while k + 1 < curve.threshold.size and curve.harm_rate[k + 1] <= harm_budget:
        k += 1
    return k if curve.harm_rate[j] <= harm_budget else j


def _error_at_null(se: float, estimate: float, harm_budget: float) -> float:
    """The standard error as it would be at the null boundary harm = ε (score-type test).

    Harm is a rare binary outcome, so its variance grows about in proportion to its level:
    a Wald test with the error at a low estimate is anti-conservative exactly when it
    matters. Scaling by √(ε/ĥ) (Poisson variance) evaluates the error at the null, as the
    Wilson score interval does for a proportion.

    The scale is read at ĥ ≥ ε·`_NULL_SCALE_FLOOR` at least: far below ε the bootstrap error
    is no longer proportional to √ĥ (the doubly robust model's part, the rare-event floor),
    and √(ε/ĥ) grows without bound as ĥ → 0 — a DR estimate of 2·10⁻⁶ failed the test that
    an estimate of exactly 0 passes, and stopped the sequence far below t₀.
    """
    if estimate <= 0.0 or estimate >= harm_budget:
        return se
    return se * math.sqrt(harm_budget / max(estimate, _NULL_SCALE_FLOOR * harm_budget))


def _shortfall(
    curve: ThresholdCurve,
    j: int,
    estimate: float,
    error: float,
    z: float,
    harm_budget: float,
    min_band_labels: int,
    reason: str = "too few labels near the next threshold up",
) -> LabelShortfall:
    """How many more labels in [t₀, t) the next step up needs: the band's error shrinks as
    1/√n, so n·(z·se/(ε − ĥ))² labels would reject the null at the estimate seen now."""
    t0 = curve.threshold_in_force
    t = float(curve.threshold[j])
    labels_now = int(curve.labels_in_band[j])
    if estimate >= harm_budget:
        return LabelShortfall(
            score_low=t0,
            score_high=t,
            labels_now=labels_now,
            labels_more=None,
            reason="the estimated harm at the next threshold is over the budget",
        )
    needed = float(min_band_labels)
    if labels_now > 0 and error > 0:
        needed = max(needed, labels_now * (z * error / (harm_budget - estimate)) ** 2)
    return LabelShortfall(
        score_low=t0,
        score_high=t,
        labels_now=labels_now,
        labels_more=max(math.ceil(needed) - labels_now, 1),
        reason=reason,
    )


def plug_in_threshold(curve: ThresholdCurve, *, harm_budget: float) -> float:
    """The naive chooser: the largest threshold whose estimated harm is ≤ ε (no guarantee;
    the benchmark and tests show how often it overshoots)."""
    ok = np.flatnonzero(curve.harm_rate <= harm_budget)
    return float(curve.threshold[ok.max()]) if ok.size else float(curve.threshold.min())
