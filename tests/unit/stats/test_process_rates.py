"""Process-level (superpopulation) rate intervals: the default interval of every harm,
missed-savings and win rate. They estimate the segment's rate on its traffic, so even a
census (π = 1) of a finite set of decisions has a non-zero-width interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shadoweval.stats import rates


def test_a_census_has_the_plain_wilson_interval_not_zero_width() -> None:
    # 3 harms in 10 decisions, every one sampled (π = 1): the finite-population interval
    # is the point 0.3; the process-level one is Wilson on n = 10.
    y = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    finite = rates.hajek_rate(y, 1.0)
    assert finite.ci_low == finite.ci_high == pytest.approx(0.3)
    process = rates.process_rate(y, 1.0)
    assert process.estimate == pytest.approx(0.3)
    assert process.std_error == pytest.approx(math.sqrt(0.3 * 0.7 / 10))
    low, high = rates.wilson_interval(0.3, 10)
    assert (process.ci_low, process.ci_high) == pytest.approx((low, high))
    # By hand: Wilson with z = 1.96, p = .3, n = 10 is (0.1078, 0.6032).
    assert process.ci_low == pytest.approx(0.1078, abs=1e-4)
    assert process.ci_high == pytest.approx(0.6032, abs=1e-4)


def test_hand_worked_weighted_example() -> None:
    # Two labels at π = 1/2 (w = 2): y = 1, 0; one at π = 1 (w = 1): y = 1.
    # p̂ = (2 + 1) / 5 = 0.6. Σw²(y − p̂)² = 4·0.16 + 4·0.36 + 1·0.16 = 2.24; V̂ = 2.24 / 25.
    y, pi = [1, 0, 1], [0.5, 0.5, 1.0]
    result = rates.process_rate(y, pi)
    assert result.estimate == pytest.approx(0.6)
    assert result.std_error == pytest.approx(math.sqrt(2.24 / 25))
    low, high = rates.wilson_interval(0.6, 0.6 * 0.4 / (2.24 / 25))
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    # The finite-population variance drops the (1 − π) = 0 census term: smaller.
    assert rates.hajek_rate(y, pi).std_error < result.std_error


def test_zero_harms_in_a_census_still_have_an_upper_bound_above_zero() -> None:
    result = rates.process_rate(np.zeros(30), 1.0)
    assert result.estimate == 0.0
    assert result.ci_low == 0.0
    assert result.ci_high == pytest.approx(rates.wilson_interval(0.0, 30)[1])
    assert result.ci_high > 0.1


def test_from_sums_equals_the_direct_computation() -> None:
    rng = np.random.default_rng(4)
    pi = rng.choice([0.1, 0.5, 1.0], size=300)
    y = (rng.random(300) < 0.2).astype(float)
    direct = rates.process_rate(y, pi)
    half = 150
    first, second = (
        rates.weighted_sums(y[:half], pi[:half]),
        rates.weighted_sums(y[half:], pi[half:]),
    )
    summed = rates.WeightedSums(
        *(getattr(first, f) + getattr(second, f) for f in first.__dataclass_fields__)
    )
    assert rates.process_rate_from_sums(summed) == direct
    assert rates.process_harm_rate(y, pi) == direct
    assert rates.process_missed_savings_rate(y, pi) == direct


def test_empty_input_is_nan() -> None:
    result = rates.process_rate([], [])
    assert math.isnan(result.estimate)
    assert result.n == 0


def test_covers_the_harm_probability_at_95_percent_with_census_strata() -> None:
    # Three strata of a segment's traffic: a census stratum (π = 1), and two sampled at
    # π = 0.3 and 0.1, with different harm probabilities. The truth is the traffic-weighted
    # harm probability; the finite-population interval of a census stratum misses it
    # whenever the realised share differs from the probability.
    rng = np.random.default_rng(17)
    sizes, harm, pi = (150, 800, 2000), (0.30, 0.15, 0.05), (1.0, 0.3, 0.1)
    truth = float(np.dot(sizes, harm) / sum(sizes))
    repetitions = 2000
    covered = finite_covered = zero_width = 0
    for _ in range(repetitions):
        ys, pis = [], []
        for size, p, prob in zip(sizes, harm, pi, strict=True):
            outcome = rng.random(size) < p
            sampled = rng.random(size) < prob
            ys.append(outcome[sampled].astype(float))
            pis.append(np.full(int(sampled.sum()), prob))
        y, probabilities = np.concatenate(ys), np.concatenate(pis)
        result = rates.process_rate(y, probabilities)
        covered += result.ci_low <= truth <= result.ci_high
        finite = rates.hajek_rate(y, probabilities)
        finite_covered += finite.ci_low <= truth <= finite.ci_high
        census = rates.process_rate(ys[0], 1.0)
        zero_width += census.ci_high - census.ci_low <= 0.0
    assert 0.93 <= covered / repetitions <= 0.97
    assert zero_width == 0
    # The finite-population interval understates the uncertainty about the probability.
    assert finite_covered < covered


def test_census_stratum_alone_covers_its_probability() -> None:
    rng = np.random.default_rng(5)
    repetitions, p = 2000, 0.436
    hits = 0
    for _ in range(repetitions):
        y = (rng.random(303) < p).astype(float)
        result = rates.process_rate(y, 1.0)
        hits += result.ci_low <= p <= result.ci_high
    assert 0.93 <= hits / repetitions <= 0.97
