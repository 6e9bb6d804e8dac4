"""Prediction-powered harm rates: judge labels corrected by a uniform human subsample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shadoweval.stats import ppi, rates


def test_hand_worked_classic_ppi() -> None:
    # Six judged pairs (π = 1), judge labels f = 1 0 0 1 0 0; the first three reviewed with
    # q = 1/2, human labels y = 1 1 0. With λ = 1:
    #   F̄ = 2/6, F̄_H = 1/3, Ȳ_H = 2/3, θ̂ = F̄ + Ȳ_H − F̄_H = 2/3.
    # Influences eᵢ = (fᵢ − F̄) + 2[(yᵢ − Ȳ_H) − (fᵢ − F̄_H)] on H, fᵢ − F̄ elsewhere:
    #   0, 1, −1, 2/3, −1/3, −1/3; Σe² = 8/3; V̂ = 3/2 · (8/3) / 6² = 1/9 (3/2 = n/(n−1)).
    # Judge bias on H: mean of f − y = (0 − 1 + 0)/3 = −1/3, SE √(3/2 · 8/3)/6 = 1/3.
    result = ppi.ppi_harm_rate(
        [1, 0, 0, 1, 0, 0], 1.0, [1, 1, 0, 0, 0, 0], 0.5, [1, 1, 1, 0, 0, 0], lam=1.0
    )
    assert result.estimate == pytest.approx(2 / 3)
    assert result.std_error == pytest.approx(1 / 3)
    assert result.judge_bias == pytest.approx(-1 / 3)
    assert result.judge_bias_std_error == pytest.approx(1 / 3)
    assert result.judge_only.estimate == pytest.approx(1 / 3)
    assert result.human_n == 3
    assert result.judge_n == 6
    n_star = (2 / 3) * (1 / 3) / (1 / 9)
    assert (result.ci_low, result.ci_high) == pytest.approx(rates.wilson_interval(2 / 3, n_star))


def test_lambda_zero_is_the_human_only_estimate() -> None:
    rng = np.random.default_rng(1)
    f = (rng.random(400) < 0.3).astype(float)
    reviewed = (rng.random(400) < 0.25).astype(float)
    y = reviewed * (rng.random(400) < 0.4)
    result = ppi.ppi_harm_rate(f, 1.0, y, 0.25, reviewed, lam=0.0)
    human = rates.process_rate(y[reviewed == 1], 1.0)
    assert result.estimate == pytest.approx(human.estimate)
    assert result.estimate == pytest.approx(result.human_only_estimate)
    n = int(reviewed.sum())
    assert result.std_error == pytest.approx(human.std_error * math.sqrt(n / (n - 1)))


def test_from_sums_equals_the_array_form() -> None:
    rng = np.random.default_rng(2)
    pi = rng.choice([0.2, 1.0], size=500)
    f = (rng.random(500) < 0.2).astype(float)
    reviewed = rng.random(500) < 0.1
    y = np.where(reviewed, (rng.random(500) < 0.3), 0).astype(float)
    direct = ppi.ppi_harm_rate(f, pi, y, 0.1, reviewed.astype(float))
    summed = ppi.ppi_harm_rate_from_sums(
        rates.weighted_sums(f, pi), f[reviewed], y[reviewed], pi[reviewed], 0.1
    )
    assert summed.estimate == pytest.approx(direct.estimate)
    assert summed.std_error == pytest.approx(direct.std_error)
    assert summed.lam == pytest.approx(direct.lam)


def test_without_human_labels_only_the_judge_estimate_is_filled() -> None:
    result = ppi.ppi_harm_rate([1, 0, 0], 1.0, [0, 0, 0], 0.5, [0, 0, 0])
    assert math.isnan(result.estimate)
    assert result.judge_only.estimate == pytest.approx(1 / 3)
    assert result.human_n == 0


def test_one_human_label_gives_the_whole_unit_interval() -> None:
    result = ppi.ppi_harm_rate([1, 0, 0], 1.0, [1, 0, 0], 0.5, [1, 0, 0])
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="lam"):
        ppi.ppi_harm_rate([1], 1.0, [1], 1.0, [1], lam=1.5)
    with pytest.raises(ValueError, match=r"review_probability|inclusion_probability"):
        ppi.ppi_harm_rate([1], 1.0, [1], 0.0, [1])
    with pytest.raises(ValueError, match="equal lengths"):
        ppi.ppi_harm_rate([1, 0], 1.0, [1], 1.0, [1, 0])


def test_biased_judge_simulation_ppi_covers_and_judge_only_does_not() -> None:
    # Truth: harm probability 0.2. The judge misses 30 % of harmful pairs and flags 5 % of
    # good ones (judge rate 0.2·0.7 + 0.8·0.05 = 0.18). 5000 judged pairs (half sampled at
    # π = 0.5, half census), 200 expected human labels drawn uniformly (q = 0.04).
    rng = np.random.default_rng(2023)
    truth, pairs, q, repetitions = 0.2, 5000, 0.04, 500
    pi = np.where(np.arange(pairs) % 2 == 0, 1.0, 0.5)
    judge_hits = ppi_hits = 0
    ppi_width = human_width = 0.0
    for _ in range(repetitions):
        y = (rng.random(pairs) < truth).astype(float)
        missed = rng.random(pairs) < 0.30
        flipped = rng.random(pairs) < 0.05
        f = np.where(y == 1, ~missed, flipped).astype(float)
        reviewed = (rng.random(pairs) < q).astype(float)
        result = ppi.ppi_harm_rate(f, pi, y * reviewed, q, reviewed)
        judge_hits += result.judge_only.ci_low <= truth <= result.judge_only.ci_high
        ppi_hits += result.ci_low <= truth <= result.ci_high
        ppi_width += result.ci_high - result.ci_low
        human_width += result.human_only_ci_high - result.human_only_ci_low
    assert judge_hits / repetitions < 0.5
    assert 0.92 <= ppi_hits / repetitions <= 0.98
    assert ppi_width < 0.85 * human_width


def test_review_sample_is_a_reproducible_uniform_draw_with_known_probability() -> None:
    from shadoweval.feedback.queue import in_review_sample, uniform_sample

    pairs = [(i, "r", f"req-{i}", "s") for i in range(4000)]
    drawn = uniform_sample(pairs, 0.1)
    assert 340 < len(drawn) < 460  # ≈ 400; binomial sd 19
    assert all(item.inclusion_probability == 0.1 for item in drawn)
    assert uniform_sample(pairs, 0.1) == drawn  # the hash decides, not a random state
    assert all(in_review_sample("r", item.request_id, 0.1) for item in drawn)
    # Nested: a pair in the 5 % sample is in the 10 % sample too.
    assert {i.verdict_id for i in uniform_sample(pairs, 0.05)} <= {i.verdict_id for i in drawn}
    with pytest.raises(ValueError, match="probability"):
        in_review_sample("r", "x", 0.0)
