"""Router economics against the article's worked numbers and hand-computed values."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from shadoweval.stats import economics

Z95 = 1.959963984540054


def _article_window(escalated_count: int = 2) -> dict[str, Any]:
    """reference/000_07fba434b0e1916a.txt, "Mechanics": 70 % Haiku at $0.002, 30 % Opus at
    $0.010, $0.001 router overhead, against always-Opus at $0.010."""
    tier = ["cheap"] * 7 + ["strong"] * 3
    escalated = [False] * 10
    for i in range(escalated_count):
        escalated[9 - i] = True
    return {
        "tier": tier,
        "cost_usd": [0.002] * 7 + [0.010] * 3,
        "strong_cost_usd": [0.010] * 10,
        "router_cost_usd": [0.001] * 10,
        "latency_ms": [100, 200, 300, 400, 500, 600, 700, 800, 1000, 2000],
        "escalated": escalated,
        "fallback": [True] + [False] * 9,
        "failover": [False, True, True] + [False] * 7,
    }


def test_the_articles_worked_example() -> None:
    result = economics.router_economics(**_article_window())
    assert result.n_requests == 10
    # 0.70 · 0.002 + 0.30 · 0.010 + 0.001 = $0.0054, a 46 % reduction against $0.010.
    assert result.realized_cost_per_request_usd == pytest.approx(0.0054)
    assert result.always_strong_cost_per_request_usd == pytest.approx(0.010)
    assert result.savings_per_request_usd == pytest.approx(0.0046)
    assert result.savings_total_usd == pytest.approx(0.046)
    assert result.savings_rate == pytest.approx(0.46)
    assert result.router_overhead_per_request_usd == pytest.approx(0.001)
    assert result.model_cost_per_request_usd == pytest.approx(0.0044)
    # Break-even: 0.70 · (0.010 − 0.002) = $0.0056 > r = $0.001.
    be = result.break_even
    assert be.strong_share == pytest.approx(0.3)
    assert be.strong_cost_per_request_usd == pytest.approx(0.010)
    assert be.weak_cost_per_request_usd == pytest.approx(0.002)
    assert be.savings_side_usd == pytest.approx(0.0056)
    assert be.router_cost_side_usd == pytest.approx(0.001)
    assert be.router_pays_for_itself


def test_cost_intervals_are_mean_plus_minus_1_96_standard_errors() -> None:
    result = economics.router_economics(**_article_window())
    realized = [0.003] * 7 + [0.011] * 3
    half = Z95 * statistics.stdev(realized) / math.sqrt(10)  # 0.0023951
    assert half == pytest.approx(0.0023951, rel=1e-4)
    low, high = result.realized_cost_per_request_ci95_usd
    assert (low, high) == pytest.approx((0.0054 - half, 0.0054 + half))
    low, high = result.savings_per_request_ci95_usd
    assert (low, high) == pytest.approx((0.0046 - half, 0.0046 + half))


def test_rates_have_wilson_intervals_and_stay_apart() -> None:
    result = economics.router_economics(**_article_window())
    for estimate, count in (
        (result.escalation, 2),
        (result.fallback, 1),
        (result.failover, 2),
        (result.strong_share, 3),
    ):
        low, high = proportion_confint(count, 10, alpha=0.05, method="wilson")
        assert estimate.count == count
        assert estimate.n == 10
        assert estimate.share == pytest.approx(count / 10)
        assert (estimate.ci95_low, estimate.ci95_high) == pytest.approx((low, high), abs=1e-12)
    assert not result.escalation_warning
    assert result.escalation_warn_rate == 0.30


def test_escalation_warning_above_the_configured_rate() -> None:
    window = _article_window(escalated_count=3)
    assert economics.router_economics(**window).escalation_warning is False
    window["escalated"] = [False] * 6 + [True] * 4
    assert economics.router_economics(**window).escalation_warning
    assert (
        economics.router_economics(**window, escalation_warn_rate=0.5).escalation_warning is False
    )


def test_latency_percentiles_and_the_tail_escalations_add() -> None:
    result = economics.router_economics(**_article_window())
    # Not escalated: 100 … 800 (8 values); linear interpolation at (n − 1) q.
    plain = result.latency_not_escalated_ms
    assert (plain.p50_ms, plain.p90_ms, plain.p99_ms, plain.n) == pytest.approx(
        (450.0, 730.0, 793.0, 8)
    )
    escalated = result.latency_escalated_ms
    assert (escalated.p50_ms, escalated.n) == pytest.approx((1500.0, 2))
    everything = result.latency_all_ms
    assert (everything.p50_ms, everything.p90_ms, everything.p99_ms) == pytest.approx(
        (550.0, 1100.0, 1910.0)
    )
    assert result.escalation_added_p90_ms == pytest.approx(370.0)
    assert result.escalation_added_p99_ms == pytest.approx(1117.0)


def test_missing_latencies_and_groups() -> None:
    window = _article_window(escalated_count=0)
    window["latency_ms"] = [float("nan")] * 5 + [10.0] * 5
    result = economics.router_economics(**window)
    assert result.latency_all_ms.n == 5
    assert result.latency_escalated_ms.p99_ms is None
    assert result.latency_escalated_ms.n == 0
    assert result.escalation_added_p99_ms == pytest.approx(0.0)
    del window["latency_ms"]
    assert economics.router_economics(**window).latency_all_ms.p50_ms is None


def test_unreported_router_cost_is_imputed_by_the_reported_mean() -> None:
    window = _article_window()
    window["router_cost_usd"] = [0.001, 0.003] + [float("nan")] * 8
    result = economics.router_economics(**window)
    assert result.router_overhead_per_request_usd == pytest.approx(0.002)
    assert result.router_cost_reported_share == pytest.approx(0.2)
    assert result.realized_cost_per_request_usd == pytest.approx(0.0044 + 0.002)
    del window["router_cost_usd"]
    result = economics.router_economics(**window)
    assert result.router_overhead_per_request_usd == 0.0
    assert result.router_cost_reported_share == 0.0


def test_cascade_first_attempts_count_against_the_savings() -> None:
    window = _article_window()
    window["extra_attempt_cost_usd"] = [0.0] * 8 + [0.002, 0.002]
    result = economics.router_economics(**window)
    assert result.realized_cost_per_request_usd == pytest.approx(0.0054 + 0.0004)
    assert result.savings_per_request_usd == pytest.approx(0.0046 - 0.0004)


def test_router_that_does_not_pay_for_itself() -> None:
    # 90 % strong: 0.10 · (0.010 − 0.002) = $0.0008 < r = $0.001.
    result = economics.router_economics(
        tier=["cheap"] + ["strong"] * 9,
        cost_usd=[0.002] + [0.010] * 9,
        strong_cost_usd=[0.010] * 10,
        router_cost_usd=[0.001] * 10,
    )
    assert result.break_even.savings_side_usd == pytest.approx(0.0008)
    assert not result.break_even.router_pays_for_itself
    assert result.savings_per_request_usd == pytest.approx(-0.0002)
    everything_strong = economics.router_economics(
        tier=["strong"] * 3, cost_usd=[0.01] * 3, strong_cost_usd=[0.01] * 3
    )
    assert everything_strong.break_even.strong_cost_per_request_usd is None
    assert everything_strong.break_even.savings_side_usd == 0.0


def test_bad_input_is_refused() -> None:
    good = _article_window()
    with pytest.raises(ValueError, match="non-empty"):
        economics.router_economics(tier=[], cost_usd=[], strong_cost_usd=[])
    with pytest.raises(ValueError, match="length 10"):
        economics.router_economics(**{**good, "cost_usd": [0.1] * 9})
    with pytest.raises(ValueError, match="nonnegative"):
        economics.router_economics(**{**good, "cost_usd": [-0.1] + [0.1] * 9})
    with pytest.raises(ValueError, match="NaN"):
        economics.router_economics(**{**good, "strong_cost_usd": [np.nan] * 10})
    with pytest.raises(ValueError, match="0/1"):
        economics.router_economics(**{**good, "escalated": [2] * 10})
    with pytest.raises(ValueError, match="escalation_warn_rate"):
        economics.router_economics(**good, escalation_warn_rate=1.5)
    with pytest.raises(ValueError, match="count"):
        economics.share_estimate(3, 2)
