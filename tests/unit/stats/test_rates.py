"""Hájek rates: hand-computed examples, validation, coverage by simulation, properties."""

from __future__ import annotations

import math
from dataclasses import astuple
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from shadoweval.stats import pairwise, rates
from shadoweval.stats.rates import RateEstimate

Z95 = float(stats.norm.ppf(0.975))


# --- hand-computed examples ----------------------------------------------------------------


def test_kish_effective_sample_size_by_hand() -> None:
    # (1 + 3)² / (1 + 9) = 1.6
    assert rates.kish_effective_sample_size([1.0, 3.0]) == pytest.approx(1.6)
    assert rates.kish_effective_sample_size([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0)
    assert rates.kish_effective_sample_size([]) == 0.0
    assert rates.kish_effective_sample_size([0.0, 0.0]) == 0.0


def test_design_effect_is_one_plus_squared_cv() -> None:
    weights = np.array([1.0, 3.0])
    cv_squared = np.var(weights) / np.mean(weights) ** 2
    assert rates.design_effect(weights) == pytest.approx(1.0 + cv_squared) == pytest.approx(1.25)
    assert rates.design_effect(np.full(7, 5.0)) == pytest.approx(1.0)
    assert math.isnan(rates.design_effect([]))


def test_hajek_rate_four_elements_by_hand() -> None:
    y = [1, 0, 0, 1]
    pi = [0.5, 0.25, 1.0, 0.1]
    # w = (2, 4, 1, 10), Σw = 17, Σwy = 12
    w = [Fraction(2), Fraction(4), Fraction(1), Fraction(10)]
    pi_exact = [Fraction(1, 2), Fraction(1, 4), Fraction(1), Fraction(1, 10)]
    p = Fraction(12, 17)
    variance = (
        sum((1 - pk) * wk**2 * (yk - p) ** 2 for pk, wk, yk in zip(pi_exact, w, y, strict=True))
        / Fraction(17) ** 2
    )
    result = rates.hajek_rate(y, pi)
    assert result.estimate == pytest.approx(float(p), rel=1e-14)
    assert result.std_error == pytest.approx(math.sqrt(variance), rel=1e-12)
    assert result.n == 4
    assert result.weight_sum == pytest.approx(17.0)
    assert result.effective_n == pytest.approx(17**2 / (4 + 16 + 1 + 100))
    # Wilson on n* = p(1 − p)/V̂, computed independently of the module's helper.
    n_star = float(p * (1 - p) / variance)
    centre = (float(p) + Z95**2 / (2 * n_star)) / (1 + Z95**2 / n_star)
    half = (
        Z95
        / (1 + Z95**2 / n_star)
        * math.sqrt(float(p * (1 - p)) / n_star + Z95**2 / (4 * n_star**2))
    )
    assert (result.ci_low, result.ci_high) == pytest.approx((centre - half, centre + half))


def test_wilson_interval_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportion_confint

    for successes, n in [(0, 10), (1, 20), (7, 40), (40, 40), (33, 100)]:
        expected = proportion_confint(successes, n, alpha=0.05, method="wilson")
        assert rates.wilson_interval(successes / n, n) == pytest.approx(expected, abs=1e-12)
    assert rates.wilson_interval(0.3, math.inf) == (0.3, 0.3)
    assert rates.wilson_interval(0.3, 0.0) == (0.0, 1.0)


def test_constant_pi_is_the_binomial_with_finite_population_correction() -> None:
    y = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 0], dtype=float)
    result = rates.hajek_rate(y, 0.2)
    p = y.mean()
    assert result.estimate == pytest.approx(p)
    assert result.std_error == pytest.approx(math.sqrt((1 - 0.2) * p * (1 - p) / len(y)))
    assert result.effective_n == pytest.approx(len(y))


def test_census_has_zero_width_interval() -> None:
    result = rates.hajek_rate([1, 0, 1, 1], [1.0, 1.0, 1.0, 1.0])
    assert result.estimate == 0.75
    assert result.std_error == 0.0
    assert (result.ci_low, result.ci_high) == (0.75, 0.75)


def test_all_zero_labels_give_a_one_sided_wilson_interval() -> None:
    result = rates.hajek_rate(np.zeros(50), np.full(50, 0.1))
    assert result.estimate == 0.0
    assert result.std_error == 0.0
    assert result.ci_low == 0.0
    # n* falls back to (Σw)²/Σ(1−π)w² = 50/0.9; Wilson's upper limit at 0 is z²/(n + z²).
    n_star = 50 / 0.9
    assert result.ci_high == pytest.approx(Z95**2 / (n_star + Z95**2))
    ones = rates.hajek_rate(np.ones(50), np.full(50, 0.1))
    assert ones.estimate == 1.0
    assert ones.ci_high == 1.0
    assert ones.ci_low == pytest.approx(1.0 - result.ci_high)


def test_empty_input_gives_nan_not_a_crash() -> None:
    result = rates.hajek_rate([], [])
    assert result.n == 0
    assert math.isnan(result.estimate)
    assert math.isnan(result.ci_low)
    assert result.effective_n == 0.0
    mean = rates.hajek_mean([], [])
    assert mean.n == 0
    assert math.isnan(mean.estimate)
    pairs = pairwise.pairwise_outcomes(np.array([], dtype=int), [])
    assert pairs.n == 0
    assert math.isnan(pairs.ties.estimate)


def test_single_observation() -> None:
    result = rates.hajek_rate([1], [0.5])
    assert result.estimate == 1.0
    assert result.n == 1
    assert 0.0 < result.ci_low < 1.0
    assert result.ci_high == 1.0


def test_hajek_mean_by_hand() -> None:
    x = np.array([2.0, -1.0, 0.5])
    pi = np.array([0.5, 0.2, 1.0])
    w = 1 / pi
    mean = np.sum(w * x) / np.sum(w)
    variance = np.sum((1 - pi) * w**2 * (x - mean) ** 2) / np.sum(w) ** 2
    result = rates.hajek_mean(x, pi)
    assert result.estimate == pytest.approx(mean)
    assert result.std_error == pytest.approx(math.sqrt(variance))
    assert result.ci_low == pytest.approx(mean - Z95 * math.sqrt(variance))
    assert result.ci_high == pytest.approx(mean + Z95 * math.sqrt(variance))
    assert rates.hajek_mean(x, pi, confidence=0.9).ci_high == pytest.approx(
        mean + float(stats.norm.ppf(0.95)) * math.sqrt(variance)
    )


def test_pairwise_outcomes_shares_sum_to_one() -> None:
    codes = pairwise.outcome_codes(
        cheaper_wins=[1, 0, 0, 0, 1], ties=[0, 1, 0, 1, 0], stronger_wins=[0, 0, 1, 0, 0]
    )
    assert codes.tolist() == [1, 0, -1, 0, 1]
    pi = [0.5, 0.5, 0.25, 1.0, 0.1]
    result = pairwise.pairwise_outcomes(codes, pi)
    # w = (2, 2, 4, 1, 10), Σw = 19
    assert result.cheaper_wins.estimate == pytest.approx(12 / 19)
    assert result.ties.estimate == pytest.approx(3 / 19)
    assert result.stronger_wins.estimate == pytest.approx(4 / 19)
    assert result.n == 5
    assert result.weight_sum == pytest.approx(19.0)
    assert result.stronger_wins == rates.harm_rate([0, 0, 1, 0, 0], pi)


def test_harm_and_missed_savings_are_hajek_rates() -> None:
    y = [1, 0, 1, 1, 0, 0]
    pi = [0.3, 0.3, 0.6, 0.6, 1.0, 0.1]
    assert rates.harm_rate(y, pi) == rates.hajek_rate(y, pi)
    assert rates.missed_savings_rate(y, pi) == rates.hajek_rate(y, pi)


@pytest.mark.parametrize(
    ("p0", "p1", "one_sided", "expected"),
    [
        # drift.md §3d table, one-sample column (2-sided / 1-sided).
        (0.90, 0.85, False, 316),
        (0.90, 0.85, True, 253),
        (0.90, 0.87, False, 843),
        (0.90, 0.87, True, 670),
        (0.80, 0.75, False, 528),
        (0.80, 0.75, True, 419),
        (0.95, 0.93, False, 1031),
        (0.95, 0.93, True, 822),
    ],
)
def test_sample_size_for_drop_matches_the_table(
    p0: float, p1: float, one_sided: bool, expected: int
) -> None:
    assert rates.sample_size_for_drop(p0, p1, one_sided=one_sided) == expected
    # The formula is symmetric in the direction of the change.
    assert rates.sample_size_for_drop(p1, p0, one_sided=one_sided) >= 1


def test_sample_size_gives_the_promised_power() -> None:
    # Exact binomial power of the one-sided test at the computed n.
    n = rates.sample_size_for_drop(0.9, 0.85)
    critical = stats.binom.ppf(0.05, n, 0.9)
    while stats.binom.cdf(critical, n, 0.9) > 0.05:
        critical -= 1
    power = stats.binom.cdf(critical, n, 0.85)
    assert 0.75 < power < 0.86


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "pi", "message"),
    [
        ([1, 0], [0.5], "observations"),
        ([1, 0], [0.5, 0.0], r"\(0, 1\]"),
        ([1, 0], [0.5, 1.5], r"\(0, 1\]"),
        ([1, 0], [0.5, math.nan], "finite"),
        ([1, 2], [0.5, 0.5], "0 and 1"),
        ([1, math.nan], [0.5, 0.5], "finite"),
        ([[1, 0]], [0.5, 0.5], "one-dimensional"),
    ],
)
def test_hajek_rate_rejects_bad_input(y: object, pi: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rates.hajek_rate(y, pi)  # type: ignore[arg-type]


def test_other_validation() -> None:
    with pytest.raises(ValueError, match="confidence"):
        rates.hajek_rate([1], [1.0], confidence=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        rates.kish_effective_sample_size([1.0, -1.0])
    with pytest.raises(ValueError, match="outcome codes"):
        pairwise.pairwise_outcomes([1, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="exactly one"):
        pairwise.outcome_codes([1, 0], [1, 0], [0, 1])
    with pytest.raises(ValueError, match="equal lengths"):
        pairwise.outcome_codes([1, 0], [0], [0, 1])
    with pytest.raises(ValueError, match="differ"):
        rates.sample_size_for_drop(0.9, 0.9)
    with pytest.raises(ValueError, match="p1"):
        rates.sample_size_for_drop(0.9, 1.0)
    with pytest.raises(ValueError, match="finite"):
        rates.hajek_mean([1.0, math.inf], [0.5, 0.5])


# --- coverage by simulation ----------------------------------------------------------------

REPETITIONS = 1000
MC_SE = math.sqrt(0.95 * 0.05 / REPETITIONS)  # 0.0069


def _neyman_population(
    rng: np.random.Generator,
    stratum_share: tuple[float, ...],
    stratum_rate: tuple[float, ...],
    effective_n: float,
    size: int = 20_000,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A finite population of 0/1 labels whose π depends on an outcome-correlated stratum.

    π_h ∝ √(p_h(1 − p_h)) (Neyman allocation, as the planner does), scaled so
    that Kish's n_eff of a sample is about `effective_n`.
    """
    counts = (np.asarray(stratum_share) * size).astype(int)
    rate = np.asarray(stratum_rate)
    stratum = np.repeat(np.arange(len(counts)), counts)
    y = (rng.random(len(stratum)) < rate[stratum]).astype(np.float64)
    relative_pi = np.sqrt(rate * (1 - rate))
    # With π_h = c·r_h, E Σw = N and E Σw² = Σ N_h/(c·r_h), so n_eff ≈ c·N² / Σ N_h/r_h.
    c = effective_n * np.sum(counts / relative_pi) / np.sum(counts) ** 2
    pi = np.minimum(1.0, c * relative_pi)[stratum]
    return y, pi


def _coverage(
    y: npt.NDArray[np.float64], pi: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """(weighted coverage, naive coverage, normal-interval coverage, mean Kish n_eff)."""
    truth = y.mean()
    weighted = naive = normal = 0
    effective_n = 0.0
    for _ in range(REPETITIONS):
        sampled = rng.random(len(y)) < pi
        estimate = rates.hajek_rate(y[sampled], pi[sampled])
        weighted += estimate.ci_low <= truth <= estimate.ci_high
        low = estimate.estimate - Z95 * estimate.std_error
        normal += low <= truth <= estimate.estimate + Z95 * estimate.std_error
        effective_n += estimate.effective_n
        # The naive estimator ignores π: an unweighted mean with its Wilson interval.
        unweighted = rates.hajek_rate(y[sampled], 1.0)
        n = int(np.sum(sampled))
        naive_low, naive_high = rates.wilson_interval(unweighted.estimate, n)
        naive += naive_low <= truth <= naive_high
    return (
        weighted / REPETITIONS,
        naive / REPETITIONS,
        normal / REPETITIONS,
        effective_n / REPETITIONS,
    )


@pytest.mark.parametrize(
    ("shares", "stratum_rates", "effective_n", "seed"),
    [
        # overall rate 0.05, n_eff ≈ 100
        ((0.6, 0.3, 0.1), (0.021, 0.064, 0.181), 100, 11),
        # overall rate 0.10, n_eff ≈ 200
        ((0.5, 0.5), (0.05, 0.15), 200, 12),
        # overall rate 0.20, n_eff ≈ 400
        ((0.8, 0.2), (0.05, 0.8), 400, 13),
    ],
)
def test_weighted_interval_covers_and_naive_does_not(
    shares: tuple[float, ...], stratum_rates: tuple[float, ...], effective_n: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    y, pi = _neyman_population(rng, shares, stratum_rates, effective_n)
    weighted, naive, normal, mean_effective_n = _coverage(y, pi, rng)
    print(
        f"rate={y.mean():.3f} n_eff={mean_effective_n:.0f} coverage: Wilson(n*)={weighted:.3f} "
        f"normal={normal:.3f} naive={naive:.3f}"
    )
    assert 0.7 * effective_n < mean_effective_n < 1.3 * effective_n
    assert abs(weighted - 0.95) < 3 * MC_SE
    # Same samples, same test: the estimator that ignores π fails it.
    assert naive < 0.95 - 3 * MC_SE


# --- properties ----------------------------------------------------------------------------

labels = st.lists(st.integers(0, 1), min_size=1, max_size=40)
probabilities = st.sampled_from([0.05, 0.1, 0.25, 0.5, 0.9, 1.0])


@settings(max_examples=60, deadline=None)
@given(y=labels, pi=probabilities)
def test_constant_pi_reduces_to_the_unweighted_estimate(y: list[int], pi: float) -> None:
    result = rates.hajek_rate(y, np.full(len(y), pi))
    p = float(np.mean(y))
    assert result.estimate == pytest.approx(p)
    assert result.std_error == pytest.approx(math.sqrt((1 - pi) * p * (1 - p) / len(y)), abs=1e-12)
    assert result.effective_n == pytest.approx(len(y))
    assert 0.0 <= result.ci_low <= result.estimate <= result.ci_high <= 1.0


def _close(a: RateEstimate | rates.MeanEstimate, b: RateEstimate | rates.MeanEstimate) -> None:
    np.testing.assert_allclose(astuple(a), astuple(b), rtol=1e-9, atol=1e-12, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_estimators_are_permutation_invariant(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 40))
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=float)
    pi = np.array(data.draw(st.lists(probabilities, min_size=n, max_size=n)))
    x = np.array(data.draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n)))
    order = np.array(data.draw(st.permutations(range(n))))
    _close(rates.hajek_rate(y, pi), rates.hajek_rate(y[order], pi[order]))
    _close(rates.hajek_mean(x, pi), rates.hajek_mean(x[order], pi[order]))
    assert rates.kish_effective_sample_size(1 / pi) == pytest.approx(
        rates.kish_effective_sample_size(1 / pi[order])
    )
    codes = np.array(data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n)))
    before = pairwise.pairwise_outcomes(codes, pi)
    after = pairwise.pairwise_outcomes(codes[order], pi[order])
    for share_before, share_after in zip(
        (before.cheaper_wins, before.ties, before.stronger_wins),
        (after.cheaper_wins, after.ties, after.stronger_wins),
        strict=True,
    ):
        _close(share_before, share_after)
    assert before.cheaper_wins.estimate + before.ties.estimate + before.stronger_wins.estimate == (
        pytest.approx(1.0)
    )


@settings(max_examples=60, deadline=None)
@given(y=labels, data=st.data())
def test_interval_contains_the_estimate(y: list[int], data: st.DataObject) -> None:
    pi = data.draw(st.lists(probabilities, min_size=len(y), max_size=len(y)))
    result = rates.hajek_rate(y, pi)
    assert 0.0 <= result.ci_low <= result.estimate + 1e-12
    assert result.estimate - 1e-12 <= result.ci_high <= 1.0
    assert result.effective_n <= result.n + 1e-9


# --- window sums: what the aggregator stores must give the same numbers --------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from shadoweval.stats.rates import (  # noqa: E402
    WeightedSums,
    hajek_mean,
    hajek_mean_from_sums,
    hajek_rate,
    hajek_rate_from_sums,
    weighted_sums,
)


def _add(a: WeightedSums, b: WeightedSums) -> WeightedSums:
    return WeightedSums(*(x + y for x, y in zip(vars(a).values(), vars(b).values(), strict=True)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.floats(0.01, 1.0)), min_size=1, max_size=60),
    st.integers(0, 59),
)
def test_rate_from_window_sums_equals_the_array_estimate(
    pairs: list[tuple[int, float]], cut: int
) -> None:
    y = np.array([p[0] for p in pairs], dtype=float)
    pi = np.array([p[1] for p in pairs])
    cut = min(cut, len(pairs))
    # Two windows added up, as the aggregator does.
    summed = _add(weighted_sums(y[:cut], pi[:cut]), weighted_sums(y[cut:], pi[cut:]))
    direct, from_sums = hajek_rate(y, pi), hajek_rate_from_sums(summed)
    for field in ("estimate", "std_error", "ci_low", "ci_high", "effective_n", "weight_sum"):
        assert getattr(from_sums, field) == pytest.approx(
            getattr(direct, field), rel=1e-9, abs=1e-12
        )
    assert from_sums.n == direct.n


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-9, 9), st.floats(0.01, 1.0)), min_size=1, max_size=40))
def test_mean_from_window_sums_equals_the_array_estimate(pairs: list[tuple[float, float]]) -> None:
    # The expanded variance cancels to ~1e-16 where the direct form gives 0: abs 1e-6 on se.
    x = np.array([p[0] for p in pairs])
    pi = np.array([p[1] for p in pairs])
    direct, from_sums = hajek_mean(x, pi), hajek_mean_from_sums(weighted_sums(x, pi))
    for field in ("estimate", "std_error", "ci_low", "ci_high"):
        assert getattr(from_sums, field) == pytest.approx(
            getattr(direct, field), rel=1e-9, abs=1e-6
        )
