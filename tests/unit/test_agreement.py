"""Cohen's κ and its Fleiss–Cohen–Everitt interval against a hand computation and libraries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import cohens_kappa

from shadoweval.stats.agreement import cohen_kappa, kappa_from_table


def labels_of(table: list[list[int]]) -> tuple[list[int], list[int]]:
    first: list[int] = []
    second: list[int] = []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            first += [i] * count
            second += [j] * count
    return first, second


def test_hand_computed_two_by_two() -> None:
    # n = 50: p_o = 35/50 = 0.7; margins rows (.5, .5), cols (.6, .4); p_e = .5; κ = .4.
    # Var = [.4(1 − 1.1·.6)² + .3(1 − .9·.6)² + .36(.1·1.1² + .2·.9²) − (.4 − .5·.6)²]
    #       / (50 · .25) = (.04624 + .06348 + .10188 − .01) / 12.5 = .016128
    result = cohen_kappa(*labels_of([[20, 5], [10, 15]]))
    assert result.n == 50
    assert result.observed_agreement == pytest.approx(0.7)
    assert result.expected_agreement == pytest.approx(0.5)
    assert result.kappa == pytest.approx(0.4)
    assert result.std_error == pytest.approx(math.sqrt(0.016128))
    assert result.ci_low == pytest.approx(0.4 - 1.959964 * math.sqrt(0.016128), abs=1e-6)
    assert result.ci_high == pytest.approx(0.4 + 1.959964 * math.sqrt(0.016128), abs=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("categories", [2, 4])
def test_matches_sklearn_and_statsmodels(seed: int, categories: int) -> None:
    rng = np.random.default_rng(seed)
    first = rng.integers(0, categories, size=300)
    # The second rater copies the first 60 % of the time: κ well above 0.
    second = np.where(rng.random(300) < 0.6, first, rng.integers(0, categories, size=300))
    result = cohen_kappa(first, second)
    assert result.kappa == pytest.approx(cohen_kappa_score(first, second))
    table = np.zeros((categories, categories))
    np.add.at(table, (first, second), 1)
    reference = cohens_kappa(table)
    assert result.kappa == pytest.approx(reference.kappa)
    assert result.std_error == pytest.approx(math.sqrt(reference.var_kappa))
    assert result.ci_low < result.kappa < result.ci_high


def test_string_labels_and_table_agree() -> None:
    judge = ["ok", "ok", "bad", "ok", "bad", "bad", "ok"]
    human = ["ok", "bad", "bad", "ok", "bad", "ok", "ok"]
    by_labels = cohen_kappa(judge, human)
    by_table = kappa_from_table([[2, 1], [1, 3]])  # rows/cols sorted: bad, ok
    assert by_labels == by_table
    assert by_labels.kappa == pytest.approx(cohen_kappa_score(judge, human))


def test_perfect_agreement_has_a_zero_width_interval() -> None:
    result = cohen_kappa([0, 1, 1, 0], [0, 1, 1, 0])
    assert (result.kappa, result.std_error, result.ci_low, result.ci_high) == (1.0, 0.0, 1.0, 1.0)


def test_undefined_cases_are_nan_not_errors() -> None:
    empty = cohen_kappa([], [])
    assert empty.n == 0
    assert math.isnan(empty.kappa)
    # Both raters said "acceptable" every time: chance agreement is 1, κ is undefined.
    constant = cohen_kappa([1, 1, 1], [1, 1, 1])
    assert (constant.n, constant.observed_agreement) == (3, 1.0)
    assert math.isnan(constant.kappa)
    assert math.isnan(constant.ci_low)
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa([1, 0], [1])
