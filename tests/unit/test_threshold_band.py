"""The threshold band (issue 16): the recommendation's label shortfall and the planner's pure
band arithmetic (stats/threshold_recommendation.py, sampling/threshold_band.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from shadoweval.config import Settings
from shadoweval.sampling import threshold_band
from shadoweval.stats import threshold_recommendation, thresholds


def _curve(
    grid: list[float], harm: list[float], se: list[float], band: list[int]
) -> thresholds.ThresholdCurve:
    """A curve with the given harm estimates, errors and band labels (t₀ = 0.5)."""
    n = len(grid)
    zeros = np.zeros(n)
    harm_array = np.array(harm, dtype=float)
    return thresholds.ThresholdCurve(
        threshold=np.array(grid, dtype=float),
        threshold_in_force=0.5,
        strong_share=1.0 - np.array(grid, dtype=float),
        harm_rate=harm_array,
        harm_se=np.array(se, dtype=float),
        harm_low=harm_array,
        harm_high=harm_array,
        harm_rate_among_cheap=harm_array,
        cost_per_request_usd=zeros,
        cost_low_usd=zeros,
        cost_high_usd=zeros,
        savings_vs_always_strong_usd=zeros,
        savings_vs_always_strong_low_usd=zeros,
        savings_vs_always_strong_high_usd=zeros,
        savings_vs_in_force_usd=zeros,
        savings_vs_in_force_low_usd=zeros,
        savings_vs_in_force_high_usd=zeros,
        labels_in_band=np.array(band, dtype=np.int64),
        n_requests=10_000,
        n_labels=1_000,
        estimator="doubly_robust",
        confidence=0.95,
        replicates=100,
        hajek_mean_harm_se=0.0,
        doubly_robust_mean_harm_se=0.0,
    )


def test_a_tiny_positive_estimate_far_below_the_budget_passes_like_zero() -> None:
    # A doubly robust estimate of 2e-6 at t = 0.06 with the error of its neighbours: the
    # score-type scaling √(ε/ĥ) made its error 0.08 (p = 0.27) and stopped the sequence
    # there, recommending t = 0.05 for a router whose harm at t₀ is 0.014.
    curve = _curve(
        [0.05, 0.06, 0.5],
        [-1e-5, 2.3e-6, 0.014],
        [5.4e-4, 5.4e-4, 4e-3],
        [840, 824, 0],
    )
    advice = threshold_recommendation.recommend(curve, harm_budget=0.05, risk=0.1)
    assert advice.threshold == 0.5
    assert advice.change == "keep"
    assert advice.p_values[1] < 1e-6


def test_too_few_band_labels_ask_for_the_band_up_to_the_furthest_plausible_step() -> None:
    # Nothing above t₀ has the 20 band labels a test needs; estimated harm stays within
    # ε = 0.05 up to 0.8. The band asked for reaches 0.8, not the next grid point 0.6.
    curve = _curve(
        [0.5, 0.6, 0.7, 0.8, 0.9],
        [0.014, 0.02, 0.03, 0.045, 0.07],
        [0.003, 0.01, 0.01, 0.01, 0.02],
        [0, 2, 4, 6, 8],
    )
    advice = threshold_recommendation.recommend(
        curve, harm_budget=0.05, risk=0.1, min_band_labels=20
    )
    assert advice.change == "keep"
    assert advice.shortfall is not None
    assert (advice.shortfall.score_low, advice.shortfall.score_high) == (0.5, 0.8)
    assert advice.shortfall.labels_now == 6
    assert advice.shortfall.labels_more is not None
    assert advice.shortfall.labels_more >= 20 - 6
    # Over the budget already at the next point: the band stays one step wide.
    over = replace(curve, harm_rate=np.array([0.014, 0.06, 0.07, 0.08, 0.09]))
    advice = threshold_recommendation.recommend(over, harm_budget=0.05, risk=0.1)
    assert advice.shortfall is not None
    assert advice.shortfall.score_high == 0.6


def test_the_band_share_caps_the_set_aside_and_pi_buys_exactly_it() -> None:
    settings = Settings(daily_shadow_budget_usd=10.0, sampling_threshold_band_share=0.05)
    stratum = ("r", "support", "strong")
    small = ("r", "legal", "strong")
    needs = [
        threshold_band.BandNeed(stratum, 0.5, 0.8, labels_more=400, band_requests_per_day=300.0),
        threshold_band.BandNeed(small, 0.5, 0.6, labels_more=30, band_requests_per_day=20.0),
    ]
    labels, spend = threshold_band.set_aside(settings, needs, lambda _s: 0.01)
    # Wanted: min(400, 300) + min(30, 20) = 320 labels at $0.01 = $3.20 > $0.50 (5 %).
    assert spend == pytest.approx(0.5)
    assert labels[stratum] == pytest.approx(300 * 0.5 / 3.2)
    assert labels[small] == pytest.approx(20 * 0.5 / 3.2)

    bands = threshold_band.bands(needs, labels, {stratum: 0.1, small: 1.0})
    assert small not in bands  # already sampled whole: nothing to add
    band = bands[stratum]
    # Extra labels a day N·(1 − π_s)·π_band equal what was set aside.
    assert 300 * (1 - 0.1) * band.inclusion_probability == pytest.approx(labels[stratum])
    assert band.contains(0.5)
    assert not band.contains(0.8)
    assert not band.contains(None)
    assert threshold_band.combined_probability(0.1, band.inclusion_probability) == pytest.approx(
        0.1 + 0.9 * band.inclusion_probability
    )


def test_no_band_without_a_share() -> None:
    off = Settings(sampling_threshold_band_share=0.0)
    needs = [threshold_band.BandNeed(("r", "s", "strong"), 0.5, 0.7, 10, 50.0)]
    assert threshold_band.set_aside(off, needs, lambda _s: 0.01) == ({}, 0.0)
