"""Sequential detection of a harm-rate rise per segment, checkable after every label.

Labels are `strong_needed` (1 = the strong answer won in both orders) of one
stratum (segment × routed tier), consumed in (ts, request_id) order up to the
watermark (DESIGN.md, Time). Within a stratum π is constant or depends only on
logged variables, so the labels are an unweighted Bernoulli stream and need no
1/π weights here (reference/drift.md §3c).

The production detector, a change-point GLR that needs no baseline, is
`change_point.py`. Here, incremental (feeding labels in chunks gives the same state as feeding
them at once) and used by the benchmarks and for display:

- the mixture SPRT, an anytime-valid e-process for H0: harm ≤ p0 — with it,
  P(ever alarming under H0) ≤ α however often it is checked (Ville's inequality);
- the Bernoulli CUSUM for a known change p0 → p1 at an unknown time (the oracle of
  `shadoweval bench detect`), in `cusum.py`;
- the Shiryaev–Roberts e-detector for a known p0 (the former production detector,
  which took p0 from a segment's first labels via `baseline_harm_rate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_ITERATIONS = 100_000

_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


# ---------------------------------------------------------------------------
# Validation helpers


def _check_probability(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return value


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0.0) or math.isinf(value):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


def _as_labels(labels: ArrayLike) -> NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of 0/1, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"labels must be numeric 0/1, got dtype {array.dtype}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("labels must contain only 0 and 1 (strong_needed), no NaN or other values")
    return array.astype(np.int64)


# ---------------------------------------------------------------------------
# Regularized incomplete beta in log space


def _beta_continued_fraction(a: FloatArray, b: FloatArray, x: FloatArray) -> FloatArray:
    """Continued fraction of I_x(a, b), modified Lentz, vectorised.

    Numerical Recipes (Press et al., 3rd ed., §6.4, `betacf`), DLMF 8.17.22. It
    converges fast for x < (a+1)/(a+b+2), in O(sqrt(max(a, b))) terms.
    """
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = np.ones_like(a)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < _CF_TINY, _CF_TINY, d)
    d = 1.0 / d
    h = d.copy()
    for m in range(1, _CF_MAX_ITERATIONS + 1):
        m2 = 2.0 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < _CF_TINY, _CF_TINY, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < _CF_TINY, _CF_TINY, c)
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < _CF_TINY, _CF_TINY, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < _CF_TINY, _CF_TINY, c)
        d = 1.0 / d
        delta = d * c
        h *= delta
        if np.all(np.abs(delta - 1.0) < _CF_EPS * 10):
            return h
    raise ArithmeticError("incomplete beta continued fraction did not converge")


def log_regularized_incomplete_beta(a: ArrayLike, b: ArrayLike, x: float) -> FloatArray:
    """log I_x(a, b), the log of the regularized incomplete beta function, elementwise.

    I_x(a, b) = x^a (1−x)^b / (a B(a, b)) · CF(a, b, x), with the continued
    fraction CF of Numerical Recipes §6.4 (DLMF 8.17.22), evaluated where it
    converges fast and through I_x(a, b) = 1 − I_{1−x}(b, a) elsewhere. The prefactor
    is formed in log space, so tails far below 1e-308 stay finite. Agrees with
    `scipy.special.betainc` to about 1e-12 relative where that does not underflow.
    """
    x = float(x)
    if not (0.0 < x < 1.0):
        raise ValueError(f"x must lie strictly between 0 and 1, got {x!r}")
    a_arr, b_arr = np.broadcast_arrays(
        np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    )
    if a_arr.size and (np.any(~(a_arr > 0)) or np.any(~(b_arr > 0))):
        raise ValueError("a and b must be positive")
    a_flat = a_arr.ravel()
    b_flat = b_arr.ravel()
    if a_flat.size == 0:
        return np.zeros(a_arr.shape, dtype=np.float64)
    log_beta = _lgamma(a_flat) + _lgamma(b_flat) - _lgamma(a_flat + b_flat)
    # x^a (1−x)^b / B(a, b) is symmetric under (a, b, x) → (b, a, 1−x).
    log_prefactor = a_flat * math.log(x) + b_flat * math.log1p(-x) - log_beta
    direct = x < (a_flat + 1.0) / (a_flat + b_flat + 2.0)
    first = np.where(direct, a_flat, b_flat)
    second = np.where(direct, b_flat, a_flat)
    point = np.where(direct, x, 1.0 - x)
    log_part = (
        log_prefactor - np.log(first) + np.log(_beta_continued_fraction(first, second, point))
    )
    # log1p(−I) keeps precision where the complement is the small side.
    result = np.where(direct, log_part, np.log1p(-np.exp(np.minimum(log_part, 0.0))))
    return np.asarray(result, dtype=np.float64).reshape(a_arr.shape)


# ---------------------------------------------------------------------------
# Mixture SPRT (anytime-valid e-process)


def mixture_log_e_value(
    successes: ArrayLike, failures: ArrayLike, p0: float, prior_a: float, prior_b: float
) -> FloatArray:
    """log M for H0: harm ≤ p0, mixing over q ~ Beta(a, b) truncated to (p0, 1).

    With S harms and F non-harms so far,

        M = ∫_{p0}^1 q^S (1−q)^F dBeta(q; a, b) / [(1 − I_{p0}(a, b)) p0^S (1−p0)^F]
          = B(a+S, b+F) I_{1−p0}(b+F, a+S) / [B(a, b) I_{1−p0}(b, a) p0^S (1−p0)^F].

    Each q > p0 gives a likelihood ratio whose expected factor per label,
    p q/p0 + (1−p)(1−q)/(1−p0), is ≤ 1 for every true harm rate p ≤ p0, so M is a
    nonnegative supermartingale under the whole composite null (Robbins 1970;
    Ramdas et al. 2023, "Game-theoretic statistics and safe anytime-valid inference").
    This is reference/drift.md §3b with the prior moved above p0 to detect a rise.
    """
    p0 = _check_probability("p0", p0)
    prior_a = _check_positive("prior_a", prior_a)
    prior_b = _check_positive("prior_b", prior_b)
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    if np.any(s < 0) or np.any(f < 0):
        raise ValueError("successes and failures must be nonnegative")
    s, f = np.broadcast_arrays(s, f)
    log_beta_prior = math.lgamma(prior_a) + math.lgamma(prior_b) - math.lgamma(prior_a + prior_b)
    log_prior_mass = float(log_regularized_incomplete_beta(prior_b, prior_a, 1.0 - p0))
    post_a = prior_a + s
    post_b = prior_b + f
    log_beta_post = _lgamma(post_a) + _lgamma(post_b) - _lgamma(post_a + post_b)
    log_post_mass = log_regularized_incomplete_beta(post_b, post_a, 1.0 - p0)
    return np.asarray(
        log_beta_post
        + log_post_mass
        - log_beta_prior
        - log_prior_mass
        - s * math.log(p0)
        - f * math.log1p(-p0),
        dtype=np.float64,
    )


@dataclass(frozen=True)
class MixtureSprtState:
    """The state of one segment's mixture SPRT.

    `log_e_value` is log M at the current count (an e-value at any stopping time);
    `alarmed` is sticky: once M reached 1/α it stays True, and `alarm_n` is the
    number of labels at which that first happened. p0, the prior and α must stay
    the same for the life of a state; a new baseline starts a new state.
    """

    successes: int = 0
    failures: int = 0
    log_e_value: float = 0.0
    alarmed: bool = False
    n: int = 0
    alarm_n: int | None = None


def mixture_sprt_update(
    state: MixtureSprtState,
    labels: ArrayLike,
    p0: float,
    prior_a: float,
    prior_b: float,
    alpha: float,
) -> MixtureSprtState:
    """Feed labels (1 = harm) in order; alarm when M ≥ 1/α at any label.

    M is `mixture_log_e_value` after each label. By Ville's inequality
    P_H0(sup_t M_t ≥ 1/α) ≤ α (Ville 1939), so the test may be read after every
    label; every intermediate label of the chunk is checked, which makes the update
    incremental: two chunks give exactly the state one chunk gives.

    A prior centred on the alternative you care about detects it fastest; see
    `beta_prior_for_alternative`. Use α/K for K segments (`alpha_per_segment`).
    """
    alpha = _check_probability("alpha", alpha)
    y = _as_labels(labels)
    if state.n != state.successes + state.failures:
        raise ValueError("inconsistent state: n must equal successes + failures")
    if y.size == 0:
        return state
    successes = state.successes + np.cumsum(y)
    failures = state.failures + np.cumsum(1 - y)
    log_e = mixture_log_e_value(successes, failures, p0, prior_a, prior_b)
    alarmed = state.alarmed
    alarm_n = state.alarm_n
    if not alarmed:
        crossed = np.flatnonzero(log_e >= math.log(1.0 / alpha))
        if crossed.size:
            alarmed = True
            alarm_n = state.n + int(crossed[0]) + 1
    return MixtureSprtState(
        successes=int(successes[-1]),
        failures=int(failures[-1]),
        log_e_value=float(log_e[-1]),
        alarmed=alarmed,
        n=state.n + int(y.size),
        alarm_n=alarm_n,
    )


def mixture_sprt_boundary(
    n_max: int, p0: float, prior_a: float, prior_b: float, alpha: float
) -> NDArray[np.int64]:
    """The smallest harm count that alarms at each label count n = 1 … n_max.

    M is increasing in S at fixed n (every q in the mixture exceeds p0), so the
    alarm region at n is S ≥ k(n); found by vectorised bisection on S. Entry n−1
    holds k(n), or n+1 where no count alarms yet. Useful to show "alarm once k of
    n labels are harms", and k(n)/n − p0 is the rise detectable at n labels.
    """
    if int(n_max) != n_max or n_max < 1:
        raise ValueError(f"n_max must be a positive integer, got {n_max!r}")
    alpha = _check_probability("alpha", alpha)
    n = np.arange(1, int(n_max) + 1, dtype=np.int64)
    lo = np.full(n.shape, -1, dtype=np.int64)  # known not to alarm
    hi = n + 1  # sentinel: alarms (or impossible)
    threshold = math.log(1.0 / alpha)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        # Settled entries may hold mid = −1; evaluate them anywhere valid, the result is unused.
        probe = np.clip(mid, 0, n)
        log_e = mixture_log_e_value(probe, n - probe, p0, prior_a, prior_b)
        active = hi - lo > 1
        alarms = log_e >= threshold
        hi = np.where(active & alarms, mid, hi)
        lo = np.where(active & ~alarms, mid, lo)
    return hi


def beta_prior_for_alternative(p1: float, strength: float = 20.0) -> tuple[float, float]:
    """A Beta(a, b) prior with mean p1 and a + b = strength.

    Mixture SPRTs detect fastest the alternatives where the prior puts its mass
    (Ramdas et al. 2023); strength ≈ 20 keeps the prior broad enough (sd ≈
    sqrt(p1(1−p1)/21)) to cover rises well past p1 too. Returns (a, b).
    """
    p1 = _check_probability("p1", p1)
    strength = _check_positive("strength", strength)
    return p1 * strength, (1.0 - p1) * strength


def baseline_harm_rate(
    harm_count: int, n_labels: int, confidence: float = 0.95, margin: float = 0.0
) -> float:
    """p0 for the detectors: the one-sided upper confidence bound of the reference
    harm rate, plus a tolerated margin.

    Clopper–Pearson (1934): the upper bound u solves P(Binomial(n, u) ≤ x) =
    1 − confidence, i.e. I_u(x+1, n−x) = confidence (u = 1 when x = n), found by
    bisection on the log incomplete beta. Using the bound instead of the point
    estimate keeps the reference window's own sampling noise from becoming false
    alarms. The result is capped below 1 so the detectors stay defined.
    """
    if int(n_labels) != n_labels or n_labels < 1:
        raise ValueError(f"n_labels must be a positive integer, got {n_labels!r}")
    if int(harm_count) != harm_count or not (0 <= harm_count <= n_labels):
        raise ValueError(f"harm_count must be an integer in [0, n_labels], got {harm_count!r}")
    confidence = _check_probability("confidence", confidence)
    if not (0.0 <= margin < 1.0):
        raise ValueError(f"margin must lie in [0, 1), got {margin!r}")
    x, n = int(harm_count), int(n_labels)
    cap = 1.0 - 1e-9
    if x == n:
        return cap
    target = math.log(confidence)
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        # I_u(x+1, n−x) increases in u; the bound is where it reaches the confidence.
        if float(log_regularized_incomplete_beta(x + 1, n - x, mid)) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return min(hi + margin, cap)


# ---------------------------------------------------------------------------
# Multiple segments


def alpha_per_segment(alpha: float, n_segments: int) -> float:
    """Bonferroni: α/K per segment keeps P(any false alarm among K segments) ≤ α.

    Valid under any dependence between segments (union bound); with Ville's
    inequality per segment it holds for continuous monitoring too.
    """
    alpha = _check_probability("alpha", alpha)
    if int(n_segments) != n_segments or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments!r}")
    return alpha / int(n_segments)


def e_bh(e_values: ArrayLike, alpha: float) -> tuple[int, ...]:
    """e-Benjamini–Hochberg: the indices of the hypotheses rejected at FDR level α.

    With e-values e_1 … e_K sorted decreasingly as e_(1) ≥ … ≥ e_(K), let
    k* = max{k : e_(k) ≥ K/(α k)} and reject the k* largest (Wang & Ramdas 2022,
    "False discovery rate control with e-values", JRSS-B 84(3)). FDR ≤ α under
    arbitrary dependence. Pass current e-values (exp of `log_e_value`, which is an
    e-value at any stopping time), never a running maximum, which is not one.
    Returns the rejected indices in increasing order; inf is allowed.
    """
    alpha = _check_probability("alpha", alpha)
    e = np.asarray(e_values, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"e_values must be 1-D, got shape {e.shape}")
    if e.size == 0:
        return ()
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("e_values must be nonnegative numbers (inf allowed, no NaN)")
    k_total = e.size
    ranked = np.sort(e)[::-1]
    ranks = np.arange(1, k_total + 1)
    passing = np.flatnonzero(ranked >= k_total / (alpha * ranks))
    if passing.size == 0:
        return ()
    k_star = int(passing[-1]) + 1
    # Exactly k* values reach K/(α k*): more would contradict the maximality of k*.
    rejected = np.flatnonzero(e >= k_total / (alpha * k_star))
    return tuple(int(i) for i in rejected)


@dataclass(frozen=True)
class ShiryaevRobertsState:
    """One segment's Shiryaev–Roberts statistic, in log space (R_0 = 0)."""

    log_statistic: float = -math.inf
    n: int = 0
    alarmed: bool = False
    alarm_n: int | None = None


def shiryaev_roberts_update(
    state: ShiryaevRobertsState, labels: ArrayLike, p0: float, p1: float, threshold: float
) -> ShiryaevRobertsState:
    """Feed labels (1 = harm): R_t = (1 + R_{t−1}) Λ_t, alarm at the first R_t ≥ A = threshold.

    Λ_t = (p1/p0)^y ((1 − p1)/(1 − p0))^(1−y) is the likelihood ratio of a rise to p1.
    R_t is the sum of the e-processes started at every earlier label, so a change at
    any time is caught without restarting, and under H0 (harm ≤ p0) E[R_t] ≤ t: the
    expected number of false alarms within n labels is at most n/A, restarts
    included (Pollak 1985; Shin, Ramdas & Rinaldo 2023, e-detectors). Alarms are
    sticky; every label of the chunk is checked.
    """
    p0 = _check_probability("p0", p0)
    p1 = _check_probability("p1", p1)
    threshold = _check_positive("threshold", threshold)
    if p1 <= p0:
        raise ValueError("p1 must exceed p0: the detector looks for a rise")
    y = _as_labels(labels)
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    log_threshold = math.log(threshold)
    log_r, alarmed, alarm_n = state.log_statistic, state.alarmed, state.alarm_n
    for offset, label in enumerate(y):
        log_r = float(np.logaddexp(0.0, log_r)) + (up if label else down)
        if not alarmed and log_r >= log_threshold:
            alarmed, alarm_n = True, state.n + offset + 1
    return ShiryaevRobertsState(
        log_statistic=log_r, n=state.n + int(y.size), alarmed=alarmed, alarm_n=alarm_n
    )
