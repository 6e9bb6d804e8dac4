"""Sequential detection of a harm-rate rise per segment, checkable after every label.

Labels are `strong_needed` (1 = the strong answer won in both orders) of one
stratum (segment × routed tier), consumed in (ts, request_id) order up to the
watermark (DESIGN.md, Time). Within a stratum π is constant or depends only on
logged variables, so the labels are an unweighted Bernoulli stream and need no
1/π weights here (reference/drift.md §3c).

The production detector (`change_point_update`) needs no baseline: after every label
it tests each candidate change point within a bounded look-back with a two-sample
Bernoulli GLR, both the pre- and the post-change harm rate unknown (Siegmund &
Venkatraman 1995), for a rise of at least a minimum size; the segment's whole earlier
history is the pre-change side. So a change that starts before any reference window
could fill, or mid-way, is found, and no estimate of p0 is frozen. Its threshold
(`glr_threshold`) is calibrated by simulation for an in-control ARL over a stated
range of harm rates; `labels_to_detect` gives the labels it needs, for the planner.

Also here, incremental (feeding labels in chunks gives the same state as feeding
them at once) and used by the benchmarks and for display:

- the mixture SPRT, an anytime-valid e-process for H0: harm ≤ p0 — with it,
  P(ever alarming under H0) ≤ α however often it is checked (Ville's inequality);
- the Bernoulli CUSUM for a known change p0 → p1 at an unknown time (the oracle of
  `shadoweval bench detect`), with the threshold h set by simulation for a target
  in-control average run length;
- the Shiryaev–Roberts e-detector for a known p0 (the former production detector,
  which took p0 from a segment's first labels via `baseline_harm_rate`).

`rise_evidence` is the production statistic at the newest label over shorter post-change
stretches (from 15 labels): never an alarm, a lead for where a rise may be starting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist

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
# Bernoulli CUSUM


@dataclass(frozen=True)
class BernoulliCusumState:
    """The state of one segment's Bernoulli CUSUM.

    `statistic` is S_t (in nats); `alarmed` is sticky and `alarm_n` is the label count
    at the first S_t ≥ h. The statistic keeps updating after an alarm; start a new
    state after the alarm is handled.
    """

    statistic: float = 0.0
    n: int = 0
    alarmed: bool = False
    alarm_n: int | None = None


def _cusum_increments(p0: float, p1: float) -> tuple[float, float]:
    p0 = _check_probability("p0", p0)
    p1 = _check_probability("p1", p1)
    if not p1 > p0:
        raise ValueError(f"p1 must exceed p0 to detect a rise, got p0={p0}, p1={p1}")
    return math.log(p1 / p0), math.log1p(-p1) - math.log1p(-p0)


def _cusum_path(start: FloatArray, increments: FloatArray) -> FloatArray:
    """S_t = max(0, S_{t−1} + x_t) along the last axis, without a Python loop.

    Lindley's recursion unrolled: S_t = (s0 + C_t) − min(0, min_{k≤t}(s0 + C_k)),
    with C the cumulative sum of the increments.
    """
    walk = start[..., None] + np.cumsum(increments, axis=-1)
    return np.asarray(
        walk - np.minimum(0.0, np.minimum.accumulate(walk, axis=-1)), dtype=np.float64
    )


def bernoulli_cusum_update(
    state: BernoulliCusumState, labels: ArrayLike, p0: float, p1: float, h: float
) -> BernoulliCusumState:
    """Feed labels (1 = harm): S_t = max(0, S_{t−1} + y ln(p1/p0) + (1−y) ln((1−p1)/(1−p0))).

    Alarm at the first S_t ≥ h (Page 1954; the Bernoulli form of Reynolds &
    Stoumbos 1999; reference/drift.md §3b). It is the log-likelihood-ratio CUSUM, so
    the in-control ARL is at least e^h (Lorden 1971) — a loose bound; set h with
    `cusum_threshold_for_arl`. Every label of the chunk is checked.
    """
    up, down = _cusum_increments(p0, p1)
    h = _check_positive("h", h)
    y = _as_labels(labels)
    if y.size == 0:
        return state
    if state.statistic < 0 or math.isnan(state.statistic):
        raise ValueError("inconsistent state: statistic must be nonnegative")
    path = _cusum_path(np.asarray(state.statistic, dtype=np.float64), np.where(y == 1, up, down))
    alarmed, alarm_n = state.alarmed, state.alarm_n
    if not alarmed:
        crossed = np.flatnonzero(path >= h)
        if crossed.size:
            alarmed, alarm_n = True, state.n + int(crossed[0]) + 1
    return replace(
        state, statistic=float(path[-1]), n=state.n + int(y.size), alarmed=alarmed, alarm_n=alarm_n
    )


@dataclass(frozen=True)
class RunLengthEstimate:
    """A simulated average run length, in labels, with its Monte Carlo standard error.

    `censored_share` is the share of paths stopped at `max_run_length` before an alarm;
    with censoring the mean is a lower bound.
    """

    mean_labels: float
    standard_error_labels: float
    median_labels: float
    censored_share: float
    n_paths: int


def _simulate_cusum_run_lengths(
    up: float,
    down: float,
    p_true: float,
    h: float,
    rng: np.random.Generator,
    n_paths: int,
    max_run_length: int,
    stop_when_mean_reaches: float | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Run lengths of n_paths CUSUM paths started at 0, simulated in blocks.

    Paths that alarm leave the active set, so the work is Σ run lengths, not
    n_paths × the longest. With `stop_when_mean_reaches` = T the simulation stops as
    soon as Σ min(RL_i, t) ≥ n T, which already proves ARL ≥ T.
    """
    run_length = np.full(n_paths, max_run_length, dtype=np.int64)
    censored = np.ones(n_paths, dtype=np.bool_)
    active = np.arange(n_paths)
    statistic = np.zeros(n_paths, dtype=np.float64)
    finished_sum = 0.0
    t = 0
    block = 256
    while active.size and t < max_run_length:
        # Cap the block's element count so memory stays ~10 MB whatever n_paths is.
        width = min(block, max_run_length - t, max(16, 1_000_000 // active.size))
        harms = rng.random((active.size, width)) < p_true
        path = _cusum_path(statistic, np.where(harms, up, down))
        crossed = path >= h
        hit = crossed.any(axis=1)
        first = crossed.argmax(axis=1)
        done = active[hit]
        run_length[done] = t + first[hit] + 1
        censored[done] = False
        finished_sum += float(run_length[done].sum())
        statistic = path[~hit, -1]
        active = active[~hit]
        t += width
        if stop_when_mean_reaches is not None and (
            finished_sum + active.size * t >= stop_when_mean_reaches * n_paths
        ):
            run_length[active] = t
            break
        # Longer blocks once only long paths remain: fewer Python iterations.
        block = min(block * 2, 8192)
    return run_length, censored


def cusum_average_run_length(
    p0: float,
    p1: float,
    h: float,
    p_true: float,
    rng_seed: int,
    n_paths: int = 2000,
    max_run_length: int = 1_000_000,
) -> RunLengthEstimate:
    """Simulated average run length of the Bernoulli CUSUM(p0 → p1, h) when harm = p_true.

    ARL = mean over paths of the first t with S_t ≥ h, started at S_0 = 0;
    SE = sd/sqrt(n_paths). With p_true = p0 this is the in-control ARL (labels
    between false alarms); with p_true = p1 it is the detection delay of a change
    present from the start (zero-state ARL). Deterministic for a seed.
    """
    up, down = _cusum_increments(p0, p1)
    h = _check_positive("h", h)
    p_true = _check_probability("p_true", p_true)
    if n_paths < 2 or max_run_length < 1:
        raise ValueError("n_paths must be ≥ 2 and max_run_length ≥ 1")
    rng = np.random.default_rng(rng_seed)
    run_length, censored = _simulate_cusum_run_lengths(
        up, down, p_true, h, rng, n_paths, max_run_length
    )
    lengths = run_length.astype(np.float64)
    return RunLengthEstimate(
        mean_labels=float(lengths.mean()),
        standard_error_labels=float(lengths.std(ddof=1) / math.sqrt(n_paths)),
        median_labels=float(np.median(lengths)),
        censored_share=float(censored.mean()),
        n_paths=n_paths,
    )


def cusum_threshold_for_arl(
    p0: float,
    p1: float,
    target_arl: float,
    rng_seed: int,
    n_paths: int = 1000,
    tolerance: float = 0.01,
) -> float:
    """The CUSUM threshold h whose simulated in-control ARL (harm = p0) reaches target_arl.

    Bisection on h over (0, ln T]: h = ln T is always enough (ARL ≥ e^h, Lorden
    1971) and h = 0 alarms at the first label. Each step simulates n_paths paths
    under p0 with the same seed and stops as soon as the answer "ARL(h) ≥ T?" is
    settled, so a step costs at most about n_paths × T label draws (≈ 0.1 s per
    million on one core) and no run length is ever capped below what the answer needs.
    Returns the upper end of the final bracket, so ARL(h) ≥ T on the simulated paths.

    Accuracy: run lengths are near-geometric, so the simulated ARL at the returned h
    has a relative Monte Carlo error of about 1/sqrt(n_paths) (≈ 3 % at 1000 paths),
    plus the bracket width `tolerance` in h (≈ the same relative error in ARL, since
    ARL grows roughly like e^h). Check with `cusum_average_run_length` if it matters.
    """
    up, down = _cusum_increments(p0, p1)
    if not (target_arl > 1.0) or math.isinf(target_arl):
        raise ValueError(f"target_arl must be a finite number > 1, got {target_arl!r}")
    if n_paths < 10:
        raise ValueError(f"n_paths must be at least 10, got {n_paths!r}")
    tolerance = _check_positive("tolerance", tolerance)
    lo, hi = 0.0, math.log(target_arl)
    # Enough room for every path to reach the target mean; the early stop ends sooner.
    max_run_length = math.ceil(target_arl * n_paths) + 1
    while hi - lo > tolerance:
        mid = 0.5 * (lo + hi)
        rng = np.random.default_rng(rng_seed)
        run_length, _ = _simulate_cusum_run_lengths(
            up, down, p0, mid, rng, n_paths, max_run_length, stop_when_mean_reaches=target_arl
        )
        if run_length.mean() >= target_arl:
            hi = mid
        else:
            lo = mid
    return hi


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


# ---------------------------------------------------------------------------
# Change-point GLR with unknown pre- and post-change rates: the production detector

CHANGE_POINT_MIN_POST_LABELS = 50
"""The shortest post-change stretch tested. Shorter stretches (bursts of a few harms) made
most of the false alarms in simulation while adding nothing to the detection of the rises
the planner buys labels for; a rise to ≥ 0.5 from 0.1 still alarms at 50 labels."""
CHANGE_POINT_GRID_RATIO = 1.2
"""Consecutive candidate post-change lengths differ by this factor (a geometric grid)."""
CHANGE_POINT_REARM_FRACTION = 0.5
"""After an alarm, a new alarm needs the statistic to fall below this share of the
threshold first, so one episode of evidence raises one alarm."""
GLR_THRESHOLD_OFFSET_NATS = 4.8
"""c in h − ln h = ln A − c, the calibrated threshold rule (see `glr_threshold`)."""
GLR_CALIBRATED_ARL_RANGE = (1_000.0, 100_000.0)
GLR_CALIBRATED_HARM_RANGE = (0.01, 0.5)
GLR_CALIBRATED_MAX_WINDOW = 2_000
"""Any shorter look-back tests a subset of the same change points: fewer false alarms."""

_BISECTION_STEPS = 60


def change_point_post_lengths(window_labels: int) -> NDArray[np.int64]:
    """The candidate post-change lengths m: 50, 60, 72, … (each ⌈1.2 × the last⌉) up to and
    including `window_labels`, the look-back bound.

    Testing a geometric grid of change points instead of every one costs at most a
    factor 1.2 in where the post-change stretch is cut, i.e. a few per cent of evidence,
    and keeps the work per label at ~ln(W/50)/ln 1.2 candidates (window-limited GLR:
    Lai 1995, JRSS-B 57(4); a sparse set of candidate change times: Lai & Shan 1999,
    IEEE Trans. Automat. Control 44(5)).
    """
    if int(window_labels) != window_labels or window_labels < CHANGE_POINT_MIN_POST_LABELS:
        raise ValueError(
            f"window_labels must be an integer ≥ {CHANGE_POINT_MIN_POST_LABELS}, "
            f"got {window_labels!r}"
        )
    lengths = [CHANGE_POINT_MIN_POST_LABELS]
    while lengths[-1] * CHANGE_POINT_GRID_RATIO < window_labels:
        lengths.append(math.ceil(lengths[-1] * CHANGE_POINT_GRID_RATIO))
    if lengths[-1] != window_labels:
        lengths.append(int(window_labels))
    return np.unique(np.asarray(lengths, dtype=np.int64))


def _xlogx(count: FloatArray) -> FloatArray:
    """k ln k with 0 ln 0 = 0, for nonnegative integer counts held as floats."""
    return np.asarray(count * np.log(np.maximum(count, 1.0)), dtype=np.float64)


def _log_likelihood_at_mle(n: FloatArray, x: FloatArray) -> FloatArray:
    """max_p [x ln p + (n − x) ln(1 − p)] = x ln(x/n) + (n − x) ln(1 − x/n)."""
    return _xlogx(x) + _xlogx(n - x) - _xlogx(n)


def _xlogy(count: FloatArray, probability: FloatArray) -> FloatArray:
    return np.where(count > 0, count * np.log(np.maximum(probability, 1e-300)), 0.0)


def _boundary_log_likelihood(
    a: FloatArray, x: FloatArray, b: FloatArray, y: FloatArray, rise: float
) -> FloatArray:
    """max over p ∈ [0, 1 − δ] of x ln p + (a−x) ln(1−p) + y ln(p+δ) + (b−y) ln(1−p−δ).

    The post-change rate is held at exactly p + δ. The function is concave in p, so its
    derivative x/p − (a−x)/(1−p) + y/(p+δ) − (b−y)/(1−p−δ) decreases and bisection on its
    sign finds the maximum (an end point when the derivative keeps one sign).
    """
    lo = np.zeros_like(a)
    hi = np.full_like(a, 1.0 - rise)
    for _ in range(_BISECTION_STEPS):
        p = 0.5 * (lo + hi)
        slope = x / p - (a - x) / (1.0 - p) + y / (p + rise) - (b - y) / (1.0 - p - rise)
        rising = slope > 0
        lo = np.where(rising, p, lo)
        hi = np.where(rising, hi, p)
    p = 0.5 * (lo + hi)
    return (
        _xlogy(x, p) + _xlogy(a - x, 1.0 - p) + _xlogy(y, p + rise) + _xlogy(b - y, 1.0 - p - rise)
    )


def _rise_log_glr(
    a: FloatArray, x: FloatArray, b: FloatArray, y: FloatArray, rise: float
) -> FloatArray:
    """`rise_log_glr` on flat float arrays of valid counts."""
    pooled = _log_likelihood_at_mle(a + b, x + y)
    unconstrained = _log_likelihood_at_mle(a, x) + _log_likelihood_at_mle(b, y) - pooled
    # p̂_post − p̂_pre ≥ δ, multiplied through by a·b to stay exact on integer counts.
    observed_rise = y * a - x * b
    free = (observed_rise >= rise * a * b) & (observed_rise > 0)
    result = np.where(free, unconstrained, -np.inf)
    # With q̂ ≤ p̂ the constrained fit is worse than no change: −inf stands for "no rise".
    bound = ~free & (observed_rise > 0)
    if rise > 0.0 and np.any(bound):
        constrained = _boundary_log_likelihood(a[bound], x[bound], b[bound], y[bound], rise)
        result[bound] = constrained - pooled[bound]
    return result


def rise_log_glr(
    pre_labels: ArrayLike,
    pre_harms: ArrayLike,
    post_labels: ArrayLike,
    post_harms: ArrayLike,
    min_rise: float,
) -> FloatArray:
    """log GLR of "the harm rate rose by at least δ at this point" against "no change".

    With a pre-change stretch of a labels (x harms) and a post-change stretch of b labels
    (y harms), elementwise:

        log Λ = sup_{q ≥ p + δ} [ℓ_a(p) + ℓ_b(q)] − sup_r ℓ_{a+b}(r),
        ℓ_n(p) = harms · ln p + (n − harms) · ln(1 − p).

    Both rates are unknown: the pre-change one is estimated from the pre-change stretch
    only, so no clean baseline is assumed (the two-sample Bernoulli GLR of Siegmund &
    Venkatraman 1995, Ann. Statist. 23(1), made one-sided with an indifference zone δ).
    When q̂ − p̂ ≥ δ the supremum is at the two sample rates; otherwise it lies on
    q = p + δ (found by bisection) and the value is small or negative. −inf where the
    post-change rate is not above the pre-change one (no evidence of a rise).
    """
    if not (0.0 <= min_rise < 1.0) or math.isnan(min_rise):
        raise ValueError(f"min_rise must lie in [0, 1), got {min_rise!r}")
    a, x, b, y = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (pre_labels, pre_harms, post_labels, post_harms))
    )
    if np.any(a < 1) or np.any(b < 1) or np.any(x < 0) or np.any(y < 0):
        raise ValueError("both stretches need at least one label and nonnegative harms")
    if np.any(x > a) or np.any(y > b):
        raise ValueError("harms cannot exceed labels")
    ravel = [np.ascontiguousarray(v, dtype=np.float64).ravel() for v in (a, x, b, y)]
    return _rise_log_glr(ravel[0], ravel[1], ravel[2], ravel[3], float(min_rise)).reshape(a.shape)


def change_point_statistic(
    labels_seen: ArrayLike,
    harms_seen: ArrayLike,
    recent_harms: ArrayLike,
    post_lengths: ArrayLike,
    min_rise: float,
    *,
    floor: float | None = None,
) -> tuple[FloatArray, NDArray[np.int64]]:
    """The detector's statistic after label n: G_n = max(0, max_m log Λ(n − m, m)).

    Row i describes one moment: `labels_seen[i]` = n labels so far, `harms_seen[i]` their
    harms, `recent_harms[i, j]` the harms among the last `post_lengths[j]` labels (any
    NaN where that stretch is not available). Candidate j splits the n labels into
    everything before the last m = post_lengths[j] (pre-change: the segment's whole
    history, not a reference window) and the last m (post-change); it is tested when
    m ≤ n − 1. Returns G (≥ 0) and the index j of the maximising candidate (−1 when
    G = 0). With `floor`, G is exact where it reaches the floor and only known to be
    below it elsewhere (0 is returned there), which is all an alarm decision needs.
    """
    n = np.asarray(labels_seen, dtype=np.float64)
    total = np.asarray(harms_seen, dtype=np.float64)
    lengths = np.asarray(post_lengths, dtype=np.float64)
    recent = np.asarray(recent_harms, dtype=np.float64)
    if n.ndim != 1 or recent.shape != (n.size, lengths.size):
        raise ValueError("recent_harms must have shape (len(labels_seen), len(post_lengths))")
    pre_n = n[:, None] - lengths
    with np.errstate(invalid="ignore", divide="ignore"):
        # Only splits with a higher harm rate after than before can show a rise; the others
        # (about half under no change) are never evaluated.
        excess = recent / lengths - (total[:, None] - recent) / pre_n
        candidate = (pre_n >= 1.0) & (excess > 0)
        if floor is not None:
            # KL(q ‖ p) ≤ χ²(q ‖ p) = (q − p)²/(p(1 − p)), so the log GLR is at most Pearson's
            # X² = excess² · a b / (n p̂ (1 − p̂)), p̂ the pooled rate: a split whose X² is
            # below the floor cannot reach it, and needs no logarithm.
            pooled_rate = total / n
            spread = n * pooled_rate * (1.0 - pooled_rate)
            candidate &= excess * excess * pre_n * lengths >= floor * spread[:, None]
    rows, cols = np.nonzero(candidate)
    b = lengths[cols]
    y = recent[rows, cols]
    a = n[rows] - b
    x = total[rows] - y
    # The no-change fit depends on the row only.
    pooled = _log_likelihood_at_mle(n, total)[rows]
    unconstrained = _log_likelihood_at_mle(a, x) + _log_likelihood_at_mle(b, y) - pooled
    free = y * a - x * b >= min_rise * a * b
    values = np.full(recent.shape, -np.inf)
    values[rows[free], cols[free]] = unconstrained[free]
    # A split where the rise seen is below δ sits on q = p + δ, at most U: it needs the
    # bisection only where U could beat both the floor and its row's best free split.
    row_best = np.max(values, axis=1, initial=0.0)
    needed = ~free & (unconstrained > row_best[rows])
    if floor is not None:
        needed &= unconstrained >= floor
    if min_rise > 0.0 and np.any(needed):
        values[rows[needed], cols[needed]] = (
            _boundary_log_likelihood(a[needed], x[needed], b[needed], y[needed], min_rise)
            - pooled[needed]
        )
    best = np.argmax(values, axis=1) if values.size else np.zeros(n.size, dtype=np.int64)
    statistic = values[np.arange(n.size), best] if values.size else np.zeros(n.size)
    positive = statistic > 0
    if floor is not None:
        positive &= statistic >= floor
    return (
        np.where(positive, statistic, 0.0).astype(np.float64),
        np.where(positive, best, -1).astype(np.int64),
    )


def glr_threshold(arl_labels: float) -> float:
    """The alarm threshold h (nats) for an in-control average run length of ≥ A labels.

    h solves h − ln h = ln A − c (c = GLR_THRESHOLD_OFFSET_NATS = 4.8), iterated from
    h = ln A. Calibrated by simulation, not proved: on null streams (no change, fresh
    start, every label checked; 2·10⁷ labels per harm rate) the first-alarm run length of
    `change_point_update` followed ln ARL(h) ≈ h − ln h + 5.0 at the worst harm rates
    tried (0.3–0.5), so c = 4.8 keeps ARL ≥ A for A in GLR_CALIBRATED_ARL_RANGE, harm
    rates in GLR_CALIBRATED_HARM_RANGE, windows up to GLR_CALIBRATED_MAX_WINDOW and any
    min_rise ≥ 0 (a larger δ only lowers the statistic). At A = 30,000 (h = 7.53) the
    simulated ARL was 1.3–1.4 × A at harm 0.3–0.5, 1.5 × A at 0.1 and 2 × A at 0.02.
    With re-arming after each alarm that is at most about n/A false alarms per n labels
    per segment. Outside those ranges it is an extrapolation (at A = 10⁶ the ARL at harm
    0.5 was 0.95 × A). Without prior knowledge of the pre-change rate no bound holds
    uniformly (the null law of a Bernoulli GLR depends on the rate through
    discreteness), hence a stated range; tests/unit/stats/test_sequential.py and
    `shadoweval bench detect` re-measure it.
    """
    if not (arl_labels > 1.0) or math.isinf(arl_labels):
        raise ValueError(f"arl_labels must be a finite number > 1, got {arl_labels!r}")
    target = math.log(arl_labels) - GLR_THRESHOLD_OFFSET_NATS
    h = max(math.log(arl_labels), 1.0)
    # h ↦ target + ln h is a contraction for h > 1, so the fixed point is reached fast.
    for _ in range(100):
        h_next = max(target + math.log(h), 1.0)
        if abs(h_next - h) < 1e-12:
            break
        h = h_next
    return h


def labels_to_detect(
    p0: float,
    p1: float,
    *,
    arl_labels: float = 30_000.0,
    min_rise: float = 0.0,
    quantile: float = 0.8,
    pre_change_labels: float = math.inf,
) -> float:
    """Post-change labels the production detector needs to flag a rise p0 → p1, as the
    `quantile` (default 80th percentile) of its detection delay, approximately.

    At one post-change length m with n pre-change labels, the two-sample log GLR is about
    (√(2 m_eff K) + Z)²/2 with Z ~ N(0, 1), K = KL(p1 ‖ p0) = p1 ln(p1/p0) + (1−p1)
    ln((1−p1)/(1−p0)) and m_eff = m n/(m + n) (the pre-change rate is estimated too).
    It reaches h = `glr_threshold(arl_labels)` with probability q once
    √(2 m_eff K) ≥ √(2h) + z_q, so m_eff = (√(2h) + z_q)²/(2K) and m = m_eff n/(n − m_eff);
    never below CHANGE_POINT_MIN_POST_LABELS. The detector checks every label, so it
    usually alarms sooner: the figure is conservative (simulation: the true quantile
    lies between about 0.6× and 1× of it, see the tests). inf when the rise is smaller than
    `min_rise` or when n pre-change labels can never give enough evidence (n ≤ m_eff).
    The planner's daily floor is this / the detection window in days.
    """
    p0 = _check_probability("p0", p0)
    p1 = _check_probability("p1", p1)
    if not (0.0 < quantile < 1.0):
        raise ValueError(f"quantile must lie in (0, 1), got {quantile!r}")
    if not (pre_change_labels > 0):
        raise ValueError(f"pre_change_labels must be positive, got {pre_change_labels!r}")
    if p1 <= p0 or p1 - p0 < min_rise - 1e-12:
        return math.inf
    kl = p1 * math.log(p1 / p0) + (1.0 - p1) * math.log((1.0 - p1) / (1.0 - p0))
    h = glr_threshold(arl_labels)
    z = NormalDist().inv_cdf(quantile)
    root = math.sqrt(2.0 * h) + z
    if root <= 0:
        return float(CHANGE_POINT_MIN_POST_LABELS)
    effective = root * root / (2.0 * kl)
    if math.isinf(pre_change_labels):
        labels = effective
    elif pre_change_labels <= effective:
        return math.inf
    else:
        labels = effective * pre_change_labels / (pre_change_labels - effective)
    return float(max(labels, CHANGE_POINT_MIN_POST_LABELS))


@dataclass(frozen=True)
class ChangePointState:
    """One segment's change-point detector between worker passes (bounded: O(window)).

    `recent` holds the last ≤ window labels, oldest first; everything older is only
    counted in `n` and `harms` (it is the pre-change side of every candidate). The
    estimate at the current label: the last `post_labels` labels (`post_harms` harms)
    are the post-change stretch of the maximising candidate (0 when G = 0).
    `alarmed` is True from an alarm until G falls below the re-arm level; `alarm_n` is
    the label count at the current episode's alarm.
    """

    n: int = 0
    harms: int = 0
    recent: tuple[int, ...] = ()
    statistic: float = 0.0
    post_labels: int = 0
    post_harms: int = 0
    alarmed: bool = False
    alarm_n: int | None = None

    @property
    def pre_change_rate(self) -> float | None:
        pre = self.n - self.post_labels
        return (self.harms - self.post_harms) / pre if pre > 0 else None

    @property
    def post_change_rate(self) -> float | None:
        return self.post_harms / self.post_labels if self.post_labels > 0 else None


@dataclass(frozen=True)
class ChangePointAlarm:
    """One alarm: at label `n`, the change estimated to start at label `change_n`."""

    n: int
    change_n: int
    statistic: float
    pre_labels: int
    pre_harms: int
    post_labels: int
    post_harms: int

    @property
    def pre_change_rate(self) -> float:
        return self.pre_harms / self.pre_labels

    @property
    def post_change_rate(self) -> float:
        return self.post_harms / self.post_labels


@dataclass(frozen=True)
class ChangePointUpdate:
    state: ChangePointState
    alarms: tuple[ChangePointAlarm, ...]


_UPDATE_BLOCK_LABELS = 20_000


def change_point_update(
    state: ChangePointState,
    labels: ArrayLike,
    *,
    min_rise: float,
    threshold: float,
    window_labels: int,
) -> ChangePointUpdate:
    """Feed labels (1 = harm) in order; G_n (`change_point_statistic`) after every label.

    Alarm when G_n ≥ h = `threshold` while not alarmed; the episode ends (re-arms) once
    G_n < h × CHANGE_POINT_REARM_FRACTION. The change point of an alarm is the first
    label of its maximising post-change stretch. Every label of the chunk is checked and
    the state keeps all that later labels need, so two chunks give exactly the state and
    alarms of one. State stays bounded: the last `window_labels` labels plus two counts.
    """
    if not (threshold > 0) or math.isinf(threshold):
        raise ValueError(f"threshold must be a finite positive number, got {threshold!r}")
    if not (0.0 <= min_rise < 1.0):
        raise ValueError(f"min_rise must lie in [0, 1), got {min_rise!r}")
    lengths = change_point_post_lengths(window_labels)
    y = _as_labels(labels)
    if state.n < len(state.recent) or not (0 <= state.harms <= state.n):
        raise ValueError("inconsistent state: recent labels and counts disagree")
    if y.size == 0:
        return ChangePointUpdate(state, ())
    recent = np.asarray(state.recent, dtype=np.int64)
    sequence = np.concatenate([recent, y])
    cumulative = np.concatenate([[0], np.cumsum(sequence)])
    harms_before_sequence = state.harms - int(recent.sum())
    rearm_level = threshold * CHANGE_POINT_REARM_FRACTION
    statistic = np.zeros(y.size)
    best = np.full(y.size, -1, dtype=np.int64)
    for start in range(0, y.size, _UPDATE_BLOCK_LABELS):
        stop = min(start + _UPDATE_BLOCK_LABELS, y.size)
        # End of label j within `sequence` (exclusive) and the labels seen up to it.
        end = recent.size + np.arange(start, stop) + 1
        seen = state.n + np.arange(start, stop) + 1
        back = np.maximum(end[:, None] - lengths[None, :], 0)
        # A stretch longer than the labels kept (the window was widened since) is untestable.
        recent_harms = np.where(
            lengths[None, :] <= end[:, None],
            (cumulative[end][:, None] - cumulative[back]).astype(np.float64),
            np.nan,
        )
        statistic[start:stop], best[start:stop] = change_point_statistic(
            seen, harms_before_sequence + cumulative[end], recent_harms, lengths, min_rise
        )
    alarms: list[ChangePointAlarm] = []
    alarmed, alarm_n = state.alarmed, state.alarm_n
    for j in range(y.size):
        value = float(statistic[j])
        if not alarmed and value >= threshold:
            n_j = state.n + j + 1
            m = int(lengths[best[j]])
            end_j = recent.size + j + 1
            post_harms = int(cumulative[end_j] - cumulative[end_j - m])
            total_harms = harms_before_sequence + int(cumulative[end_j])
            alarms.append(
                ChangePointAlarm(
                    n=n_j,
                    change_n=n_j - m + 1,
                    statistic=value,
                    pre_labels=n_j - m,
                    pre_harms=total_harms - post_harms,
                    post_labels=m,
                    post_harms=post_harms,
                )
            )
            alarmed, alarm_n = True, n_j
        elif alarmed and value < rearm_level:
            alarmed = False
    last = y.size - 1
    post_labels = int(lengths[best[last]]) if best[last] >= 0 else 0
    end_last = recent.size + y.size
    post_harms = (
        int(cumulative[end_last] - cumulative[end_last - post_labels]) if post_labels else 0
    )
    keep = sequence[-int(window_labels) :]
    return ChangePointUpdate(
        ChangePointState(
            n=state.n + int(y.size),
            harms=state.harms + int(y.sum()),
            recent=tuple(int(v) for v in keep),
            statistic=float(statistic[last]),
            post_labels=post_labels,
            post_harms=post_harms,
            alarmed=alarmed,
            alarm_n=alarm_n,
        ),
        tuple(alarms),
    )


# ---------------------------------------------------------------------------
# Early evidence of a rise: where the planner spends labels (never an alarm)

SUSPICION_MIN_POST_LABELS = 15
"""The shortest post-change stretch `rise_evidence` tests. The alarm needs ≥ 50
(CHANGE_POINT_MIN_POST_LABELS); for deciding where to buy labels a shorter stretch is the
point: a rise shows up hours earlier in a small segment, and a false lead only costs labels."""
SUSPICION_FRACTION = 0.3
"""A segment is suspect once its early evidence reaches this share of the alarm threshold h.
In a label-level simulation (a 5 % segment at ~130 labels a day, 0.10 → 0.25) buying labels
for suspect segments halved the median delay in hours; through the whole pipeline (`bench
scenario`, issue 13) it did not raise the detection rate, so the planner does not use it."""


@dataclass(frozen=True)
class RiseEvidence:
    """The log GLR of the best recent rise at the newest label, and its two stretches."""

    statistic: float
    pre_labels: int
    pre_harms: int
    post_labels: int
    post_harms: int

    @property
    def pre_change_rate(self) -> float | None:
        return self.pre_harms / self.pre_labels if self.pre_labels else None

    @property
    def post_change_rate(self) -> float | None:
        return self.post_harms / self.post_labels if self.post_labels else None


def suspicion_post_lengths(window_labels: int) -> NDArray[np.int64]:
    """Post-change lengths for `rise_evidence`: 15, 18, 22, … (× 1.2) up to `window_labels`."""
    if int(window_labels) != window_labels or window_labels < SUSPICION_MIN_POST_LABELS:
        raise ValueError(
            f"window_labels must be an integer ≥ {SUSPICION_MIN_POST_LABELS}, got {window_labels!r}"
        )
    lengths = [SUSPICION_MIN_POST_LABELS]
    while lengths[-1] * CHANGE_POINT_GRID_RATIO < window_labels:
        lengths.append(math.ceil(lengths[-1] * CHANGE_POINT_GRID_RATIO))
    if lengths[-1] != window_labels:
        lengths.append(int(window_labels))
    return np.unique(np.asarray(lengths, dtype=np.int64))


def rise_evidence(
    n_labels: int,
    harms: int,
    recent_labels: ArrayLike,
    *,
    min_rise: float,
    window_labels: int,
) -> RiseEvidence:
    """The detector's statistic at the newest label, over stretches from 15 labels on.

    `n_labels`/`harms` count the whole history, `recent_labels` are its newest labels
    (oldest first, at most `window_labels` used). The same two-sample GLR as
    `change_point_statistic` (both rates unknown, rise ≥ `min_rise`), but the shortest
    candidate post-change stretch is SUSPICION_MIN_POST_LABELS, not 50: it reacts sooner
    and false-alarms more, which is why it never raises an alarm: it is a lead for where to
    look (docs/architecture.md, the quality-drop detector, for what buying labels on it did).
    """
    y = _as_labels(recent_labels)[-int(window_labels) :]
    if not (0 <= harms <= n_labels) or y.size > n_labels or int(y.sum()) > harms:
        raise ValueError("inconsistent counts: recent labels exceed the history")
    lengths = suspicion_post_lengths(window_labels)
    lengths = lengths[lengths <= min(y.size, n_labels - 1)]
    if lengths.size == 0:
        return RiseEvidence(0.0, int(n_labels), int(harms), 0, 0)
    cumulative = np.concatenate([[0], np.cumsum(y)])
    recent = (cumulative[-1] - cumulative[y.size - lengths]).astype(np.float64)[None, :]
    statistic, best = change_point_statistic(
        np.array([float(n_labels)]),
        np.array([float(harms)]),
        recent,
        lengths.astype(np.float64),
        min_rise,
    )
    if best[0] < 0:
        return RiseEvidence(0.0, int(n_labels), int(harms), 0, 0)
    post_labels = int(lengths[best[0]])
    post_harms = int(recent[0, best[0]])
    return RiseEvidence(
        statistic=float(statistic[0]),
        pre_labels=int(n_labels) - post_labels,
        pre_harms=int(harms) - post_harms,
        post_labels=post_labels,
        post_harms=post_harms,
    )
