"""`shadoweval bench detect` at a tiny size: output structure, detection in an easy setting,
determinism, and the pieces the figures rest on (shares, binomial critical counts, the
e-detector's false-alarm bound). The full benchmark is not run in CI."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats

from shadoweval.bench import detect

STRATEGIES = {
    "a_uniform_daily",
    "b_planner_sr",
    "planner_cusum",
    "planner_daily_sprt",
    "uniform_sr",
}


@pytest.fixture(scope="module")
def easy() -> dict[str, Any]:
    # Half the traffic changes, so 500 labels/day see the rise: every strategy must catch it.
    return detect.run_detect_bench(
        repetitions=2, seed=3, days=3, change_day=1, segments=4, changed_share=0.5
    )


def test_output_structure_and_json(easy: dict[str, Any]) -> None:
    assert set(easy["strategies"]) == STRATEGIES
    assert set(easy["method"]) == STRATEGIES
    assert easy["settings"]["repetitions"] == 2
    assert len(easy["settings"]["traffic_shares"]) == 4
    assert len(easy["allocation"]["planner"]["labels_per_day"]) == 4
    for figures in easy["strategies"].values():
        for unit in ("delay_hours", "delay_labels"):
            assert set(figures[unit]) == {"median", "p90"}
        assert figures["false_alarms_per_30_days"] >= 0
        assert set(figures["speedup_vs_a"]) >= {"delay_hours", "delay_labels"}
    assert set(easy["delay_ratio_a_over_b"]) >= {"hours", "labels", "hours_ci95", "labels_ci95"}
    assert set(easy["target"]) >= {"speedup_met", "false_alarms_met", "met"}
    json.dumps(easy, allow_nan=False)


def test_detects_an_easy_rise(easy: dict[str, Any]) -> None:
    horizon_hours = (3 - 1) * 24
    for key in ("a_uniform_daily", "b_planner_sr", "planner_cusum", "uniform_sr"):
        figures = easy["strategies"][key]
        assert figures["detection_probability"] == 1.0, key
        assert 0 < figures["delay_hours"]["median"] <= horizon_hours
        assert (
            1
            <= figures["delay_labels"]["median"]
            <= figures["changed_segment_labels_after_change_mean"] * 1.5
        )
    # The daily test only decides at midnight, so its delays are whole days.
    assert easy["strategies"]["a_uniform_daily"]["delay_hours"]["median"] % 24 == 0


def test_report_and_determinism(easy: dict[str, Any]) -> None:
    report = detect.format_detect_report(easy)
    for label in detect.STRATEGY_LABELS.values():
        assert label in report
    assert "delay ratio (a)/(b)" in report
    again = detect.run_detect_bench(
        repetitions=2, seed=3, days=3, change_day=1, segments=4, changed_share=0.5
    )
    easy_copy, again_copy = dict(easy), dict(again)
    easy_copy.pop("runtime_seconds")
    again_copy.pop("runtime_seconds")
    assert json.dumps(easy_copy, sort_keys=True) == json.dumps(again_copy, sort_keys=True)


def test_traffic_shares_span_30_to_1_percent() -> None:
    shares, changed = detect.traffic_shares(20)
    assert shares.sum() == pytest.approx(1.0, abs=1e-12)
    assert shares[changed] == 0.05
    assert shares.max() == pytest.approx(0.30, abs=1e-6)
    assert shares.min() == pytest.approx(0.01, abs=2e-4)
    assert np.all(np.diff(shares) <= 0)
    with pytest.raises(ValueError, match="segments"):
        detect.traffic_shares(1)


def test_binomial_critical_counts_match_scipy() -> None:
    level = 0.05 / 20
    critical = detect._binomial_critical_counts(120, 0.1, level)
    for n in range(121):
        k = int(critical[n])
        assert k == n + 1 or stats.binom.sf(k - 1, n, 0.1) <= level
        assert k == 0 or stats.binom.sf(k - 2, n, 0.1) > level


def test_shiryaev_roberts_false_alarms_stay_below_n_over_a() -> None:
    # No change anywhere (changed = −1): expected alarms per stream ≤ labels / A.
    shares, _ = detect.traffic_shares(4)
    plan = detect._uniform_plan(shares, 500)
    labels = detect._simulate_labels(
        np.random.default_rng(0),
        plan,
        repetitions=20,
        days=10,
        change_day=5,
        labels_per_day=500,
        changed=-1,
    )
    threshold = 50.0
    alarms = detect._run_sequential(labels, kind="sr", threshold=threshold, change_day=5)
    assert 0 < alarms.stream.size <= labels.harm.size / threshold
