"""The dashboard's pure helpers: wording of numbers, tables sorted by risk, the Pareto points."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from shadoweval.dashboard import charts


def _segment(name: str, rate: float, low: float, high: float, n: int, **extra: object) -> dict:
    return {
        "router": "r",
        "segment": name,
        "direction": "forward",
        "label": "harm_rate",
        "judge_key": "j#1",
        "rate": {"estimate": rate, "ci_low": low, "ci_high": high, "n": n},
        "coverage": {"decisions": 10 * n, "share_of_traffic_labelled": 0.1, "judge_errors": 1},
        "sequential": None,
        **extra,
    }


def test_numbers_carry_units_and_intervals() -> None:
    assert charts.usd(0.00325) == "$0.00325"
    assert charts.usd(12.5) == "$12.50"
    assert charts.usd(None) == "—"
    assert charts.pct(0.5357) == "53.6 %"
    assert charts.rate_with_interval(
        {"estimate": 1 / 3, "ci_low": 0.1, "ci_high": 0.7, "n": 3}
    ) == ("33.3 % (95 % CI 10.0–70.0 %, n = 3)")
    assert charts.rate_with_interval({"estimate": None, "n": 0}) == "— (n = 0)"
    assert (
        charts.share_with_interval(
            {"share": 0.25, "ci95_low": 0.05, "ci95_high": 0.7, "count": 1, "n": 4}
        )
        == "25.0 % (95 % CI 5.0–70.0 %, 1 of 4)"
    )
    assert charts.usd_interval(0.1, [0.05, 0.15]) == "$0.10000 (95 % CI $0.05000–$0.15000)"


def test_segments_are_sorted_by_the_upper_bound_of_their_interval() -> None:
    table = charts.segments_table(
        [
            _segment("narrow-high", 0.30, 0.28, 0.32, 900),
            _segment("wide-uncertain", 0.10, 0.01, 0.60, 5),
            _segment("low", 0.02, 0.01, 0.05, 400),
        ]
    )
    assert list(table["segment"]) == ["wide-uncertain", "narrow-high", "low"]
    assert list(table["labels (n)"]) == [5, 900, 400]
    assert set(table["not shadowable"]) == {1}


def test_empty_answers_give_empty_tables() -> None:
    assert charts.segments_table([]).empty
    assert charts.tier_mix([]).empty
    assert charts.pareto_points({"n_requests": 0}, []).empty
    assert charts.alerts_frame([]).empty
    assert charts.events_frame([]).empty


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, "not started"),
        ({"alarmed_at_ts": "2026-11-27T12:00:00Z"}, "ALARM since 2026-11-27T12:00:00Z"),
        ({"labels": 7, "evidence": 0.0, "post_change_labels": 0}, "no rise seen in 7 labels"),
        (
            {
                "labels": 120,
                "evidence": 0.5,
                "post_change_labels": 50,
                "post_change_harm_rate": 0.24,
                "pre_change_harm_rate": 0.1,
                "change_ts": "2026-11-27T09:00:00Z",
            },
            "harm 24.0 % in the last 50 labels (since 2026-11-27T09:00:00Z) against 10.0 % "
            "before; evidence 50 % of the alarm threshold",
        ),
    ],
)
def test_sequential_state_in_words(state: dict | None, expected: str) -> None:
    assert expected in charts.sequential_state(state)


def test_tier_mix_counts_decisions_per_bucket_and_tier() -> None:
    mix = charts.tier_mix(
        [
            {"ts": "2026-11-27T12:05:00Z", "tier": "cheap"},
            {"ts": "2026-11-27T12:55:00Z", "tier": "cheap"},
            {"ts": "2026-11-27T12:30:00Z", "tier": "strong"},
            {"ts": "2026-11-27T13:01:00Z", "tier": "cheap"},
        ],
        freq="h",
    )
    assert mix["decisions"].tolist() == [2, 1, 1]
    assert mix["tier"].tolist() == ["cheap", "strong", "cheap"]


def test_pareto_places_the_router_between_its_two_models() -> None:
    economics = {
        "n_requests": 4,
        "realized_cost_per_request_usd": 0.00325,
        "always_strong_cost_per_request_usd": 0.007,
        "strong_model": "s",
        "strong_share": {"share": 0.25},
        "break_even": {"weak_cost_per_request_usd": 0.001},
    }
    verdicts = [
        {"status": "done", "direction": "forward", "score_cheaper": 4, "score_stronger": 8},
        {"status": "done", "direction": "forward", "score_cheaper": 8, "score_stronger": 8},
        {"status": "done", "direction": "reverse", "score_cheaper": 6, "score_stronger": 10},
        {"status": "error", "direction": "forward", "score_cheaper": None},
    ]
    points = charts.pareto_points(economics, verdicts).set_index("point")
    assert points.loc["always cheap"].tolist() == [0.001, 6.0]
    assert points.loc["always strong (s)"].tolist() == pytest.approx([0.007, 26 / 3])
    # 0.75 × mean cheap score on cheap-routed (6) + 0.25 × strong score on strong-routed (10).
    assert points.loc["router (operating point)"].tolist() == pytest.approx([0.00325, 7.0])


def test_savings_per_day_scales_the_per_request_interval() -> None:
    day = datetime(2026, 11, 27, tzinfo=UTC)
    frame = charts.savings_per_day(
        [
            (
                day,
                {
                    "n_requests": 100,
                    "savings_total_usd": 0.4,
                    "savings_per_request_ci95_usd": [0.003, 0.005],
                    "savings_rate": 0.5,
                },
            ),
            (day, {"n_requests": 0}),
        ]
    )
    assert frame.to_dict("records") == [
        {
            "day (UTC)": "2026-11-27",
            "decisions": 100,
            "savings (USD)": 0.4,
            "95 % CI low (USD)": pytest.approx(0.3),
            "95 % CI high (USD)": pytest.approx(0.5),
            "savings rate": 0.5,
        }
    ]


def test_windows_and_days() -> None:
    start = datetime(2026, 11, 27, tzinfo=UTC)
    end = datetime(2026, 11, 27, 6, tzinfo=UTC)
    windows = charts.time_windows(start, end, 3)
    assert [w[0].hour for w in windows] == [0, 2, 4]
    assert windows[-1][1] == end
    assert charts.time_windows(end, start, 3) == []
    days = charts.utc_days("2026-11-25T23:00:00Z", "2026-11-27T01:00:00Z", limit=2)
    assert [d.day for d in days] == [26, 27]


def test_drift_columns_accept_a_mapping_or_a_list() -> None:
    by_name = charts.drift_columns({"columns": {"prompt_tokens": {"drift_detected": True}}})
    assert by_name.to_dict("records") == [{"column": "prompt_tokens", "drift_detected": True}]
    listed = charts.drift_columns({"columns": [{"column": "score", "p_value": 0.2}]})
    assert listed.to_dict("records") == [{"column": "score", "p_value": 0.2}]


def test_alert_bars_run_over_decision_time_and_open_alerts_end_now() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    timeline = charts.alert_timeline_frame(
        [
            {
                "id": 1,
                "rule": "quality_drop",
                "router": "r",
                "segment": "legal",
                "severity": "critical",
                "state": "firing",
                "pending_since_ts": "2026-03-02T09:03:00Z",
                "fired_ts": "2026-03-02T09:07:00Z",
                "summary": "legal: harm 10 % → 24 %",
            },
            {
                "id": 2,
                "rule": "calibration_drift",
                "router": "r",
                "segment": None,
                "severity": "warning",
                "state": "resolved",
                "fired_ts": "2026-03-02T08:00:00+00:00",
                "resolved_ts": "2026-03-02T08:30:00+00:00",
                "title": "calibration drifted",
            },
        ],
        now=now,
    )
    first, second = timeline.to_dict("records")
    # Open: from when the condition first held to decision time now.
    assert first["alert"] == "#1 quality_drop (r · legal)"
    assert (first["from"].isoformat(), first["to"]) == ("2026-03-02T09:03:00+00:00", now)
    # Resolved: ends at the decision time that resolved it; no segment, no "None".
    assert second["alert"] == "#2 calibration_drift (r)"
    assert second["to"].isoformat() == "2026-03-02T08:30:00+00:00"
    assert second["summary"] == "calibration drifted"


def test_event_rules_are_labelled_and_absent_without_events() -> None:
    events = charts.events_frame(
        [
            {
                "ts": "2026-03-02T09:09:00Z",
                "kind": "model_change",
                "router": "r",
                "details": {"model": "claude-haiku-4-6"},
            }
        ]
    )
    base = charts.alt.Chart(events).mark_point().encode(x="ts:T")
    spec = charts.with_event_rules(base, events).to_dict()
    assert len(spec["layer"]) == 2
    labels = [row.get("label") for rows in spec["datasets"].values() for row in rows]
    assert "model change: claude-haiku-4-6" in labels
    assert len(charts.with_event_rules(base, events.iloc[0:0]).to_dict()["layer"]) == 1
    assert charts.event_label("sampling_shortfall", None) == "sampling shortfall"


def test_tables_show_a_dash_for_missing_values_never_none() -> None:
    from shadoweval.dashboard import ui

    frame = charts.pd.DataFrame(
        {
            "who": ["ops", None],
            "models": [["a", "b"], []],
            "share": [0.5, float("nan")],
            "at": charts.pd.to_datetime(["2026-03-02T09:07:12.345678Z", None], utc=True),
        }
    )
    shown = ui.filled(frame).to_dict("records")
    assert shown == [
        {"who": "ops", "models": "a, b", "share": "0.5", "at": "2026-03-02 09:07:12 UTC"},
        {"who": "—", "models": "—", "share": "—", "at": "—"},
    ]
    assert ui.when(None) == "—"
    assert ui.when("2026-03-02T09:07:59.9+00:00", seconds=False) == "2026-03-02 09:07 UTC"
