"""The budgeted stratified sampling planner: hand examples and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadoweval.sampling import allocation as al
from shadoweval.sampling.allocation import Stratum


def _s(
    segment: str,
    traffic: float,
    std: float,
    cost: float = 1.0,
    floor: float = 0.0,
    reverse: bool = False,
) -> Stratum:
    tier = "strong" if reverse else "cheap"
    return Stratum((segment, tier), traffic, cost, std, floor, reverse)


def _std(p: float) -> float:
    return math.sqrt(p * (1 - p))


def test_neyman_example_of_the_reference_notes() -> None:
    # reference/drift.md §3d: W = (.6, .3, .1), p = (.95, .85, .70); Neyman n = 3092
    # allocated (1425, 1168, 499).
    strata = [_s("a", 60_000, _std(0.95)), _s("b", 30_000, _std(0.85)), _s("c", 10_000, _std(0.70))]
    plan = al.neyman_allocation(strata, daily_budget_usd=3092.0, reverse_share=0.0)
    samples = [plan.expected_samples_per_day[s.key] for s in strata]
    assert samples == pytest.approx([1425, 1168, 499], abs=1.0)
    assert plan.expected_cost_usd == pytest.approx(3092.0)
    assert plan.probabilities[("a", "cheap")] == pytest.approx(samples[0] / 60_000)
    assert plan.floors_met


def test_dearer_labels_get_fewer_samples_by_one_over_root_cost() -> None:
    strata = [_s("a", 1000, 0.5, cost=1.0), _s("b", 1000, 0.5, cost=4.0)]
    plan = al.neyman_allocation(strata, daily_budget_usd=300.0, reverse_share=0.0)
    # n ∝ N S / sqrt(c): n_a = 2 n_b and n_a + 4 n_b = 300.
    assert plan.expected_samples_per_day[("a", "cheap")] == pytest.approx(100.0)
    assert plan.expected_samples_per_day[("b", "cheap")] == pytest.approx(50.0)
    assert plan.probabilities[("b", "cheap")] == pytest.approx(0.05)


def test_floor_lifts_a_small_segment_and_the_rest_is_neyman() -> None:
    strata = [_s("big1", 10_000, 0.3), _s("big2", 10_000, 0.3), _s("small", 100, 0.3, floor=50)]
    plan = al.neyman_allocation(strata, daily_budget_usd=1000.0, reverse_share=0.0)
    # Without the floor the small segment would get 1000 · 100/20100 ≈ 5 labels.
    assert plan.expected_samples_per_day[("small", "cheap")] == pytest.approx(50.0)
    assert plan.expected_samples_per_day[("big1", "cheap")] == pytest.approx(475.0)
    assert plan.probabilities[("small", "cheap")] == pytest.approx(0.5)
    assert plan.floors_met


def test_floors_beyond_the_budget_are_scaled_and_flagged() -> None:
    strata = [_s("a", 10_000, 0.3, floor=600), _s("b", 10_000, 0.1, floor=600)]
    plan = al.neyman_allocation(strata, daily_budget_usd=600.0, reverse_share=0.0)
    assert not plan.floors_met
    assert plan.expected_samples_per_day[("a", "cheap")] == pytest.approx(300.0)
    assert plan.expected_samples_per_day[("b", "cheap")] == pytest.approx(300.0)
    assert any("scaled by 0.500" in note for note in plan.notes)
    assert plan.expected_cost_usd <= 600.0


def test_probability_capped_at_one_and_the_excess_redistributed() -> None:
    # Weights N S = 50 and 100; unconstrained n = (200, 400) but the first has 100 requests.
    strata = [_s("tiny", 100, 0.5), _s("large", 10_000, 0.01)]
    plan = al.neyman_allocation(strata, daily_budget_usd=600.0, reverse_share=0.0)
    assert plan.probabilities[("tiny", "cheap")] == 1.0
    assert plan.expected_samples_per_day[("large", "cheap")] == pytest.approx(500.0)
    assert plan.expected_cost_usd == pytest.approx(600.0)


def test_reverse_share_and_spill_over() -> None:
    strata = [
        _s("a", 10_000, 0.3),
        _s("b", 10_000, 0.2),
        _s("a", 5_000, 0.3, reverse=True),
    ]
    plan = al.neyman_allocation(strata, daily_budget_usd=1000.0, reverse_share=0.2)
    reverse_cost = plan.expected_samples_per_day[("a", "strong")] * 1.0
    assert reverse_cost == pytest.approx(200.0)
    assert plan.expected_cost_usd == pytest.approx(1000.0)
    # Forward traffic costs only 300 in full: its unused 500 goes to the reverse stratum.
    small_forward = [_s("a", 200, 0.3), _s("b", 100, 0.2), _s("a", 5_000, 0.3, reverse=True)]
    plan = al.neyman_allocation(small_forward, daily_budget_usd=1000.0, reverse_share=0.2)
    assert plan.probabilities[("a", "cheap")] == 1.0
    assert plan.probabilities[("b", "cheap")] == 1.0
    assert plan.expected_samples_per_day[("a", "strong")] == pytest.approx(700.0)
    assert any("moved to reverse" in note for note in plan.notes)
    # No reverse strata: the whole budget serves the forward ones.
    plan = al.neyman_allocation(strata[:2], daily_budget_usd=1000.0, reverse_share=0.2)
    assert plan.expected_cost_usd == pytest.approx(1000.0)


def test_edge_cases_are_reported_not_hidden() -> None:
    strata = [_s("quiet", 0, 0.3, floor=10), _s("busy", 100, 0.3, floor=500)]
    plan = al.neyman_allocation(strata, daily_budget_usd=1e6, reverse_share=0.0)
    assert plan.probabilities[("quiet", "cheap")] == 0.0
    assert plan.probabilities[("busy", "cheap")] == 1.0
    assert set(plan.traffic_limited) == {("quiet", "cheap"), ("busy", "cheap")}
    assert any("no expected traffic" in note for note in plan.notes)
    assert any("covers all traffic" in note for note in plan.notes)
    empty = al.neyman_allocation([], daily_budget_usd=10.0, reverse_share=0.1)
    assert empty.probabilities == {}
    zero = al.neyman_allocation(strata, daily_budget_usd=0.0, reverse_share=0.0)
    assert zero.expected_cost_usd == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        al.neyman_allocation([_s("a", 1, 0.1), _s("a", 2, 0.1)], 10.0, 0.0)
    with pytest.raises(ValueError, match="daily_budget_usd"):
        al.neyman_allocation([_s("a", 1, 0.1)], -1.0, 0.0)
    with pytest.raises(ValueError, match="reverse_share"):
        al.neyman_allocation([_s("a", 1, 0.1)], 1.0, 1.5)
    with pytest.raises(ValueError, match="std_dev"):
        _s("a", 1, 0.6)
    with pytest.raises(ValueError, match="cost_per_sample_usd"):
        _s("a", 1, 0.1, cost=0.0)
    with pytest.raises(ValueError, match="expected_traffic"):
        _s("a", math.nan, 0.1)


def test_helpers() -> None:
    assert al.stratum_std_dev(0, 0) == pytest.approx(0.5)
    assert al.stratum_std_dev(10, 100) == pytest.approx(_std(11 / 102))
    assert al.stratum_std_dev(0, 1000, 1, 1) > 0.0
    assert al.floor_samples_per_day(686, 7.0, label_yield=0.9) == pytest.approx(686 / 7 / 0.9)
    assert al.expected_cost_per_sample_usd(
        0.01, 0.002, rerun_call_usd=0.004, rerun_share=0.5, retry_rate=0.1
    ) == pytest.approx((0.01 + 2 * 0.002 + 0.002) * 1.1)
    with pytest.raises(ValueError, match="label_yield"):
        al.floor_samples_per_day(10, 7.0, label_yield=0.0)
    with pytest.raises(ValueError, match="harm_count"):
        al.stratum_std_dev(5, 4)


# --- properties ------------------------------------------------------------------------------


@st.composite
def _strata(draw: st.DrawFn) -> list[Stratum]:
    count = draw(st.integers(1, 7))
    out = []
    for i in range(count):
        out.append(
            Stratum(
                key=(f"s{i}", "strong" if draw(st.booleans()) else "cheap"),
                expected_traffic=draw(st.floats(0.0, 1e5)),
                cost_per_sample_usd=draw(st.floats(1e-4, 2.0)),
                std_dev=draw(st.floats(0.0, 0.5)),
                floor_samples=draw(st.floats(0.0, 500.0)),
                is_reverse=draw(st.booleans()),
            )
        )
    return out


def _spend(strata: list[Stratum], plan: al.Allocation) -> float:
    return sum(
        plan.probabilities[s.key] * s.expected_traffic * s.cost_per_sample_usd for s in strata
    )


@settings(max_examples=150, deadline=None)
@given(_strata(), st.floats(0.0, 5e3), st.floats(0.0, 1.0))
def test_budget_is_never_exceeded_and_probabilities_are_valid(
    strata: list[Stratum], budget: float, reverse_share: float
) -> None:
    plan = al.neyman_allocation(strata, budget, reverse_share)
    assert all(0.0 <= p <= 1.0 for p in plan.probabilities.values())
    assert plan.expected_cost_usd <= budget
    assert _spend(strata, plan) == pytest.approx(plan.expected_cost_usd, rel=1e-9, abs=1e-12)
    if plan.floors_met:
        for s in strata:
            needed = min(s.floor_samples, s.expected_traffic)
            got = plan.expected_samples_per_day[s.key]
            assert got >= needed * (1 - 1e-9) - 1e-9


@settings(max_examples=150, deadline=None)
@given(_strata(), st.floats(0.0, 5e3))
def test_floors_are_met_whenever_affordable(strata: list[Stratum], budget: float) -> None:
    forward = [
        Stratum(s.key, s.expected_traffic, s.cost_per_sample_usd, s.std_dev, s.floor_samples)
        for s in strata
    ]
    forward = list({s.key: s for s in forward}.values())
    floor_cost = sum(
        min(s.floor_samples, s.expected_traffic) * s.cost_per_sample_usd for s in forward
    )
    plan = al.neyman_allocation(forward, budget, reverse_share=0.0)
    assert plan.floors_met == (floor_cost <= budget)


@settings(max_examples=150, deadline=None)
@given(_strata(), st.floats(0.0, 5e3), st.floats(0.0, 3.0), st.floats(0.0, 1.0))
def test_more_budget_never_lowers_a_probability(
    strata: list[Stratum], budget: float, extra: float, reverse_share: float
) -> None:
    low = al.neyman_allocation(strata, budget, reverse_share)
    high = al.neyman_allocation(strata, budget * (1 + extra) + extra, reverse_share)
    for key, p in low.probabilities.items():
        assert high.probabilities[key] >= p - 1e-9


def _priority(segment: str, traffic: float, floor: float) -> Stratum:
    return Stratum((segment, "cheap"), traffic, 1.0, 0.3, floor, False, priority=True)


def test_a_suspect_segment_is_paid_first_and_the_others_share_the_rest() -> None:
    """Issue 13: floors beyond the budget were scaled alike, so a segment whose labels show a
    rise got no more labels than any other. A priority floor is paid in full; the others'
    floors are scaled to what is left."""
    strata = [
        _s("a", 10_000, 0.3, floor=600),
        _s("b", 10_000, 0.3, floor=600),
        _priority("suspect", 1_000, 300),
    ]
    plan = al.neyman_allocation(strata, daily_budget_usd=600.0, reverse_share=0.0)
    samples = plan.expected_samples_per_day
    assert samples[("suspect", "cheap")] == pytest.approx(300.0)
    assert samples[("a", "cheap")] == pytest.approx(150.0)
    assert samples[("b", "cheap")] == pytest.approx(150.0)
    assert plan.expected_cost_usd <= 600.0
    assert not plan.floors_met


def test_suspect_floors_take_at_most_their_share_of_the_budget() -> None:
    strata = [_s("a", 10_000, 0.3, floor=600), _priority("suspect", 1_000, 1_000)]
    plan = al.neyman_allocation(
        strata, daily_budget_usd=600.0, reverse_share=0.0, priority_share=0.5
    )
    assert plan.expected_samples_per_day[("suspect", "cheap")] == pytest.approx(300.0)
    assert plan.expected_samples_per_day[("a", "cheap")] == pytest.approx(300.0)
    assert plan.expected_cost_usd <= 600.0
    # Affordable floors: priority changes nothing, the rest is Neyman as before.
    cheap = [_s("a", 10_000, 0.3, floor=100), _priority("suspect", 1_000, 100)]
    plain = [_s("a", 10_000, 0.3, floor=100), _s("suspect", 1_000, 0.3, floor=100)]
    assert (
        al.neyman_allocation(cheap, 600.0, 0.0, priority_share=0.5).probabilities
        == al.neyman_allocation(plain, 600.0, 0.0).probabilities
    )
    with pytest.raises(ValueError, match="priority_share"):
        al.neyman_allocation(cheap, 600.0, 0.0, priority_share=1.5)
