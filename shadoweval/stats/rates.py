"""Hájek-weighted rates and means over a Poisson sample with known inclusion probabilities.

Every sampled decision carries the inclusion probability π it was sampled with
(DESIGN.md, Sampling); each label is weighted by w = 1/π so the estimates stand
for all routed traffic, not for the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from shadoweval.stats.validation import (
    FloatArray,
    _binary,
    _check_confidence,
    _inclusion_probability,
    _two_sided_z,
    _vector,
)

# Two-sided 95 % normal quantile Φ⁻¹(0.975), the one z of every fixed-95 % interval.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class RateEstimate:
    """A weighted rate with its standard error and confidence interval.

    `n` is the number of labels, `effective_n` Kish's effective sample size of
    their weights, `weight_sum` Σ1/π (the estimated number of decisions the
    rate stands for). The interval is clipped to [0, 1].
    """

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float
    weight_sum: float


@dataclass(frozen=True)
class MeanEstimate:
    """A weighted mean of a continuous value, with a normal-theory interval (not clipped)."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float
    weight_sum: float


def kish_effective_sample_size(weights: npt.ArrayLike) -> float:
    """Kish's effective sample size n_eff = (Σw)² / Σw².

    Equals n for equal weights and shrinks as weights get more unequal. Empty
    input, or weights that are all zero, give 0.0.

    Source: Kish, L. (1965), *Survey Sampling*, Wiley.
    """
    w = _vector(weights, "weights")
    if np.any(w < 0.0):
        raise ValueError("weights must be non-negative")
    sum_of_squares = float(np.sum(w * w))
    if sum_of_squares == 0.0:
        return 0.0
    return float(np.sum(w)) ** 2 / sum_of_squares


def design_effect(weights: npt.ArrayLike) -> float:
    """Kish's design effect of unequal weighting, deff = n / n_eff = 1 + CV²(w).

    CV is the coefficient of variation of the weights with divisor n. Multiply a
    sample size computed for simple random sampling by deff. nan for empty
    input or all-zero weights.

    Source: Kish, L. (1965), *Survey Sampling*, Wiley; Kish, L. (1992),
    "Weighting for unequal P_i", *Journal of Official Statistics* 8(2):183–200.
    """
    w = _vector(weights, "weights")
    n_eff = kish_effective_sample_size(w)
    if n_eff == 0.0:
        return math.nan
    return len(w) / n_eff


def wilson_interval(rate: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion `rate` observed on `n` (possibly effective) trials.

    (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n), z the two-sided normal
    quantile. n need not be an integer; n = inf gives the point (rate, rate),
    n ≤ 0 the limit (0, 1), a nan rate (nan, nan).

    Source: Wilson, E. B. (1927), "Probable inference, the law of succession, and
    statistical inference", *JASA* 22:209–212; Brown, Cai & DasGupta (2001),
    *Statistical Science* 16:101–133.
    """
    z = _two_sided_z(confidence)
    if math.isnan(rate) or math.isnan(n):
        return math.nan, math.nan
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    if n <= 0.0:
        return 0.0, 1.0
    if math.isinf(n):
        return rate, rate
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (rate + z2 / (2.0 * n)) / denominator
    half_width = z / denominator * math.sqrt(rate * (1.0 - rate) / n + z2 / (4.0 * n * n))
    # Exact at the edges: rounding would otherwise give 0.9999999999999999 for rate 1.
    low = 0.0 if rate == 0.0 else max(0.0, centre - half_width)
    high = 1.0 if rate == 1.0 else min(1.0, centre + half_width)
    return low, high


def _hajek(values: FloatArray, pi: FloatArray) -> tuple[float, float, FloatArray]:
    """Hájek mean and its linearised variance under Poisson sampling."""
    w = 1.0 / pi
    weight_sum = float(np.sum(w))
    estimate = float(np.sum(w * values)) / weight_sum
    residual = values - estimate
    variance = float(np.sum((1.0 - pi) * w * w * residual * residual)) / weight_sum**2
    return estimate, variance, w


def hajek_rate(
    y: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> RateEstimate:
    """Hájek-weighted rate of a 0/1 label under Poisson sampling with known π.

    p̂ = Σ wᵢyᵢ / Σ wᵢ with wᵢ = 1/πᵢ; its Taylor-linearised variance under Poisson
    sampling (joint inclusion πᵢπⱼ) is V̂ = Σ (1−πᵢ) wᵢ² (yᵢ − p̂)² / (Σ wᵢ)²
    (drift.md §3c). The estimate is for the finite population of decisions the
    sample was drawn from: decisions sampled with π = 1 are a census and add no
    variance, so an all-π=1 sample gives a zero-width interval.

    Interval: Wilson on the design-based effective sample size
    n* = p̂(1−p̂)/V̂ (Korn & Graubard), i.e. the Wilson interval whose variance at
    p̂ equals V̂, so it keeps the design variance but bends near 0 and 1 the way
    Wilson does. Simulated with two or three strata whose rates differ and π
    by Neyman allocation (π_h ∝ √(p_h(1−p_h)), so π tracks the outcome), rates
    0.05–0.2 and Kish n_eff 100–400, it covered 0.936–0.953 (12 settings × 20k
    repetitions), where the normal interval p̂ ± z√V̂ covered 0.907–0.947; see
    tests/unit/stats/test_rates.py. Flooring the design effect at 1 (n* ≤ n)
    over-covered there, up to 0.98, so n* is not capped.
    When p̂ is 0 or 1, V̂ is 0 and says nothing; n* then falls back to the
    variance-free (Σw)²/Σ(1−π)w² (Kish's n_eff with the same (1−π) factor).
    Caveat: when a heavily weighted stratum expects only one or two positives
    among its labels, V̂ is unstable and the interval under-covers (0.86 with
    1.3 expected positives and a 10× weight ratio); keep a per-stratum floor
    on the sample size.

    n = 0 gives an estimate of nan with n = 0. `confidence` is two-sided.

    Sources: Hájek, J. (1971), comment in *Foundations of Statistical Inference*,
    Holt, Rinehart & Winston, p. 236; Särndal, Swensson & Wretman (1992), *Model
    Assisted Survey Sampling*, Springer (Poisson sampling; Taylor linearisation);
    Korn & Graubard (1998), *Survey Methodology* 24(2):193–201; Kott (2017), "A
    note on Wilson coverage intervals for proportions estimated from complex
    samples", *Survey Methodology* 43(2); Franco, Little, Louis & Slud (2019),
    *J. Survey Statistics and Methodology* 7(3):334–364.
    """
    labels = _binary(y, "y")
    pi = _inclusion_probability(inclusion_probability, len(labels))
    _check_confidence(confidence)
    n = len(labels)
    if n == 0:
        return RateEstimate(math.nan, math.nan, math.nan, math.nan, 0, 0.0, 0.0)
    estimate, variance, w = _hajek(labels, pi)
    estimate = min(1.0, max(0.0, estimate))
    if 0.0 < estimate < 1.0:
        interval_n = estimate * (1.0 - estimate) / variance if variance > 0.0 else math.inf
    else:
        variance_weight = float(np.sum((1.0 - pi) * w * w))
        interval_n = float(np.sum(w)) ** 2 / variance_weight if variance_weight > 0 else math.inf
    ci_low, ci_high = wilson_interval(estimate, interval_n, confidence)
    return RateEstimate(
        estimate=estimate,
        std_error=math.sqrt(variance),
        ci_low=ci_low,
        ci_high=ci_high,
        n=n,
        effective_n=kish_effective_sample_size(w),
        weight_sum=float(np.sum(w)),
    )


def hajek_mean(
    x: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> MeanEstimate:
    """Hájek-weighted mean of a continuous value (e.g. a judge score delta) under Poisson sampling.

    x̂ = Σ wᵢxᵢ / Σ wᵢ, V̂ = Σ (1−πᵢ) wᵢ² (xᵢ − x̂)² / (Σ wᵢ)², interval x̂ ± z·√V̂
    (normal; not clipped). With few effective observations or heavy tails the
    normal interval is optimistic. n = 0 gives nan with n = 0.

    Sources: Särndal, Swensson & Wretman (1992), *Model Assisted Survey
    Sampling*, Springer (Taylor linearisation); drift.md §3c.
    """
    values = _vector(x, "x")
    pi = _inclusion_probability(inclusion_probability, len(values))
    z = _two_sided_z(confidence)
    n = len(values)
    if n == 0:
        return MeanEstimate(math.nan, math.nan, math.nan, math.nan, 0, 0.0, 0.0)
    estimate, variance, w = _hajek(values, pi)
    std_error = math.sqrt(variance)
    return MeanEstimate(
        estimate=estimate,
        std_error=std_error,
        ci_low=estimate - z * std_error,
        ci_high=estimate + z * std_error,
        n=n,
        effective_n=kish_effective_sample_size(w),
        weight_sum=float(np.sum(w)),
    )


def harm_rate(
    strong_needed: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> RateEstimate:
    """Harm rate: the weighted mean of `strong_needed` over cheap-routed traffic.

    `strong_needed = 1` when the stronger tier's answer wins in both judge
    orders, else 0 (a tie or an inconsistent pair means the cheaper answer was
    acceptable) — DESIGN.md, Judge. Pass only cheap-routed decisions. The
    estimate, variance and interval are `hajek_rate`'s.
    """
    return hajek_rate(strong_needed, inclusion_probability, confidence)


def missed_savings_rate(
    cheap_acceptable: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> RateEstimate:
    """Missed savings: the weighted mean of `cheap_acceptable` over strong-routed traffic.

    `cheap_acceptable = 1 − strong_needed`, measured on reverse shadows (strong-
    routed requests re-run on the cheap tier) — DESIGN.md, Judge. Pass only
    strong-routed decisions. The estimate, variance and interval are
    `hajek_rate`'s.
    """
    return hajek_rate(cheap_acceptable, inclusion_probability, confidence)


def sample_size_for_drop(
    p0: float, p1: float, alpha: float = 0.05, power: float = 0.8, one_sided: bool = True
) -> int:
    """Labels needed to detect a change of a rate from p0 to p1 with a one-sample test.

    n = ⌈[z_a·√(p0(1−p0)) + z_β·√(p1(1−p1))]² / (p1 − p0)²⌉, with z_a = z_{1−α}
    (one-sided) or z_{1−α/2} (two-sided) and z_β = z_{power}. The formula is
    symmetric in the direction of the change. It assumes equal weights:
    multiply by `design_effect` of the expected weights for a weighted sample.
    Example (drift.md §3d): p0 = .90, p1 = .85 needs 253 one-sided, 316 two-sided.

    Sources: Lachin, J. M. (1981), "Introduction to sample size determination and
    power analysis for clinical trials", *Controlled Clinical Trials* 2:93–113;
    Fleiss, Levin & Paik (2003), *Statistical Methods for Rates and Proportions*,
    3rd ed., Wiley, ch. 2; drift.md §3d.
    """
    for name, value in (("p0", p0), ("p1", p1), ("alpha", alpha), ("power", power)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {value}")
    if p0 == p1:
        raise ValueError("p0 and p1 must differ")
    normal = NormalDist()
    z_alpha = normal.inv_cdf(1.0 - (alpha if one_sided else alpha / 2.0))
    z_beta = normal.inv_cdf(power)
    spread = z_alpha * math.sqrt(p0 * (1.0 - p0)) + z_beta * math.sqrt(p1 * (1.0 - p1))
    n = (spread / (p1 - p0)) ** 2
    # Guard against a float landing a hair above an exact integer.
    return max(1, math.ceil(n - 1e-9))


@dataclass(frozen=True)
class WeightedSums:
    """Sufficient statistics of a Hájek rate or mean, so windows can be added up.

    With w = 1/π and v = (1 − π)w²: n, Σw, Σw², Σw·y, Σv, Σv·y, Σv·y². For a
    0/1 label y² = y, so Σv·y² equals Σv·y.
    """

    n: int
    sum_w: float
    sum_w2: float
    sum_wy: float
    sum_v: float
    sum_vy: float
    sum_vy2: float


def _rate_from_sums(
    sums: WeightedSums, estimate: float, variance: float, interval_n: float, confidence: float
) -> RateEstimate:
    """The `RateEstimate` of window sums: Wilson on `interval_n`, Kish's n_eff."""
    ci_low, ci_high = wilson_interval(estimate, interval_n, confidence)
    return RateEstimate(
        estimate=estimate,
        std_error=math.sqrt(variance),
        ci_low=ci_low,
        ci_high=ci_high,
        n=sums.n,
        effective_n=sums.sum_w**2 / sums.sum_w2 if sums.sum_w2 > 0 else 0.0,
        weight_sum=sums.sum_w,
    )


def hajek_rate_from_sums(sums: WeightedSums, confidence: float = 0.95) -> RateEstimate:
    """`hajek_rate` computed from window sums: the same estimate, variance and interval.

    V̂ = Σ v (y − p̂)² / (Σw)² expands to (Σv·y² − 2p̂ Σv·y + p̂² Σv) / (Σw)².
    """
    _check_confidence(confidence)
    if sums.n == 0 or sums.sum_w <= 0:
        return RateEstimate(math.nan, math.nan, math.nan, math.nan, 0, 0.0, 0.0)
    estimate = min(1.0, max(0.0, sums.sum_wy / sums.sum_w))
    numerator = sums.sum_vy2 - 2 * estimate * sums.sum_vy + estimate**2 * sums.sum_v
    variance = max(0.0, numerator) / sums.sum_w**2
    if 0.0 < estimate < 1.0:
        interval_n = estimate * (1.0 - estimate) / variance if variance > 0.0 else math.inf
    else:
        interval_n = sums.sum_w**2 / sums.sum_v if sums.sum_v > 0 else math.inf
    return _rate_from_sums(sums, estimate, variance, interval_n, confidence)


def hajek_mean_from_sums(sums: WeightedSums, confidence: float = 0.95) -> MeanEstimate:
    """`hajek_mean` from window sums (y the value): x̂ = Σw·y/Σw, normal interval."""
    z = _two_sided_z(confidence)
    if sums.n == 0 or sums.sum_w <= 0:
        return MeanEstimate(math.nan, math.nan, math.nan, math.nan, 0, 0.0, 0.0)
    estimate = sums.sum_wy / sums.sum_w
    numerator = sums.sum_vy2 - 2 * estimate * sums.sum_vy + estimate**2 * sums.sum_v
    std_error = math.sqrt(max(0.0, numerator)) / sums.sum_w
    return MeanEstimate(
        estimate=estimate,
        std_error=std_error,
        ci_low=estimate - z * std_error,
        ci_high=estimate + z * std_error,
        n=sums.n,
        effective_n=sums.sum_w**2 / sums.sum_w2 if sums.sum_w2 > 0 else 0.0,
        weight_sum=sums.sum_w,
    )


def weighted_sums(y: npt.ArrayLike, inclusion_probability: npt.ArrayLike) -> WeightedSums:
    """The sufficient statistics of values `y` sampled with probabilities π."""
    values = _vector(y, "y")
    pi = _inclusion_probability(inclusion_probability, len(values))
    w = 1.0 / pi
    v = (1.0 - pi) * w * w
    return WeightedSums(
        n=len(values),
        sum_w=float(w.sum()),
        sum_w2=float((w * w).sum()),
        sum_wy=float((w * values).sum()),
        sum_v=float(v.sum()),
        sum_vy=float((v * values).sum()),
        sum_vy2=float((v * values * values).sum()),
    )


# --- process-level (superpopulation) rates -----------------------------------------------


def _process_interval_n(estimate: float, variance: float, sum_w: float, sum_w2: float) -> float:
    """The Wilson n whose variance at p̂ equals V̂ (as in `hajek_rate`); at p̂ = 0 or 1,
    where V̂ is 0 and says nothing, Kish's (Σw)²/Σw², finite for every finite sample."""
    if 0.0 < estimate < 1.0 and variance > 0.0:
        return estimate * (1.0 - estimate) / variance
    return sum_w**2 / sum_w2 if sum_w2 > 0.0 else math.inf


def process_rate_from_sums(sums: WeightedSums, confidence: float = 0.95) -> RateEstimate:
    """The segment's rate on its traffic (superpopulation), from window sums.

    The estimate is the Hájek p̂ = Σw·y / Σw of `hajek_rate`; the variance is the
    with-replacement (no finite-population correction) V̂ = Σ w² (y − p̂)² / (Σw)²,
    which counts each label's Bernoulli noise even when it was sampled with π = 1.
    The question it answers is "what is the router's harm probability on this
    segment's traffic", not "what share of these past requests was harmed": a
    census of 303 decisions still estimates that probability with n = 303, so the
    interval never has zero width for a finite sample. With every π = 1 it is
    the plain Wilson interval on n labels.

    The window sums carry Σ(1−π)w² and Σ(1−π)w²y (`hajek_rate_from_sums`); since
    (1−π)w² = w² − w, Σw²y = Σv·y + Σw·y, so the process variance needs no new sum:
    for a 0/1 label Σw²(y−p̂)² = (1−2p̂)·Σw²y + p̂²·Σw². Interval: Wilson on
    n* = p̂(1−p̂)/V̂ (Korn & Graubard); at p̂ = 0 or 1 on Kish's n_eff.

    Sources: Hansen & Hurwitz (1943) and Särndal, Swensson & Wretman (1992), §2.9
    and ch. 13 (with-replacement variance as a model-plus-design variance);
    Korn & Graubard (1998), *Survey Methodology* 24(2):193–201.
    """
    _check_confidence(confidence)
    if sums.n == 0 or sums.sum_w <= 0:
        return RateEstimate(math.nan, math.nan, math.nan, math.nan, 0, 0.0, 0.0)
    estimate = min(1.0, max(0.0, sums.sum_wy / sums.sum_w))
    sum_w2y = sums.sum_vy + sums.sum_wy
    numerator = (1.0 - 2.0 * estimate) * sum_w2y + estimate**2 * sums.sum_w2
    variance = max(0.0, numerator) / sums.sum_w**2
    interval_n = _process_interval_n(estimate, variance, sums.sum_w, sums.sum_w2)
    return _rate_from_sums(sums, estimate, variance, interval_n, confidence)


def process_rate(
    y: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> RateEstimate:
    """`process_rate_from_sums` of 0/1 labels sampled with probabilities π: the default
    interval of every harm, missed-savings and win rate shadoweval shows. The
    finite-population figure (`hajek_rate`) is a labelled secondary."""
    labels = _binary(y, "y")
    return process_rate_from_sums(weighted_sums(labels, inclusion_probability), confidence)


def process_harm_rate(
    strong_needed: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> RateEstimate:
    """Harm rate (see `harm_rate`) with the process-level interval of `process_rate`."""
    return process_rate(strong_needed, inclusion_probability, confidence)


def process_missed_savings_rate(
    cheap_acceptable: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> RateEstimate:
    """Missed savings (see `missed_savings_rate`) with the process-level interval."""
    return process_rate(cheap_acceptable, inclusion_probability, confidence)
