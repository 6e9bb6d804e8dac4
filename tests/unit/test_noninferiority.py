"""The gate's one-sided non-inferiority test (Tango's paired score test), checked against
statsmodels' McNemar, a numeric maximum likelihood, and its own size by simulation."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from statsmodels.stats.contingency_tables import mcnemar

from shadoweval.stats.noninferiority import (
    LOSS,
    TIE,
    WIN,
    PairedCounts,
    min_pairs_to_pass,
    noninferiority_test,
    restricted_win_rate,
    score_statistic,
)

Z95 = NormalDist().inv_cdf(0.95)


@pytest.mark.parametrize(("losses", "wins", "ties"), [(12, 5, 40), (3, 9, 10), (30, 30, 1)])
def test_at_zero_margin_the_statistic_is_mcnemars(losses: int, wins: int, ties: int) -> None:
    counts = PairedCounts(wins=wins, ties=ties, losses=losses)
    # McNemar's table: discordant cells are the losses and the wins.
    table = np.array([[ties, losses], [wins, 0]])
    chi2 = mcnemar(table, exact=False, correction=False).statistic
    z = score_statistic([counts], [1.0], 0.0)
    assert z * z == pytest.approx(chi2)
    assert math.copysign(1, z) == math.copysign(1, losses - wins)


@pytest.mark.parametrize(
    ("losses", "wins", "n", "delta"),
    [(12, 5, 57, 0.1), (3, 9, 22, 0.05), (0, 0, 20, 0.2), (10, 0, 10, 0.3), (4, 20, 40, -0.2)],
)
def test_restricted_win_rate_is_the_constrained_maximum_likelihood(
    losses: int, wins: int, n: int, delta: float
) -> None:
    ties = n - losses - wins
    low, high = max(0.0, -delta), (1.0 - delta) / 2.0

    def negative_log_likelihood(q: float) -> float:
        total = 0.0
        for count, p in ((losses, q + delta), (wins, q), (ties, 1.0 - 2.0 * q - delta)):
            if count:
                total -= count * math.log(max(p, 1e-300))
        return total

    numeric = minimize_scalar(
        negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-10}
    ).x
    assert restricted_win_rate(losses, wins, n, delta) == pytest.approx(numeric, abs=1e-6)


def test_the_upper_bound_inverts_the_test() -> None:
    counts = PairedCounts(wins=14, ties=50, losses=20)
    result = noninferiority_test([counts], margin=0.2, alpha=0.05)
    assert result.upper_bound is not None
    assert result.drop is not None
    assert result.drop == pytest.approx(6 / 84)
    assert score_statistic([counts], [1.0], result.upper_bound) == pytest.approx(-Z95, abs=1e-6)
    assert result.passed == (result.upper_bound < 0.2)


def test_all_ties_pass_only_with_enough_pairs() -> None:
    # Z(δ) = −sqrt(n·δ/(1−δ)) for n ties: passes once n > z²·(1−δ)/δ = 24.35 at δ = 0.1.
    assert not noninferiority_test([PairedCounts(0, 24, 0)], margin=0.1).passed
    assert noninferiority_test([PairedCounts(0, 25, 0)], margin=0.1).passed
    small = noninferiority_test([PairedCounts(0, 5, 0)], margin=0.1)
    assert "too few pairs" in small.reason


def test_a_clearly_worse_candidate_fails_and_an_equal_one_passes() -> None:
    worse = noninferiority_test([PairedCounts(wins=2, ties=8, losses=30)], margin=0.1)
    assert not worse.passed
    assert worse.drop == pytest.approx(0.7)
    assert "at or above the margin" in worse.reason
    equal = noninferiority_test([PairedCounts(wins=40, ties=120, losses=40)], margin=0.1)
    assert equal.passed
    assert equal.drop == 0.0
    assert equal.p_value is not None
    assert equal.p_value < 0.05


def test_alpha_is_configurable() -> None:
    counts = [PairedCounts(wins=10, ties=40, losses=14)]
    loose = noninferiority_test(counts, margin=0.15, alpha=0.2)
    strict = noninferiority_test(counts, margin=0.15, alpha=0.01)
    assert loose.upper_bound is not None
    assert strict.upper_bound is not None
    assert loose.upper_bound < strict.upper_bound
    assert loose.passed
    assert not strict.passed


def test_one_stratum_is_the_unstratified_test_and_weights_matter() -> None:
    counts = PairedCounts(wins=14, ties=50, losses=20)
    assert noninferiority_test([counts], margin=0.2, weights=[3.0]) == noninferiority_test(
        [counts], margin=0.2
    )
    good, bad = PairedCounts(20, 60, 20), PairedCounts(0, 10, 10)
    # The bad segment is half of the sample but 5 % of the traffic it stands for.
    by_traffic = noninferiority_test([good, bad], margin=0.1, weights=[0.95, 0.05])
    pooled = noninferiority_test([good, bad], margin=0.1)
    assert by_traffic.drop == pytest.approx(0.05 * 0.5)
    assert pooled.drop == pytest.approx(10 / 120)
    assert by_traffic.n == pooled.n == 120


def test_no_pairs_fails_with_the_reason() -> None:
    result = noninferiority_test([PairedCounts(0, 0, 0)], margin=0.1)
    assert not result.passed
    assert result.drop is None
    assert result.upper_bound is None
    assert "no judged pairs" in result.reason


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        noninferiority_test([PairedCounts(1, 1, 1)], margin=0.0)
    with pytest.raises(ValueError, match="alpha"):
        noninferiority_test([PairedCounts(1, 1, 1)], margin=0.1, alpha=0.6)
    with pytest.raises(ValueError, match="outcome codes"):
        PairedCounts.from_outcomes([LOSS, TIE, WIN, 2])
    assert PairedCounts.from_outcomes([LOSS, LOSS, TIE, WIN]) == PairedCounts(1, 1, 2)


def test_false_pass_rate_at_the_margin_is_near_alpha() -> None:
    """Simulated at Δ exactly on the margin, the test passes about α of the time (its size)."""
    rng = np.random.default_rng(7)
    n, margin, alpha, reps = 150, 0.1, 0.05, 1500
    p_win = 0.2
    probabilities = [p_win + margin, p_win, 1 - 2 * p_win - margin]  # loss, win, tie
    draws = rng.multinomial(n, probabilities, size=reps)
    passes = sum(
        noninferiority_test(
            [PairedCounts(wins=int(w), ties=int(t), losses=int(loss))], margin=margin, alpha=alpha
        ).passed
        for loss, w, t in draws
    )
    # 3 binomial standard errors of 1500 draws at α = 0.05 is about 0.017.
    assert passes / reps == pytest.approx(alpha, abs=0.02)


@pytest.mark.parametrize(
    ("margin", "alpha", "pairs"),
    [
        # n > z²(1 − δ)/δ with z = 1.6449 (z² = 2.7055): 2.7055 · 19 = 51.40 → 52.
        (0.05, 0.05, 52),
        # 2.7055 · 9 = 24.35 → 25;  2.7055 · 3 = 8.12 → 9.
        (0.10, 0.05, 25),
        (0.25, 0.05, 9),
        # z = 2.3263 (z² = 5.4119) at α = 0.01: 5.4119 · 19 = 102.83 → 103.
        (0.05, 0.01, 103),
    ],
)
def test_the_fewest_pairs_that_can_pass_is_worked_by_hand(
    margin: float, alpha: float, pairs: int
) -> None:
    assert min_pairs_to_pass(margin, alpha) == pairs
    ties = noninferiority_test([PairedCounts(0, pairs, 0)], margin=margin, alpha=alpha)
    one_less = noninferiority_test([PairedCounts(0, pairs - 1, 0)], margin=margin, alpha=alpha)
    assert ties.passed
    assert not one_less.passed
    # The same number of pairs with one win and one loss (still a drop of 0) fails: pairs
    # the judge tells apart only raise the need, so all ties is the most favourable case.
    mixed = PairedCounts(wins=1, ties=pairs - 2, losses=1)
    assert not noninferiority_test([mixed], margin=margin, alpha=alpha).passed


def test_the_fewest_pairs_refuses_margins_and_levels_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="margin"):
        min_pairs_to_pass(0.0)
    with pytest.raises(ValueError, match="alpha"):
        min_pairs_to_pass(0.05, alpha=0.5)
