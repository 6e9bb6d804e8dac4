"""Sequential detection: mixture SPRT, Bernoulli CUSUM, Bonferroni and e-BH.

References: scipy for the incomplete beta and the Beta quantile, statsmodels for
Benjamini–Hochberg, seeded simulations for the error rates.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from shadoweval.stats import change_point as cp
from shadoweval.stats import change_point_detector as cpd
from shadoweval.stats import cusum
from shadoweval.stats import sequential as sq
from tests.unit.stats.chunked_feed import alarms_in_chunks

P0, P1, ALPHA = 0.10, 0.20, 0.05
PRIOR = sq.beta_prior_for_alternative(P1, 20.0)


# --- incomplete beta -------------------------------------------------------------------------


def test_log_incomplete_beta_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0.05, 3000.0, 400)
    b = rng.uniform(0.05, 3000.0, 400)
    for x in (0.01, 0.1, 0.5, 0.9, 0.99):
        reference = special.betainc(a, b, x)
        usable = reference > 1e-300
        mine = sq.log_regularized_incomplete_beta(a[usable], b[usable], x)
        assert mine == pytest.approx(np.log(reference[usable]), rel=1e-9, abs=1e-11)


def test_log_incomplete_beta_far_tail_where_scipy_underflows() -> None:
    # log ∫_0^x t^(a−1)(1−t)^(b−1) dt − log B(a, b) by a fine trapezoid in log space.
    a, b, x = 300.0, 2700.0, 0.05
    t = np.linspace(0.0, x, 1_000_001)[1:]
    log_f = (a - 1) * np.log(t) + (b - 1) * np.log1p(-t)
    log_weight = np.full(t.size, math.log(t[1] - t[0]))
    log_weight[-1] -= math.log(2.0)  # the trapezoid's half weight at the upper end
    expected = special.logsumexp(log_f + log_weight) - special.betaln(a, b)
    assert special.betainc(a, b, x) < 1e-28
    assert float(sq.log_regularized_incomplete_beta(a, b, x)) == pytest.approx(expected, rel=1e-8)
    # Far below what a float can hold, still finite.
    assert float(sq.log_regularized_incomplete_beta(5000.0, 10.0, 0.5)) < -3000


def test_log_incomplete_beta_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="x must"):
        sq.log_regularized_incomplete_beta(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        sq.log_regularized_incomplete_beta(0.0, 1.0, 0.5)


# --- mixture SPRT ----------------------------------------------------------------------------


def test_mixture_e_value_matches_the_closed_form_with_scipy() -> None:
    a, b = PRIOR
    s = np.arange(0, 400)
    f = 1500 - s
    expected = (
        stats.beta.logsf(P0, a + s, b + f)
        + special.betaln(a + s, b + f)
        - stats.beta.logsf(P0, a, b)
        - special.betaln(a, b)
        - s * np.log(P0)
        - f * np.log1p(-P0)
    )
    assert sq.mixture_log_e_value(s, f, P0, a, b) == pytest.approx(expected, abs=1e-9)
    assert float(sq.mixture_log_e_value(0, 0, P0, a, b)) == pytest.approx(0.0, abs=1e-12)


def test_mixture_e_value_is_a_mean_one_martingale_at_p0() -> None:
    # E[M_n] = Σ_S Binom(S; n, p0) M(S, n − S) = 1 exactly at the null boundary.
    a, b = PRIOR
    n = 200
    s = np.arange(n + 1)
    log_e = sq.mixture_log_e_value(s, n - s, P0, a, b)
    expectation = np.sum(stats.binom.pmf(s, n, P0) * np.exp(log_e))
    assert expectation == pytest.approx(1.0, rel=1e-9)
    # Below p0 it is a strict supermartingale.
    assert np.sum(stats.binom.pmf(s, n, 0.08) * np.exp(log_e)) < 1.0


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=0, max_size=300),
    cut=st.floats(0.0, 1.0),
)
def test_mixture_update_is_incremental(labels: list[int], cut: float) -> None:
    a, b = PRIOR
    split = int(cut * len(labels))
    whole = sq.mixture_sprt_update(sq.MixtureSprtState(), labels, P0, a, b, ALPHA)
    first = sq.mixture_sprt_update(sq.MixtureSprtState(), labels[:split], P0, a, b, ALPHA)
    both = sq.mixture_sprt_update(first, labels[split:], P0, a, b, ALPHA)
    assert both == whole
    assert whole.n == len(labels) == whole.successes + whole.failures


def test_mixture_alarm_matches_the_boundary_and_is_sticky() -> None:
    a, b = PRIOR
    boundary = sq.mixture_sprt_boundary(600, P0, a, b, ALPHA)
    rng = np.random.default_rng(5)
    for p in (0.1, 0.2, 0.3):
        labels = (rng.random(600) < p).astype(int)
        state = sq.mixture_sprt_update(sq.MixtureSprtState(), labels, P0, a, b, ALPHA)
        crossing = np.flatnonzero(np.cumsum(labels) >= boundary)
        expected = int(crossing[0]) + 1 if crossing.size else None
        assert state.alarm_n == expected
        assert state.alarmed == (expected is not None)
    # Once alarmed, good labels afterwards do not clear the alarm.
    alarmed = sq.mixture_sprt_update(sq.MixtureSprtState(), [1] * 30, P0, a, b, ALPHA)
    assert alarmed.alarmed
    later = sq.mixture_sprt_update(alarmed, [0] * 2000, P0, a, b, ALPHA)
    assert later.alarmed
    assert later.alarm_n == alarmed.alarm_n
    assert later.log_e_value < math.log(1 / ALPHA)


def test_mixture_boundary_is_the_smallest_alarming_count() -> None:
    a, b = PRIOR
    boundary = sq.mixture_sprt_boundary(300, P0, a, b, ALPHA)
    n = np.arange(1, 301)
    threshold = math.log(1 / ALPHA)
    possible = boundary <= n
    at = sq.mixture_log_e_value(boundary[possible], (n - boundary)[possible], P0, a, b)
    below = sq.mixture_log_e_value(boundary[possible] - 1, (n - boundary + 1)[possible], P0, a, b)
    assert np.all(at >= threshold)
    assert np.all(below < threshold)
    assert np.all(np.diff(boundary) >= 0)


def test_mixture_false_alarms_under_the_null_and_detection_of_a_rise() -> None:
    """300 streams × 3000 labels at the null boundary and inside the null; then a rise."""
    a, b = PRIOR
    n_streams, n_labels = 300, 3000
    boundary = sq.mixture_sprt_boundary(n_labels, P0, a, b, ALPHA)
    rng = np.random.default_rng(20240501)
    tolerance = 3 * math.sqrt(ALPHA * (1 - ALPHA) / n_streams)
    for p_null in (P0, 0.08):
        harms = rng.random((n_streams, n_labels)) < p_null
        ever = (np.cumsum(harms, axis=1) >= boundary).any(axis=1)
        # Measured: 0.047 at p = 0.10 and 0.010 at p = 0.08 (this seed); Ville bounds it by α.
        assert ever.mean() <= ALPHA + tolerance
    # The same streams through the incremental API give the same alarms.
    for row in harms[:5]:
        state = sq.MixtureSprtState()
        for chunk in np.array_split(row.astype(int), 7):
            state = sq.mixture_sprt_update(state, chunk, P0, a, b, ALPHA)
        crossing = np.flatnonzero(np.cumsum(row) >= boundary)
        assert state.alarm_n == (int(crossing[0]) + 1 if crossing.size else None)

    rise = rng.random((n_streams, n_labels)) < 0.20
    hit = np.cumsum(rise, axis=1) >= boundary
    assert hit.any(axis=1).all()
    delay = hit.argmax(axis=1) + 1
    # Measured: median 59 labels (mean 81, p90 169) for 0.10 → 0.20 present from the start.
    assert 30 <= np.median(delay) <= 120

    # A rise after 1000 in-control labels takes longer: the e-process does not forget.
    late = np.concatenate(
        [rng.random((n_streams, 1000)) < P0, rng.random((n_streams, n_labels - 1000)) < 0.20],
        axis=1,
    )
    hit = np.cumsum(late, axis=1) >= boundary
    alarm = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, n_labels + 1)
    # Measured: median 382 labels after the change (3 % alarmed before it, within α).
    assert 150 <= np.median(alarm[alarm > 1000] - 1000) <= 600


def test_mixture_rejects_bad_labels_and_parameters() -> None:
    state = sq.MixtureSprtState()
    with pytest.raises(ValueError, match="only 0 and 1"):
        sq.mixture_sprt_update(state, [0, 2], P0, 1, 1, ALPHA)
    with pytest.raises(ValueError, match="only 0 and 1"):
        sq.mixture_sprt_update(state, [0.0, float("nan")], P0, 1, 1, ALPHA)
    with pytest.raises(ValueError, match="1-D"):
        sq.mixture_sprt_update(state, [[0, 1]], P0, 1, 1, ALPHA)
    with pytest.raises(ValueError, match="p0"):
        sq.mixture_sprt_update(state, [0], 1.0, 1, 1, ALPHA)
    with pytest.raises(ValueError, match="prior_a"):
        sq.mixture_sprt_update(state, [0], P0, 0, 1, ALPHA)
    with pytest.raises(ValueError, match="alpha"):
        sq.mixture_sprt_update(state, [0], P0, 1, 1, 0.0)
    assert sq.mixture_sprt_update(state, [], P0, 1, 1, ALPHA) == state
    assert sq.mixture_sprt_update(state, np.array([True, False]), P0, 1, 1, ALPHA).successes == 1


def test_beta_prior_for_alternative() -> None:
    a, b = sq.beta_prior_for_alternative(0.2, 20.0)
    assert (a, b) == pytest.approx((4.0, 16.0))
    with pytest.raises(ValueError, match="p1"):
        sq.beta_prior_for_alternative(0.0)


@pytest.mark.parametrize(("harms", "n"), [(0, 50), (12, 100), (150, 1500), (99, 100)])
def test_baseline_is_the_clopper_pearson_upper_bound(harms: int, n: int) -> None:
    expected = stats.beta.ppf(0.95, harms + 1, n - harms)
    assert sq.baseline_harm_rate(harms, n, confidence=0.95) == pytest.approx(expected, abs=1e-9)
    with_margin = sq.baseline_harm_rate(harms, n, confidence=0.95, margin=0.02)
    assert with_margin == pytest.approx(min(expected + 0.02, 1 - 1e-9), abs=1e-9)
    assert sq.baseline_harm_rate(n, n) < 1.0
    with pytest.raises(ValueError, match="harm_count"):
        sq.baseline_harm_rate(n + 1, n)


# --- Bernoulli CUSUM -------------------------------------------------------------------------


def _cusum_loop(labels: np.ndarray, p0: float, p1: float, h: float) -> tuple[float, int | None]:
    """reference/drift.md §3b's loop, for a rise: the plain recursion."""
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    s, alarm = 0.0, None
    for t, y in enumerate(labels):
        s = max(0.0, s + (up if y else down))
        if alarm is None and s >= h:
            alarm = t + 1
    return s, alarm


def test_cusum_matches_the_plain_recursion_and_is_incremental() -> None:
    rng = np.random.default_rng(11)
    for p in (0.1, 0.15, 0.25):
        labels = (rng.random(800) < p).astype(int)
        expected_s, expected_alarm = _cusum_loop(labels, P0, P1, 4.0)
        whole = cusum.bernoulli_cusum_update(cusum.BernoulliCusumState(), labels, P0, P1, 4.0)
        assert whole.statistic == pytest.approx(expected_s, abs=1e-9)
        assert whole.alarm_n == expected_alarm
        assert whole.alarmed == (expected_alarm is not None)
        state = cusum.BernoulliCusumState()
        for chunk in np.array_split(labels, 9):
            state = cusum.bernoulli_cusum_update(state, chunk, P0, P1, 4.0)
        assert state.statistic == pytest.approx(whole.statistic, abs=1e-9)
        assert (state.n, state.alarm_n) == (whole.n, whole.alarm_n)


def test_cusum_rejects_a_non_rise() -> None:
    with pytest.raises(ValueError, match="p1 must exceed p0"):
        cusum.bernoulli_cusum_update(cusum.BernoulliCusumState(), [1], 0.2, 0.1, 3.0)
    with pytest.raises(ValueError, match="h"):
        cusum.bernoulli_cusum_update(cusum.BernoulliCusumState(), [1], 0.1, 0.2, 0.0)


def _run_lengths_plain(
    p: float, h: float, n_paths: int, seed: int, cap: int
) -> tuple[np.ndarray, float]:
    """An independent simulation: one label per step for every path still running."""
    up, down = math.log(P1 / P0), math.log((1 - P1) / (1 - P0))
    rng = np.random.default_rng(seed)
    s = np.zeros(n_paths)
    run_length = np.full(n_paths, cap)
    running = np.ones(n_paths, dtype=bool)
    for t in range(1, cap + 1):
        idx = np.flatnonzero(running)
        if idx.size == 0:
            break
        harm = rng.random(idx.size) < p
        s[idx] = np.maximum(0.0, s[idx] + np.where(harm, up, down))
        done = idx[s[idx] >= h]
        run_length[done] = t
        running[done] = False
    return run_length, float(running.mean())


def test_cusum_threshold_reaches_the_target_arl() -> None:
    target = 1000.0
    h = cusum.cusum_threshold_for_arl(P0, P1, target, rng_seed=1)
    assert h == cusum.cusum_threshold_for_arl(P0, P1, target, rng_seed=1)  # deterministic
    assert 0 < h < math.log(target)  # ARL ≥ e^h is loose
    run_length, censored = _run_lengths_plain(P0, h, n_paths=3000, seed=77, cap=20_000)
    assert censored == 0.0
    mean = run_length.mean()
    se = run_length.std(ddof=1) / math.sqrt(run_length.size)
    # Measured: h = 3.413, independent ARL 985 ± 18; the bisection's own error is ~3 %.
    assert abs(mean - target) <= 4 * se + 0.06 * target
    estimate = cusum.cusum_average_run_length(P0, P1, h, P0, rng_seed=5, n_paths=3000)
    assert abs(estimate.mean_labels - mean) <= 4 * math.hypot(se, estimate.standard_error_labels)
    assert estimate.censored_share == 0.0
    delay = cusum.cusum_average_run_length(P0, P1, h, P1, rng_seed=6, n_paths=2000)
    # Measured: mean delay 62 labels (median 50) for 0.10 → 0.20 at ARL₀ = 1000.
    assert 40 <= delay.mean_labels <= 90


def test_cusum_run_length_censoring_is_reported() -> None:
    estimate = cusum.cusum_average_run_length(
        P0, P1, 8.0, P0, rng_seed=1, n_paths=50, max_run_length=100
    )
    assert estimate.censored_share > 0.9
    assert estimate.mean_labels <= 100


# --- several segments ------------------------------------------------------------------------


def test_alpha_per_segment() -> None:
    assert sq.alpha_per_segment(0.05, 10) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="n_segments"):
        sq.alpha_per_segment(0.05, 0)


def test_e_bh_hand_examples() -> None:
    # K = 5, α = 0.1: thresholds K/(αk) = 50, 25, 16.7, 12.5, 10.
    assert sq.e_bh([50.0, 30.0, 10.0, 2.0, 0.5], 0.1) == (0, 1)
    # Step-up: the 2nd and 3rd largest miss their thresholds, the 4th meets 12.5.
    assert sq.e_bh([13.0, 60.0, 13.0, 1.0, 13.0], 0.1) == (0, 1, 2, 4)
    assert sq.e_bh([1.0, 2.0, 3.0], 0.05) == ()
    assert sq.e_bh([math.inf, 0.0], 0.05) == (0,)
    assert sq.e_bh([], 0.05) == ()
    with pytest.raises(ValueError, match="nonnegative"):
        sq.e_bh([-1.0], 0.05)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e4, allow_nan=False), min_size=1, max_size=30),
    st.sampled_from([0.01, 0.05, 0.1, 0.2]),
)
def test_e_bh_is_bh_on_one_over_e(e_values: list[float], alpha: float) -> None:
    # e-BH is BH applied to p = min(1, 1/e) (Wang & Ramdas 2022).
    p_values = np.minimum(1.0, 1.0 / np.maximum(np.array(e_values), 1e-300))
    # Keep clear of exact ties with a threshold, where float rounding decides.
    k = len(e_values)
    ratios = np.sort(p_values)[:, None] / (np.arange(1, k + 1) * alpha / k)[None, :]
    if np.any(np.abs(ratios - 1.0) < 1e-9):
        return
    reject, *_ = multipletests(p_values, alpha=alpha, method="fdr_bh")
    assert sq.e_bh(e_values, alpha) == tuple(int(i) for i in np.flatnonzero(reject))


# --- Shiryaev–Roberts (the production alarm) ----------------------------------------------


def test_shiryaev_roberts_matches_its_recursion_and_is_incremental() -> None:
    from shadoweval.stats.sequential import ShiryaevRobertsState, shiryaev_roberts_update

    labels = np.array([0, 1, 0, 0, 1, 1, 0, 1])
    r = 0.0
    for y in labels:
        r = (1 + r) * ((0.2 / 0.1) if y else (0.8 / 0.9))
    whole = shiryaev_roberts_update(ShiryaevRobertsState(), labels, 0.1, 0.2, 1e9)
    assert whole.log_statistic == pytest.approx(math.log(r))
    split = shiryaev_roberts_update(
        shiryaev_roberts_update(ShiryaevRobertsState(), labels[:3], 0.1, 0.2, 1e9),
        labels[3:],
        0.1,
        0.2,
        1e9,
    )
    assert split == whole


def test_shiryaev_roberts_false_alarms_stay_under_n_over_a() -> None:
    from shadoweval.stats.sequential import ShiryaevRobertsState, shiryaev_roberts_update

    rng = np.random.default_rng(2)
    threshold, n, streams = 20_000.0, 2000, 200
    alarms = sum(
        shiryaev_roberts_update(
            ShiryaevRobertsState(), rng.binomial(1, 0.1, n), 0.1, 0.2, threshold
        ).alarmed
        for _ in range(streams)
    )
    # P(any false alarm within n labels) ≤ E[alarms] ≤ n/A = 0.1; allow 3 Monte Carlo SEs.
    bound = n / threshold
    assert alarms / streams <= bound + 3 * math.sqrt(bound * (1 - bound) / streams)
    detected = shiryaev_roberts_update(
        ShiryaevRobertsState(), rng.binomial(1, 0.4, 400), 0.1, 0.2, threshold
    )
    assert detected.alarmed


# --- change-point GLR (the production quality-drop detector) --------------------------------

RISE = 0.05
WINDOW = 1000
H_30K = cp.glr_threshold(30_000)


def _brute_force_rise_glr(a: int, x: int, b: int, y: int, rise: float) -> float:
    """sup over a fine grid of p (q = p + δ on the boundary, q free above it) − sup_r."""

    def ll(k: int, n: int, p: np.ndarray) -> np.ndarray:
        return np.asarray(special.xlogy(k, p) + special.xlog1py(n - k, -p))

    p = np.linspace(1e-12, 1 - 1e-12, 400_001)
    pooled = float(np.max(ll(x + y, a + b, p)))
    pre_best = ll(x, a, p)
    free = np.max(pre_best) + float(np.max(ll(y, b, p))) if y / b - x / a >= rise else -np.inf
    on_edge = p[p <= 1 - rise - 1e-12]
    edge = float(np.max(ll(x, a, on_edge) + ll(y, b, on_edge + rise)))
    return max(free, edge) - pooled


@pytest.mark.parametrize(
    ("a", "x", "b", "y"),
    [(500, 50, 100, 25), (500, 50, 100, 13), (40, 0, 60, 20), (200, 30, 50, 50), (80, 8, 50, 6)],
)
def test_rise_glr_matches_a_grid_search(a: int, x: int, b: int, y: int) -> None:
    value = float(cp.rise_log_glr(a, x, b, y, RISE))
    if y / b <= x / a:
        assert value == -math.inf
    else:
        assert value == pytest.approx(_brute_force_rise_glr(a, x, b, y, RISE), abs=1e-6)


def test_rise_glr_only_shrinks_with_the_minimum_rise() -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(1, 2000, 500)
    b = rng.integers(1, 1000, 500)
    x = rng.binomial(a, 0.1)
    y = rng.binomial(b, 0.16)
    free = cp.rise_log_glr(a, x, b, y, 0.0)
    constrained = cp.rise_log_glr(a, x, b, y, RISE)
    assert np.all(constrained <= free + 1e-9)
    clear = y / b - x / a >= RISE
    assert np.allclose(constrained[clear], free[clear])
    assert np.all(constrained[~clear & (y / b > x / a)] < free[~clear & (y / b > x / a)])


def _feed(labels: np.ndarray, threshold: float = H_30K) -> cpd.ChangePointUpdate:
    return cpd.change_point_update(
        cpd.ChangePointState(), labels, min_rise=RISE, threshold=threshold, window_labels=WINDOW
    )


def test_detects_a_change_before_any_baseline_could_fill() -> None:
    # The change starts at label 61, before the former detector's 100-label baseline could
    # fill: every stream is still flagged, after the change, near where it began.
    rng = np.random.default_rng(8)
    delays, change_points = [], []
    for _ in range(20):
        labels = np.concatenate([rng.binomial(1, 0.10, 60), rng.binomial(1, 0.40, 400)])
        result = _feed(labels)
        assert result.alarms, "a 0.10 → 0.40 rise after 60 labels was missed"
        alarm = result.alarms[0]
        assert alarm.n > 60
        delays.append(alarm.n - 60)
        change_points.append(alarm.change_n)
        assert alarm.post_change_rate > alarm.pre_change_rate + RISE
    assert np.median(delays) <= 120
    assert abs(np.median(change_points) - 61) <= 30


def test_detects_a_change_mid_way_with_its_rates_and_change_point() -> None:
    rng = np.random.default_rng(9)
    delays, change_points = [], []
    for _ in range(20):
        labels = np.concatenate([rng.binomial(1, 0.10, 600), rng.binomial(1, 0.25, 600)])
        result = _feed(labels)
        assert result.alarms
        assert result.alarms[0].n > 600
        alarm = result.alarms[0]
        delays.append(alarm.n - 600)
        change_points.append(alarm.change_n)
        assert 0.05 < alarm.pre_change_rate < 0.15
        assert 0.18 < alarm.post_change_rate < 0.45
    assert abs(np.median(change_points) - 601) <= 60
    # labels_to_detect is a conservative 80th percentile of the delay.
    expected = cp.labels_to_detect(0.10, 0.25, min_rise=RISE, pre_change_labels=600)
    assert np.quantile(delays, 0.8) <= expected
    assert np.median(delays) >= 0.3 * expected


def test_false_alarms_on_null_streams_stay_within_n_over_a() -> None:
    # A = 2,000 (h ≈ 4.2) so a few seconds of labels hold ~100 alarms' worth of exposure.
    arl = 2_000.0
    h = cp.glr_threshold(arl)
    rng = np.random.default_rng(12)
    for p0 in (0.05, 0.3):
        labels, alarms = 0, 0
        for _ in range(2):
            stream = rng.binomial(1, p0, 100_000)
            alarms += len(
                alarms_in_chunks(stream, threshold=h, min_rise=RISE, window_labels=WINDOW)
            )
            labels += stream.size
        assert 0 < alarms <= labels / arl, (p0, alarms)


def test_a_rise_well_below_the_minimum_is_rarely_flagged() -> None:
    # Over 2,000 labels a rise of δ/5 is flagged about as often as no rise (~5 %); a rise of
    # δ nearly always. Rises in between are flagged when a stretch of the data looks like a
    # rise ≥ δ: at this false-alarm budget the oracle CUSUM (0.10 → 0.20 known) flags a rise
    # to 0.12 within 2,000 labels in ~43 % of streams, this detector in ~30 %.
    rng = np.random.default_rng(13)

    def flagged_share(p1: float) -> float:
        flagged = 0
        for _ in range(30):
            labels = np.concatenate([rng.binomial(1, 0.10, 3000), rng.binomial(1, p1, 2000)])
            flagged += any(alarm.n > 3000 for alarm in _feed(labels).alarms)
        return flagged / 30

    assert flagged_share(0.10 + RISE / 5) <= 0.15
    assert flagged_share(0.10 + RISE) >= 0.8


@given(
    labels=st.lists(st.integers(0, 1), min_size=1, max_size=400),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
@settings(max_examples=40, deadline=None)
def test_state_round_trip_gives_the_same_as_one_pass(labels: list[int], cuts: list[int]) -> None:
    # Small window and threshold so short streams reach alarms and re-arms.
    def update(state: cpd.ChangePointState, chunk: object) -> cpd.ChangePointUpdate:
        return cpd.change_point_update(
            state, np.asarray(chunk), min_rise=0.0, threshold=1.5, window_labels=60
        )

    whole = update(cpd.ChangePointState(), labels)
    state, alarms = cpd.ChangePointState(), list[cpd.ChangePointAlarm]()
    for part in np.split(np.asarray(labels), sorted(c for c in cuts if c <= len(labels))):
        # Through the stored form: counts, the recent labels as text, the statistic.
        stored = "".join(str(v) for v in state.recent)
        state = cpd.ChangePointState(
            n=state.n,
            harms=state.harms,
            recent=tuple(int(c) for c in stored),
            statistic=state.statistic,
            post_labels=state.post_labels,
            post_harms=state.post_harms,
            alarmed=state.alarmed,
            alarm_n=state.alarm_n,
            history_labels=state.history_labels,
            history_harms=state.history_harms,
            episode_pre_labels=state.episode_pre_labels,
            episode_pre_harms=state.episode_pre_harms,
            evidence=state.evidence,
        )
        step = update(state, part)
        state, alarms = step.state, [*alarms, *step.alarms]
    assert state == whole.state
    assert tuple(alarms) == whole.alarms
    assert len(state.recent) == min(len(labels), 60)


def test_state_stays_bounded_and_rearms_after_an_episode() -> None:
    rng = np.random.default_rng(14)
    labels = np.concatenate(
        [rng.binomial(1, 0.1, 800), rng.binomial(1, 0.5, 300), rng.binomial(1, 0.1, 3000)]
    )
    result = _feed(labels)
    assert len(result.state.recent) == WINDOW
    assert result.state.n == labels.size
    assert result.state.harms == int(labels.sum())
    (alarm,) = result.alarms[:1]
    assert 800 < alarm.n <= 900
    # Harm went back down: the episode ended (re-armed) and the statistic fell with it.
    assert not result.state.alarmed
    assert result.state.statistic < H_30K * cp.CHANGE_POINT_REARM_FRACTION


def test_glr_threshold_and_post_lengths() -> None:
    assert cp.glr_threshold(30_000) == pytest.approx(7.53, abs=0.01)
    thresholds = [cp.glr_threshold(a) for a in (1e3, 1e4, 1e5)]
    assert thresholds == sorted(thresholds)
    # h − ln h = ln A − c
    h = cp.glr_threshold(1e4)
    assert h - math.log(h) == pytest.approx(math.log(1e4) - cp.GLR_THRESHOLD_OFFSET_NATS)
    lengths = cp.change_point_post_lengths(1000)
    assert lengths[0] == cp.CHANGE_POINT_MIN_POST_LABELS
    assert lengths[-1] == 1000
    assert np.all(lengths[1:] / lengths[:-1] <= cp.CHANGE_POINT_GRID_RATIO + 0.02)
    with pytest.raises(ValueError, match="arl_labels"):
        cp.glr_threshold(1.0)
    with pytest.raises(ValueError, match="window_labels"):
        cp.change_point_post_lengths(10)


def test_labels_to_detect() -> None:
    needed = [cp.labels_to_detect(0.10, p1) for p1 in (0.15, 0.2, 0.3)]
    assert needed == sorted(needed, reverse=True)
    assert cp.labels_to_detect(0.10, 0.2, quantile=0.5) < cp.labels_to_detect(0.10, 0.2)
    # A longer history makes the pre-change rate surer: fewer post-change labels.
    assert cp.labels_to_detect(0.10, 0.2, pre_change_labels=500) > cp.labels_to_detect(0.10, 0.2)
    # Too little history can never give the evidence, and a rise below the minimum is not sought.
    assert cp.labels_to_detect(0.10, 0.2, pre_change_labels=100) == math.inf
    assert cp.labels_to_detect(0.10, 0.12, min_rise=RISE) == math.inf
    assert cp.labels_to_detect(0.10, 0.9) == cp.CHANGE_POINT_MIN_POST_LABELS


def test_rise_evidence_is_the_statistic_at_the_newest_label_over_short_stretches() -> None:
    rng = np.random.default_rng(5)
    labels = np.r_[rng.random(400) < 0.1, rng.random(200) < 0.2].astype(int)
    lengths = cp.suspicion_post_lengths(1000)
    assert lengths[0] == cp.SUSPICION_MIN_POST_LABELS < cp.CHANGE_POINT_MIN_POST_LABELS
    evidence = cp.rise_evidence(600, int(labels.sum()), labels, min_rise=0.05, window_labels=1000)
    usable = lengths[lengths <= 599]
    cumulative = np.r_[0, np.cumsum(labels)]
    expected, best = cp.change_point_statistic(
        [600.0],
        [float(labels.sum())],
        (cumulative[-1] - cumulative[600 - usable])[None, :].astype(float),
        usable,
        0.05,
    )
    assert evidence.statistic == pytest.approx(expected[0])
    assert evidence.post_labels == usable[best[0]]
    assert evidence.pre_labels + evidence.post_labels == 600
    assert evidence.pre_harms + evidence.post_harms == labels.sum()
    # Only the newest `window_labels` are stretches; older ones are history, as in the detector.
    assert cp.rise_evidence(600, int(labels.sum()), labels, min_rise=0.05, window_labels=100) == (
        cp.rise_evidence(600, int(labels.sum()), labels[-100:], min_rise=0.05, window_labels=100)
    )
    assert cp.rise_evidence(3, 1, [0, 1, 0], min_rise=0.05, window_labels=1000).statistic == 0.0
    with pytest.raises(ValueError, match="inconsistent"):
        cp.rise_evidence(2, 0, [1, 1], min_rise=0.05, window_labels=1000)


def test_rise_evidence_leads_the_alarm_and_rarely_points_at_an_unchanged_segment() -> None:
    """The planner buys labels for a segment once its early evidence reaches
    SUSPICION_FRACTION · h. On a 5 % segment's rise 0.10 → 0.25 after 150 labels, that
    happens after a median of ~20–40 post-change labels, well before the detector's alarm;
    an unchanged segment is suspect only a small share of the time."""
    h = cp.glr_threshold(30_000)
    level = cp.SUSPICION_FRACTION * h
    rng = np.random.default_rng(13)

    def first_suspect(labels: np.ndarray, start: int) -> int | None:
        cumulative = np.cumsum(labels)
        for n in range(start + 1, labels.size + 1):
            found = cp.rise_evidence(
                n, int(cumulative[n - 1]), labels[:n], min_rise=0.05, window_labels=1000
            )
            if found.statistic >= level:
                return n - start
        return None

    leads = []
    for _ in range(30):
        labels = np.r_[rng.random(150) < 0.10, rng.random(150) < 0.25].astype(int)
        suspect = first_suspect(labels, 150)
        update = cpd.change_point_update(
            cpd.ChangePointState(), labels, min_rise=0.05, threshold=h, window_labels=1000
        )
        alarm = next((a.n - 150 for a in update.alarms if a.n > 150), 10**6)
        assert suspect is not None
        leads.append(alarm - suspect)
    assert np.median(leads) >= 40
    suspect_share = []
    for _ in range(10):
        labels = (rng.random(400) < 0.10).astype(int)
        cumulative = np.cumsum(labels)
        checks = [
            cp.rise_evidence(
                n, int(cumulative[n - 1]), labels[:n], min_rise=0.05, window_labels=1000
            ).statistic
            >= level
            for n in range(20, 401, 5)
        ]
        suspect_share.append(np.mean(checks))
    assert np.mean(suspect_share) < 0.1
