"""judge.quality.wilson: the 95 % Wilson interval the judge-quality figures report."""

from __future__ import annotations

import math

import pytest

from shadoweval.judge.quality import wilson


def test_wilson_matches_the_textbook_interval() -> None:
    # Wilson (1927) with z = 1.96 for 8 of 10: [0.4902, 0.9433] (Brown, Cai & DasGupta 2001).
    result = wilson(8, 10)
    assert (result.estimate, result.n) == (0.8, 10)
    assert result.ci_low == pytest.approx(0.4902, abs=1e-4)
    assert result.ci_high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_is_exact_at_the_edges() -> None:
    assert wilson(0, 5).ci_low == 0.0
    assert wilson(5, 5).ci_high == 1.0


def test_wilson_of_nothing_is_undefined_not_zero() -> None:
    result = wilson(0, 0)
    assert math.isnan(result.estimate)
    assert math.isnan(result.ci_low)
    assert math.isnan(result.ci_high)
    assert result.n == 0
