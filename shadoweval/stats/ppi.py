"""Prediction-powered harm rates: every judge label, corrected by a human-labelled subsample.

The judge labels every judged pair i (a Poisson sample of traffic with inclusion
probability πᵢ, weight wᵢ = 1/πᵢ): fᵢ = its `strong_needed`. A subsample H of those
pairs, drawn with known probabilities qᵢ (the review queue's uniform sample), also has
a human label yᵢ reduced to the same 0/1 (`feedback.labels.review_served_acceptable`,
y = 1 − acceptable). The target is the human-defined harm rate θ on the segment's
traffic. PPI++ (power-tuned prediction-powered inference):

    F̄  = Σ w f / Σ w                              judge rate over all judged pairs
    Ȳ_H, F̄_H = Hájek means of y and f over H, weights w/q
    θ̂_λ = λ·F̄ + (Ȳ_H − λ·F̄_H)                     the rectifier Ȳ_H − λF̄_H removes the bias

λ = 0 is the human-only estimate, λ = 1 classic PPI; λ is chosen from the data to
minimise the estimated variance, clipped to [0, 1] so the estimate is never worse
than human-only by more than the noise in λ̂. Variance: the two-phase (judged, then
reviewed) linearisation, each pair's influence

    eᵢ = λ·wᵢ(fᵢ − F̄)/Σw + hᵢ·[(yᵢ − Ȳ_H) − λ(fᵢ − F̄_H)]/Σh,  hᵢ = δᵢwᵢ/qᵢ

(δᵢ = 1 when i ∈ H, Σh = Σ_H w/q) and V̂ = n_H/(n_H − 1) · Σ eᵢ², the with-replacement
(process-level) form: it estimates the rate on the segment's traffic, never zero
width. λ̂ = −Σcd/Σc² with eᵢ = λcᵢ + dᵢ. Interval: Wilson on n* = θ̂(1−θ̂)/V̂.
The judge's bias is the Hájek mean of f − y over H; the effective human sample size
is n_H · V̂_human-only / V̂_PPI, the human labels a human-only estimate would need
for the same precision.

Validity needs H to be a known-probability sample of the judged pairs: labels from
the stratified review queue (which seeks disagreements) must never enter H.

Sources: Angelopoulos, Bates, Fannjiang, Jordan & Zrnic (2023), "Prediction-powered
inference", *Science* 382:669–674; Angelopoulos, Duchi & Zrnic (2023), "PPI++:
Efficient prediction-powered inference", arXiv 2311.01453 (power tuning);
Boyeau, Angelopoulos, Yosef, Malik & Jordan (2024), "AutoEval done right",
arXiv 2403.07008; Särndal, Swensson & Wretman (1992), ch. 9 (two-phase sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from shadoweval.stats.rates import (
    RateEstimate,
    WeightedSums,
    process_rate_from_sums,
    weighted_sums,
    wilson_interval,
)
from shadoweval.stats.validation import (
    _binary,
    _check_confidence,
    _inclusion_probability,
    _same_length,
)


@dataclass(frozen=True)
class PpiEstimate:
    """A prediction-powered harm rate beside the judge-only and human-only ones.

    `judge_bias` is the judge's rate minus the human rate on the human subset
    (negative: the judge misses harm). `effective_human_n` is the number of human
    labels a human-only estimate would need for the PPI interval's precision;
    `human_n` the human labels used. `lam` the power-tuning λ (0 = human-only).
    """

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    lam: float
    judge_n: int
    human_n: int
    effective_human_n: float
    judge_bias: float
    judge_bias_std_error: float
    judge_bias_ci_low: float
    judge_bias_ci_high: float
    judge_only: RateEstimate
    human_only_estimate: float
    human_only_std_error: float
    human_only_ci_low: float
    human_only_ci_high: float


def _nan_estimate(judge_only: RateEstimate, judge_n: int, human_n: int) -> PpiEstimate:
    nan = math.nan
    return PpiEstimate(
        nan,
        nan,
        nan,
        nan,
        nan,
        judge_n,
        human_n,
        0.0,
        nan,
        nan,
        nan,
        nan,
        judge_only,
        nan,
        nan,
        nan,
        nan,
    )


def ppi_harm_rate(
    judge_label: npt.ArrayLike,
    inclusion_probability: npt.ArrayLike,
    human_label: npt.ArrayLike,
    review_probability: npt.ArrayLike,
    reviewed: npt.ArrayLike,
    *,
    lam: float | None = None,
    confidence: float = 0.95,
) -> PpiEstimate:
    """PPI++ harm rate over judged pairs (see the module docstring).

    All arrays have one entry per judged pair: `judge_label` fᵢ ∈ {0, 1}, its
    sampling π, `reviewed` δᵢ ∈ {0, 1}, `review_probability` qᵢ ∈ (0, 1] (the
    probability the pair was drawn for review; read only where reviewed) and
    `human_label` yᵢ ∈ {0, 1} (read only where reviewed; pass 0 elsewhere).
    `lam` fixes λ (1.0 is classic PPI); None tunes it. Without human labels the
    estimate is nan and only `judge_only` is filled.
    """
    f = _binary(judge_label, "judge_label")
    pi = _inclusion_probability(inclusion_probability, len(f))
    delta = _binary(reviewed, "reviewed")
    y = _binary(human_label, "human_label")
    q = _inclusion_probability(review_probability, len(f))
    _same_length(judge_label=f, reviewed=delta, human_label=y)
    h = delta == 1.0
    return ppi_harm_rate_from_sums(
        weighted_sums(f, pi), f[h], y[h], pi[h], q[h], lam=lam, confidence=confidence
    )


def ppi_harm_rate_from_sums(
    judge_sums: WeightedSums,
    human_judge_label: npt.ArrayLike,
    human_label: npt.ArrayLike,
    human_inclusion_probability: npt.ArrayLike,
    review_probability: npt.ArrayLike,
    *,
    lam: float | None = None,
    confidence: float = 0.95,
) -> PpiEstimate:
    """`ppi_harm_rate` from the judge labels' window sums (`rates.weighted_sums` of f, as
    the verdict snapshots keep them) and the reviewed pairs alone: their judge label f,
    human label y, sampling π and review probability q. The reviewed pairs must be among
    the pairs the sums cover.

    The all-pairs part of Σc² is Σw²(f − F̄)² = (1 − 2F̄)·Σw²f + F̄²·Σw² with
    Σw²f = Σv·f + Σw·f (as in `process_rate_from_sums`); the rest involves H only.
    """
    f = _binary(human_judge_label, "human_judge_label")
    y = _binary(human_label, "human_label")
    _same_length(human_judge_label=f, human_label=y)
    pi = _inclusion_probability(human_inclusion_probability, len(f))
    q = _inclusion_probability(review_probability, len(f))
    _check_confidence(confidence)
    if lam is not None and not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    judge_only = process_rate_from_sums(judge_sums, confidence)
    human_n = len(f)
    if human_n == 0 or judge_sums.sum_w <= 0:
        return _nan_estimate(judge_only, judge_sums.n, human_n)

    sum_w = judge_sums.sum_w
    judge_rate = judge_sums.sum_wy / sum_w
    w = 1.0 / pi
    h = w / q  # second-phase weights
    sum_h = float(h.sum())
    human_rate = float(np.sum(h * y)) / sum_h
    judge_rate_h = float(np.sum(h * f)) / sum_h

    # eᵢ = λ·cᵢ + dᵢ with cᵢ = wᵢ(fᵢ − F̄)/Σw − hᵢ(fᵢ − F̄_H)/Σh (second term on H only)
    # and dᵢ = hᵢ(yᵢ − Ȳ_H)/Σh: each Hájek mean's linearisation over its own weights.
    sum_w2f = judge_sums.sum_vy + judge_sums.sum_wy
    all_pairs = (1.0 - 2.0 * judge_rate) * sum_w2f + judge_rate**2 * judge_sums.sum_w2
    first, second = w * (f - judge_rate) / sum_w, h * (f - judge_rate_h) / sum_h
    cross, own = float(np.sum(first * second)), float(np.sum(second**2))
    sum_c2 = max(0.0, all_pairs / sum_w**2 - 2.0 * cross + own)
    d = h * (y - human_rate) / sum_h
    sum_cd = float(np.sum((first - second) * d))
    sum_d2 = float(np.sum(d * d))
    if lam is None:
        tuned = -sum_cd / sum_c2 if sum_c2 > 0.0 else 0.0
        lam = min(1.0, max(0.0, tuned))
    estimate = min(1.0, max(0.0, lam * judge_rate + human_rate - lam * judge_rate_h))
    # n/(n−1): the usual small-sample correction of a with-replacement variance, over the
    # human labels, the scarcer phase. One human label says nothing about its own spread:
    # infinite variance, interval [0, 1].
    correction = human_n / (human_n - 1) if human_n > 1 else math.inf
    sum_e2 = max(0.0, lam * lam * sum_c2 + 2.0 * lam * sum_cd + sum_d2)
    variance = correction * sum_e2 if human_n > 1 else math.inf
    human_variance = correction * sum_d2 if human_n > 1 else math.inf
    kish_h = sum_h**2 / float(np.sum(h * h))
    ci_low, ci_high = _wilson(estimate, variance, kish_h, confidence)
    human_low, human_high = _wilson(human_rate, human_variance, kish_h, confidence)

    bias_values = f - y
    bias = float(np.sum(h * bias_values)) / sum_h
    bias_spread = float(np.sum((h * (bias_values - bias)) ** 2))
    bias_se = math.sqrt(correction * bias_spread) / sum_h if human_n > 1 else math.inf
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    effective = kish_h * human_variance / variance if 0.0 < variance < math.inf else float(human_n)
    return PpiEstimate(
        estimate=estimate,
        std_error=math.sqrt(variance),
        ci_low=ci_low,
        ci_high=ci_high,
        lam=lam,
        judge_n=judge_sums.n,
        human_n=human_n,
        effective_human_n=effective,
        judge_bias=bias,
        judge_bias_std_error=bias_se,
        judge_bias_ci_low=bias - z * bias_se,
        judge_bias_ci_high=bias + z * bias_se,
        judge_only=judge_only,
        human_only_estimate=human_rate,
        human_only_std_error=math.sqrt(human_variance),
        human_only_ci_low=human_low,
        human_only_ci_high=human_high,
    )


def _wilson(
    estimate: float, variance: float, fallback_n: float, confidence: float
) -> tuple[float, float]:
    """Wilson interval on n* = θ̂(1−θ̂)/V̂ (the n whose binomial variance at θ̂ is V̂), so
    it bends near 0 the way a rate's should; at θ̂ = 0 or 1, or V̂ = 0, on `fallback_n`.
    Simulated (5000 judge labels, judge missing 30 % of harm and flagging 5 % of good
    pairs): coverage 0.92–0.95 from 200 human labels at harm 5 % and from 50 at 20 %;
    the normal interval covered 0.82 at 50 labels and 5 %."""
    if math.isinf(variance):
        return 0.0, 1.0
    n_star = (
        estimate * (1.0 - estimate) / variance
        if 0.0 < estimate < 1.0 and variance > 0.0
        else fallback_n
    )
    return wilson_interval(estimate, n_star, confidence)
