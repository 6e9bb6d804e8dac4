"""The production quality-drop detector: a change-point GLR with unknown pre- and
post-change harm rates, per segment, checkable after every label.

After every label it tests each candidate change point within a bounded look-back with a
two-sample Bernoulli GLR, both the pre- and the post-change harm rate unknown (Siegmund &
Venkatraman 1995), for a rise of at least a minimum size; the segment's whole earlier
history is the pre-change side. So a change that starts before any reference window
could fill, or mid-way, is found, and no estimate of p0 is frozen. An alarm restarts the
history at its estimated change point (the post-change regime becomes the baseline, so only
a further rise alarms again) and opens an episode that lasts while the evidence for the
alarmed rise holds: one change, one alarm. Its threshold
(`glr_threshold`) is calibrated by simulation for an in-control ARL over a stated range
of harm rates; `labels_to_detect` gives the labels it needs, for the planner.
`rise_evidence` is the same statistic at the newest label over shorter post-change
stretches (from 15 labels): never an alarm, a lead for where a rise may be starting.
Labels as in `sequential.py`: `strong_needed` of one stratum in (ts, request_id) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shadoweval.stats.sequential import (
    FloatArray,
    _as_labels,
    _check_probability,
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
"""An alarm's episode ends (the detector re-arms) once the evidence for the alarmed rise
falls below this share of the threshold. Re-arming on G itself let one change alarm several
times: with ~40 pre-change labels G swings by more than h/2 as the best stretch moves along
the candidate grid (tests/integration/analytics/test_aggregation.py at A = 60,000)."""
CHANGE_POINT_REFINE_MARGIN_NATS = 1.0
"""An alarm restarts the history at the earliest change point, among every position inside
its stretch, whose rise log GLR is within this of the best. The best of every position alone
tends to be a burst of harms at the end (the maximum of many): in simulation it put a
0.10 → 0.25 rise's post-change rate at ~0.5; the earliest within 1 nat keeps a large step's
change point to a few labels (each pre-change label costs it ~0.8 nats at 0.06 → 0.66)."""
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
