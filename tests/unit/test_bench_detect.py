"""`shadoweval bench detect` at a tiny size: output structure, detection in an easy setting,
determinism, and the pieces the figures rest on (shares, binomial critical counts, the
production detector as the bench runs it, the oracle's calibration). The full benchmark is
not run in CI."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats

from shadoweval.bench import detect
from shadoweval.stats.change_point import (
    change_point_post_lengths,
    change_point_statistic,
    glr_threshold,
)
from shadoweval.stats.change_point_detector import ChangePointState, change_point_update

STRATEGIES = {
    "b_planner_glr",
    "oracle_cusum",
    "a_uniform_daily",
    "planner_sr_known_baseline",
    "planner_daily_sprt",
    "uniform_glr",
    "planner_glr_known_pre_rate",
}


# Half the traffic changes, so 500 labels/day see the rise; 4 null streams keep it fast.
EASY: dict[str, Any] = {
    "repetitions": 2,
    "seed": 3,
    "days": 3,
    "change_day": 1,
    "segments": 4,
    "changed_share": 0.5,
    "null_streams": 4,
}


@pytest.fixture(scope="module")
def easy() -> dict[str, Any]:
    return detect.run_detect_bench(**EASY)


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
        assert set(figures["delay_vs_oracle"]) >= {"delay_hours", "delay_labels"}
    assert easy["strategies"]["oracle_cusum"]["delay_vs_oracle"]["delay_labels"] == 1.0
    assert set(easy["delay_ratio_to_oracle"]) >= {"hours", "labels", "hours_ci95", "labels_ci95"}
    assert set(easy["target"]) >= {"delay_ratio_met", "false_alarms_met", "met"}
    assert easy["settings"]["production_threshold"] == pytest.approx(glr_threshold(3 * 1000 * 10))
    json.dumps(easy, allow_nan=False)


def test_detects_an_easy_rise(easy: dict[str, Any]) -> None:
    horizon_hours = (3 - 1) * 24
    for key in (
        "b_planner_glr",
        "oracle_cusum",
        "a_uniform_daily",
        "uniform_glr",
        "planner_glr_known_pre_rate",
    ):
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
    # The production detector tests post-change stretches of ≥ 50 labels.
    assert easy["strategies"]["b_planner_glr"]["delay_labels"]["median"] >= 50


def test_report_and_determinism(easy: dict[str, Any]) -> None:
    report = detect.format_detect_report(easy)
    for label in detect.STRATEGY_LABELS.values():
        assert label in report
    assert "production / oracle" in report
    again = detect.run_detect_bench(**EASY)
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


def test_bench_runs_the_production_detector_label_by_label() -> None:
    # The vectorised bench path alarms where change_point_update does, stream by stream.
    shares, _ = detect.traffic_shares(4)
    plan = detect._uniform_plan(shares, 300)
    labels = detect._simulate_labels(
        np.random.default_rng(5),
        plan,
        repetitions=2,
        days=6,
        change_day=3,
        labels_per_day=300,
        changed=1,
    )
    threshold = glr_threshold(3000)
    alarms = detect._run_change_point(labels, threshold=threshold, change_day=3)
    expected: list[tuple[int, int]] = []
    for stream, (start, length) in enumerate(
        zip(labels.stream_start, labels.stream_length, strict=True)
    ):
        result = change_point_update(
            ChangePointState(),
            labels.harm[start : start + length],
            min_rise=detect.MIN_RISE,
            threshold=threshold,
            window_labels=detect.WINDOW_LABELS,
        )
        expected += [(stream, alarm.n) for alarm in result.alarms]
    got = sorted(zip(alarms.stream.tolist(), alarms.labels_through.tolist(), strict=True))
    assert got == sorted(expected)
    assert any(stream % 4 == 1 for stream, _ in expected)  # the changed segment alarms


def test_null_arl_is_measured_on_null_streams() -> None:
    # A low threshold so a small simulation sees alarms: the ARL lands at A or above.
    arl = 1_000.0
    null = detect._change_point_null_arl(
        np.random.default_rng(6), threshold=glr_threshold(arl), streams=40, length=5_000
    )
    assert null.alarms >= 20
    assert null.exposure_labels <= 40 * 5_000
    assert arl <= null.arl_labels <= 5 * arl


def test_known_pre_rate_statistic_is_the_production_one_with_the_baseline_given() -> None:
    # The diagnostic row's GLR equals the production two-sample statistic whose pre-change
    # side is so long that its rate is the given baseline; no stretch crosses into the
    # previous stream.
    rng = np.random.default_rng(8)
    harm = np.concatenate([rng.random(400) < 0.1, rng.random(300) < 0.3]).astype(np.int8)
    start = np.r_[np.zeros(400), np.full(300, 400)].astype(np.int64)
    got = detect._known_pre_rate_statistics(harm, start, pre_rate=0.1)

    lengths = change_point_post_lengths(detect.WINDOW_LABELS)
    cumulative = np.concatenate([[0], np.cumsum(harm)])
    end = np.arange(1, harm.size + 1)
    back = end[:, None] - lengths[None, :]
    recent = np.where(
        back >= start[:, None],
        (cumulative[end][:, None] - cumulative[np.maximum(back, 0)]).astype(np.float64),
        np.nan,
    )
    virtual = 1e9  # pre-change labels at exactly 0.1, plus the stream's own labels
    expected, _ = change_point_statistic(
        virtual + end - start,
        virtual * 0.1 + cumulative[end] - cumulative[start],
        recent,
        lengths,
        detect.MIN_RISE,
    )
    np.testing.assert_allclose(got, expected, atol=1e-3)
    # The second stream's first 49 labels hold no 50-label stretch of its own, though the
    # first stream's labels before them would show a rise with them.
    assert np.all(got[400:449] == 0.0)
    assert got[-1] > 5.0  # 300 labels at 0.3 against 0.1: a clear rise
