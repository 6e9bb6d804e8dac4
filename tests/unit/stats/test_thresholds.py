"""Off-policy threshold curves and the Learn-then-Test recommendation (stats/thresholds.py)."""

from __future__ import annotations

import numpy as np
import pytest

from shadoweval.bench.thresholds import curve_for, simulate_window, true_curve, window_curve
from shadoweval.stats import rates, threshold_recommendation, thresholds

NAN = float("nan")


def tiny_curve(estimator: thresholds.Estimator) -> thresholds.ThresholdCurve:
    # Cheap-routed 0.1, 0.2, 0.3 (two labelled, π 0.5 and 0.25); strong-routed 0.7, 0.9
    # (one labelled, π 1). t₀ = 0.5.
    return thresholds.threshold_curve(
        score=[0.1, 0.2, 0.3, 0.7, 0.9],
        strong_routed=[False, False, False, True, True],
        cost_usd=[1.0, 1.0, 1.0, 10.0, 10.0],
        labelled=[True, True, False, True, False],
        strong_needed=[1.0, 0.0, NAN, 1.0, NAN],
        other_cost_usd=[10.0, 12.0, NAN, 2.0, NAN],
        inclusion_probability=[0.5, 0.25, 0.0, 1.0, 0.0],
        threshold_in_force=0.5,
        grid=[0.15, 0.5, 0.8],
        estimator=estimator,
        replicates=50,
    )


def test_hajek_curve_on_hand_worked_arrays() -> None:
    curve = tiny_curve("hajek")
    assert curve.estimator == "hajek"
    assert list(curve.threshold) == [0.15, 0.5, 0.8]
    # t₀: cheap stratum 3 · (2·1 + 4·0)/(2 + 4) = 1 harmful request of 5.
    # 0.15: the two cheap requests above 0.15 move up; the labelled one (w 4) was not harmed.
    # 0.8: the strong request at 0.7 moves down and was strong_needed: 2 · 1/1 = 2 more.
    assert curve.harm_rate == pytest.approx([0.2, 0.2, 0.6])
    assert curve.strong_share == pytest.approx([0.8, 0.4, 0.2])
    # Cost: own costs 23 USD; 0.15 adds 3 · (4·11)/(2 + 4) = 22; 0.8 adds 2 · (2 − 10) = −16.
    assert curve.cost_per_request_usd == pytest.approx([45 / 5, 23 / 5, 7 / 5])
    assert curve.savings_vs_in_force_usd == pytest.approx([23 / 5 - 9, 0.0, 23 / 5 - 7 / 5])
    assert curve.savings_vs_always_strong_usd == pytest.approx([0.0, 9 - 23 / 5, 9 - 7 / 5])
    assert list(curve.labels_in_band) == [1, 0, 1]  # [0.15, 0.5) and [0.5, 0.8)
    assert curve.n_labels == 3
    assert np.all(curve.harm_low <= curve.harm_rate)
    assert np.all(curve.harm_rate <= curve.harm_high)


def test_both_estimators_are_exact_when_every_request_is_labelled() -> None:
    score = np.array([0.2, 0.4, 0.6, 0.8])
    strong = score >= 0.5
    y = np.array([0.0, 1.0, 1.0, 0.0])
    for estimator in ("hajek", "doubly_robust"):
        curve = thresholds.threshold_curve(
            score=score,
            strong_routed=strong,
            cost_usd=np.where(strong, 10.0, 1.0),
            labelled=np.ones(4, dtype=bool),
            strong_needed=y,
            other_cost_usd=np.where(strong, 1.0, 10.0),
            inclusion_probability=np.full(4, 0.5),
            threshold_in_force=0.5,
            grid=[0.0, 0.3, 0.5, 0.7, 1.0],
            estimator=estimator,
            replicates=50,
        )
        assert curve.harm_rate == pytest.approx([0.0, 0.0, 0.25, 0.5, 0.5])
        assert curve.cost_per_request_usd == pytest.approx([10.0, 7.75, 5.5, 3.25, 1.0])


def test_the_estimate_at_the_threshold_in_force_is_the_observed_harm_rate() -> None:
    window = simulate_window(np.random.default_rng(3), requests=6000)
    observed = rates.harm_rate(
        window.strong_needed[window.labelled & ~window.strong_routed],
        window.inclusion_probability[window.labelled & ~window.strong_routed],
    )
    cheap_share = float(np.mean(~window.strong_routed))
    for estimator in ("hajek", "doubly_robust"):
        curve = window_curve(
            window,
            estimator=estimator,
            replicates=50,
        )
        at = int(np.flatnonzero(curve.threshold == 0.5)[0])
        assert curve.harm_rate_among_cheap[at] == pytest.approx(observed.estimate, rel=1e-12)
        assert curve.harm_rate[at] == pytest.approx(observed.estimate * cheap_share, rel=1e-12)
        assert curve.cost_per_request_usd[at] == pytest.approx(window.cost_usd.mean())
        assert curve.savings_vs_in_force_usd[at] == pytest.approx(0.0, abs=1e-15)


def test_simultaneous_bands_cover_the_true_curve_at_the_stated_level() -> None:
    grid = np.round(np.linspace(0.2, 0.8, 13), 6)
    covered_harm = covered_cost = 0
    repetitions = 80
    for rep in range(repetitions):
        window = simulate_window(np.random.default_rng(100 + rep), requests=4000)
        curve = window_curve(
            window,
            grid=grid,
            replicates=200,
            confidence=0.9,
            seed=rep,
        )
        # The finite-population truth: what each threshold would have done on this traffic.
        below = window.score[:, None] < grid[None, :]
        harm = (below * window.strong_needed[:, None]).mean(axis=0)
        cost = np.where(
            below, window.cheap_cost_usd[:, None], window.strong_cost_usd[:, None]
        ).mean(axis=0)
        covered_harm += bool(np.all((curve.harm_low <= harm) & (harm <= curve.harm_high)))
        covered_cost += bool(np.all((curve.cost_low_usd <= cost) & (cost <= curve.cost_high_usd)))
    # Nominal 0.9 over the whole grid; 80 repetitions give a binomial sd of ~0.034. Bands
    # that (nearly) always cover would be too wide to be useful.
    assert 0.8 <= covered_harm / repetitions <= 0.99
    assert 0.8 <= covered_cost / repetitions <= 0.99


def test_learn_then_test_keeps_the_risk_where_a_plug_in_chooser_does_not() -> None:
    grid = np.concatenate([[0.0], np.round(np.arange(0.40, 0.801, 0.01), 6)])
    budget, risk = 0.05, 0.1
    violations = plug_in_violations = raised = 0
    repetitions = 40
    for rep in range(repetitions):
        window = simulate_window(np.random.default_rng(500 + rep), requests=10_000)
        curve = window_curve(
            window,
            grid=grid,
            replicates=60,
            seed=rep,
        )
        harm, _ = true_curve(window, curve.threshold)
        advice = threshold_recommendation.recommend(curve, harm_budget=budget, risk=risk)
        assert advice.threshold is not None
        raised += advice.change == "raise"
        violations += harm[np.flatnonzero(curve.threshold == advice.threshold)[0]] > budget
        plug_in = threshold_recommendation.plug_in_threshold(curve, harm_budget=budget)
        plug_in_violations += harm[np.flatnonzero(curve.threshold == plug_in)[0]] > budget
    assert violations / repetitions <= risk + 0.05
    assert plug_in_violations / repetitions >= 0.3
    assert raised / repetitions >= 0.8  # the guarantee is not bought by never moving


def test_no_recommendation_when_labels_are_too_few() -> None:
    window = simulate_window(np.random.default_rng(7), requests=600, pi_cheap=0.1, pi_strong=0.05)
    curve = curve_for(window, replicates=50, seed=0)
    advice = threshold_recommendation.recommend(curve, harm_budget=0.05, risk=0.1, min_labels=100)
    assert curve.n_labels < 100
    assert advice.threshold is None
    assert advice.change == "none"
    assert advice.shortfall is not None
    assert advice.shortfall.labels_more == 100 - curve.n_labels


def test_too_few_labels_above_the_threshold_says_how_many_more_and_where() -> None:
    # Plenty of forward labels, almost no reverse shadows: the data cannot support a raise.
    window = simulate_window(np.random.default_rng(8), requests=20_000, pi_strong=0.001)
    curve = curve_for(window, replicates=50, seed=0)
    advice = threshold_recommendation.recommend(
        curve, harm_budget=0.05, risk=0.1, min_band_labels=20
    )
    assert advice.threshold == 0.5
    assert advice.change == "keep"
    assert advice.shortfall is not None
    assert advice.shortfall.score_low == 0.5
    assert advice.shortfall.score_high > 0.5
    assert advice.shortfall.labels_now < 20
    assert advice.shortfall.labels_more is not None
    assert advice.shortfall.labels_more >= 1


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="score"):
        thresholds.threshold_curve(
            score=[1.5],
            strong_routed=[True],
            cost_usd=[1.0],
            labelled=[False],
            strong_needed=[NAN],
            other_cost_usd=[NAN],
            inclusion_probability=[0.0],
            threshold_in_force=0.5,
        )
    with pytest.raises(ValueError, match="harm_budget"):
        threshold_recommendation.recommend(tiny_curve("hajek"), harm_budget=0.0, risk=0.1)
