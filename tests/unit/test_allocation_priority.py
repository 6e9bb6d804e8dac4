"""Allocation for detection (issue 13): a suspect segment's floor, raised and paid first."""

from __future__ import annotations

import math

import pytest

from shadoweval.sampling import allocation as al
from shadoweval.sampling.allocation import Stratum


def _stratum(segment: str, traffic: float, floor: float, *, priority: bool = False) -> Stratum:
    return Stratum((segment, "cheap"), traffic, 0.02, 0.3, floor, False, priority=priority)


def test_labels_still_needed_is_the_gap_over_the_gain_per_label() -> None:
    kl = 0.25 * math.log(2.5) + 0.75 * math.log(0.75 / 0.9)
    assert al.labels_still_needed(2.5, 7.5, 0.1, 0.25) == pytest.approx(5.0 / kl)
    # More evidence, fewer labels; a bigger rise, fewer labels; at the threshold, none.
    assert al.labels_still_needed(5.0, 7.5, 0.1, 0.25) < al.labels_still_needed(2.5, 7.5, 0.1, 0.25)
    assert al.labels_still_needed(2.5, 7.5, 0.1, 0.5) < al.labels_still_needed(2.5, 7.5, 0.1, 0.25)
    assert al.labels_still_needed(8.0, 7.5, 0.1, 0.25) == 0.0
    # No rise seen (post ≤ pre, or rates at the edges): many labels, never a division error.
    assert al.labels_still_needed(2.5, 7.5, 0.2, 0.1) > 1e5
    assert al.labels_still_needed(2.5, 7.5, 1.0, 1.0) == math.inf


def test_a_suspect_floor_is_paid_first_up_to_its_share_of_the_budget() -> None:
    """Eight segments whose floors the budget pays a tenth of: alike, the small one gets a
    tenth of its floor too; suspect, its (raised) floor is paid first, up to the share."""
    budget = 18.0  # USD a day: 900 samples at 0.02
    big = [_stratum(f"s{i}", 5_000, 1_000) for i in range(7)]
    alike = al.neyman_allocation([*big, _stratum("small", 1_000, 1_000)], budget, 0.0)
    suspect = al.neyman_allocation(
        [*big, _stratum("small", 1_000, 1_000, priority=True)],
        budget,
        0.0,
        priority_share=0.3,
    )
    key = ("small", "cheap")
    assert alike.expected_samples_per_day[key] == pytest.approx(900 / 8)
    # Capped: 0.3 × 18 USD / 0.02 = 270 samples, not the 1,000 of its floor.
    assert suspect.expected_samples_per_day[key] == pytest.approx(270.0)
    assert suspect.probabilities[key] == pytest.approx(0.27)
    # The others share what is left, alike, and the plan stays within the budget.
    rest = [suspect.expected_samples_per_day[(f"s{i}", "cheap")] for i in range(7)]
    assert rest == pytest.approx([630 / 7] * 7)
    assert suspect.expected_cost_usd <= budget + 1e-9
    # A suspect floor within the share is paid in full.
    small_floor = al.neyman_allocation(
        [*big, _stratum("small", 1_000, 200, priority=True)], budget, 0.0, priority_share=0.3
    )
    assert small_floor.expected_samples_per_day[key] == pytest.approx(200.0)
