"""The dashboard's pure helpers: wording of numbers, tables sorted by risk, the Pareto points."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from shadoweval.dashboard import charts, frames, routing_frames
from shadoweval.dashboard import formatting as fmt

from shadoweval.stats import change_point, rates


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
    assert fmt.usd(0.00325) == "$0.00325"
    assert fmt.usd(12.5) == "$12.50"
    assert fmt.usd(None) == "—"
    assert fmt.pct(0.5357) == "53.6 %"
    assert fmt.rate_with_interval({"estimate": 1 / 3, "ci_low": 0.1, "ci_high": 0.7, "n": 3}) == (
        "33.3 % (95 % CI 10.0–70.0 %, n = 3)"
    )
    assert fmt.rate_with_interval({"estimate": None, "n": 0}) == "— (n = 0)"
    assert (
        fmt.share_with_interval(
            {"share": 0.25, "ci95_low": 0.05, "ci95_high": 0.7, "count": 1, "n": 4}
        )
        == "25.0 % (95 % CI 5.0–70.0 %, 1 of 4)"
    )
    assert fmt.usd_interval(0.1, [0.05, 0.15]) == "$0.10000 (95 % CI $0.05000–$0.15000)"


def test_segments_are_sorted_by_the_upper_bound_of_their_interval() -> None:
    table = frames.segments_table(
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
    assert frames.segments_table([]).empty
    assert routing_frames.tier_mix([]).empty
    assert routing_frames.pareto_points({"n_requests": 0}, []).empty
    assert frames.alerts_frame([]).empty
    assert frames.events_frame([]).empty


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, "not started"),
        ({"alarmed_at_ts": "2026-11-27T12:00:00.123Z"}, "ALARM since 2026-11-27 12:00 UTC"),
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
            "harm 24.0 % in the last 50 labels (since 2026-11-27 09:00 UTC) against 10.0 % "
            "before; evidence 50 % of the alarm threshold",
        ),
    ],
)
def test_sequential_state_in_words(state: dict | None, expected: str) -> None:
    assert expected in fmt.sequential_state(state)


def test_tier_mix_counts_decisions_per_bucket_and_tier() -> None:
    mix = routing_frames.tier_mix(
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
    points = routing_frames.pareto_points(economics, verdicts).set_index("point")
    cost_and_score = ["cost per request (USD)", "mean judge score (1–10)"]
    interval = ["score 95 % CI low", "score 95 % CI high"]
    assert points.loc["always cheap", cost_and_score].tolist() == [0.001, 6.0]
    # Cheaper scores 4, 8, 6: s² = 4, so the mean's interval is 6 ± 1.96·√(4/3).
    assert points.loc["always cheap", interval].tolist() == pytest.approx(
        [6 - 1.96 * (4 / 3) ** 0.5, 6 + 1.96 * (4 / 3) ** 0.5]
    )
    assert points.loc["always strong (s)", cost_and_score].tolist() == pytest.approx(
        [0.007, 26 / 3]
    )
    # 0.75 × mean cheap score on cheap-routed (6) + 0.25 × strong score on strong-routed (10);
    # variance 0.75² × (8 / 2) + 0.25² × 0 = 2.25.
    router = points.loc["router (operating point)"]
    assert router[cost_and_score].tolist() == pytest.approx([0.00325, 7.0])
    assert router[interval].tolist() == pytest.approx([7 - 1.96 * 1.5, 7 + 1.96 * 1.5])
    assert router["judged pairs"] == 3


def test_savings_per_day_scales_the_per_request_interval() -> None:
    day = datetime(2026, 11, 27, tzinfo=UTC)
    frame = routing_frames.savings_per_day(
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
            "savings rate (%)": 50.0,
        }
    ]


def test_windows_and_days() -> None:
    start = datetime(2026, 11, 27, tzinfo=UTC)
    end = datetime(2026, 11, 27, 6, tzinfo=UTC)
    windows = routing_frames.time_windows(start, end, 3)
    assert [w[0].hour for w in windows] == [0, 2, 4]
    assert windows[-1][1] == end
    assert routing_frames.time_windows(end, start, 3) == []
    days = routing_frames.utc_days("2026-11-25T23:00:00Z", "2026-11-27T01:00:00Z", limit=2)
    assert [d.day for d in days] == [26, 27]


def test_drift_columns_accept_a_mapping_or_a_list() -> None:
    by_name = frames.drift_columns({"columns": {"prompt_tokens": {"drift_detected": True}}})
    assert by_name.to_dict("records") == [{"column": "prompt_tokens", "drift_detected": True}]
    listed = frames.drift_columns({"columns": [{"column": "score", "p_value": 0.2}]})
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
    events = frames.events_frame(
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


def test_tier_mix_bars_span_their_bucket_and_the_strong_share_has_an_interval() -> None:
    decisions = [
        {"ts": "2026-11-27T12:05:00Z", "tier": "cheap"},
        {"ts": "2026-11-27T12:55:00Z", "tier": "cheap"},
        {"ts": "2026-11-27T12:30:00Z", "tier": "strong"},
        {"ts": "2026-11-27T13:01:00Z", "tier": "cheap"},
    ]
    mix = routing_frames.tier_mix(decisions, freq="h")
    first = mix.iloc[0]
    assert (first["bucket end"] - first["bucket"]).total_seconds() == 3600
    assert mix["share of bucket (%)"].tolist() == pytest.approx([200 / 3, 100 / 3, 100.0])
    strong = routing_frames.strong_share_series(decisions, freq="h")
    assert strong["share (%)"].tolist() == pytest.approx([100 / 3, 0.0])
    assert strong["n"].tolist() == [3, 1]
    low, high = rates.wilson_interval(1 / 3, 3, 0.95)
    assert strong.iloc[0]["95 % CI low (%)"] == pytest.approx(100 * low)
    assert strong.iloc[0]["95 % CI high (%)"] == pytest.approx(100 * high)
    # The bars are drawn from the bucket's start to its end, the strong tier at the bottom.
    spec = charts.tier_mix_chart(mix).to_dict()
    bars = spec["layer"][0]
    assert bars["encoding"]["x2"]["field"] == "bucket end"
    assert (bars["encoding"]["y"]["field"], bars["encoding"]["y2"]["field"]) == (
        "stack from",
        "stack to",
    )
    assert bars["encoding"]["color"]["scale"]["domain"] == ["strong", "cheap"]
    # 12:00 bucket: strong 0 → 1, cheap stacked on it 1 → 3.
    rows = next(iter(spec["datasets"].values()))
    noon = {r["tier"]: (r["stack from"], r["stack to"]) for r in rows if "12:00" in r["bucket"]}
    assert noon == {"strong": (0, 1), "cheap": (1, 3)}


def test_a_share_series_from_the_apis_counts_equals_one_from_the_items() -> None:
    """The judge page draws per-hour counts the API added up exactly as it drew the
    verdicts it fetched; an hour with no items is left out, not drawn as 0 %."""
    stamps = ["2026-11-27T09:05:00Z", "2026-11-27T09:55:00Z", "2026-11-27T11:01:00Z"]
    from_items = routing_frames.share_series(stamps, [True, False, True], freq="h")
    from_counts = routing_frames.share_series_from_counts(
        ["2026-11-27T09:00:00+00:00", "2026-11-27T10:00:00+00:00", "2026-11-27T11:00:00Z"],
        [1, 0, 1],
        [2, 0, 1],
    )
    assert from_counts.equals(from_items)
    assert from_counts["share (%)"].tolist() == [50.0, 100.0]


def test_the_banner_nets_monitoring_spend_out_of_the_savings() -> None:
    economics = {
        "n_requests": 1000,
        "savings_total_usd": 1.0,
        "savings_per_request_ci95_usd": [0.0009, 0.0011],
    }
    spend = [
        {"day": "2026-11-27", "shadow_usd": 2.0, "judge_usd": 0.5, "total_usd": 2.5},
        {"day": "2026-11-28", "shadow_usd": 0.4, "judge_usd": 0.1, "total_usd": 0.5},
    ]
    net = routing_frames.net_of_monitoring(economics, spend)
    assert net is not None
    assert net.monitoring_usd == pytest.approx(3.0)
    assert net.net_usd == pytest.approx(-2.0)
    assert net.net_ci95_usd == pytest.approx((-2.1, -1.9))
    assert net.verdict == "costs"
    text = routing_frames.net_savings_text(net, "all decision time")
    assert text.startswith(
        "Net of monitoring, the router costs more than it saves: −$2.00 (95 % CI −$2.10 to −$1.90)"
    )
    assert "monitoring $3.00 (shadow re-runs $2.40, judge calls $0.6000)" in text
    # Without monitoring spend the same savings pay; an interval holding 0 is "unclear".
    assert routing_frames.net_of_monitoring(economics, []).verdict == "pays"  # type: ignore[union-attr]
    unclear = routing_frames.net_of_monitoring(
        {**economics, "savings_per_request_ci95_usd": [-0.001, 0.003]}, []
    )
    assert unclear is not None
    assert unclear.verdict == "unclear"
    assert routing_frames.net_of_monitoring({"n_requests": 0}, spend) is None


def test_tables_name_their_units_not_the_api_fields() -> None:
    frame = routing_frames.spend_frame(
        [{"day": "2026-11-27", "shadow_usd": 2.0, "judge_usd": 0.5, "total_usd": 2.5}]
    )
    assert list(frame.columns) == [
        "day (UTC, decision ts)",
        "shadow re-runs (USD)",
        "judge calls (USD)",
        "monitoring total (USD)",
        "shadow runs",
        "verdicts",
    ]
    assert not any("_" in column for column in frame.columns)
    assert fmt.percent_cell(78.891) == "78.9 %"
    assert fmt.usd_cell(2.5) == "$2.50"


def test_the_pareto_axes_start_at_the_scales_ends() -> None:
    points = routing_frames.pareto_points(
        {
            "n_requests": 4,
            "realized_cost_per_request_usd": 0.003,
            "always_strong_cost_per_request_usd": 0.007,
            "strong_share": {"share": 0.25},
            "break_even": {"weak_cost_per_request_usd": 0.001},
        },
        [{"status": "done", "direction": "forward", "score_cheaper": 7.4, "score_stronger": 7.5}],
    )
    layers = charts.pareto_chart(points).to_dict()["layer"]
    point = next(layer for layer in layers if layer["mark"]["type"] == "point")
    assert point["encoding"]["y"]["scale"]["domain"] == [1, 10]
    assert point["encoding"]["x"]["scale"]["zero"] is True


def test_detector_lines_are_its_baseline_and_the_rate_that_fires_it() -> None:
    threshold = change_point.glr_threshold(30_000)
    watching = {"threshold": threshold, "labels": 300, "harms": 30, "post_change_labels": 0}
    lines = frames.detector_lines(watching, min_rise=0.05)
    assert lines is not None
    assert (lines.baseline, lines.baseline_labels, lines.alarm_labels) == (0.1, 300, 50)
    assert lines.alarm is not None
    # The alarm line is the least harm count over the stretch at which G reaches h.
    harms = round(lines.alarm * 50)
    assert change_point.rise_log_glr(300, 30, 50, harms, 0.05) >= threshold
    assert change_point.rise_log_glr(300, 30, 50, harms - 1, 0.05) < threshold
    rising = {
        **watching,
        "labels": 400,
        "harms": 50,
        "post_change_labels": 60,
        "post_change_harm_rate": 0.2,
        "change_ts": "2026-11-27T09:00:00Z",
        "alarmed_at_ts": "2026-11-27T09:30:00Z",
    }
    lines = frames.detector_lines(rising, min_rise=0.05)
    assert lines is not None
    assert lines.baseline == pytest.approx(38 / 340)
    assert lines.alarm_labels == 60
    marks = frames.detector_events(rising)
    labels = [charts.event_label(k, a) for k, a in zip(marks["kind"], marks["about"], strict=True)]
    assert labels == ["estimated change point", "detector alarm"]
    assert frames.detector_lines(None, min_rise=0.05) is None
    # The chart draws both lines, labelled.
    series = routing_frames.share_series(["2026-11-27T09:05:00Z"], [True])
    spec = str(
        charts.share_chart(series, y_title="harm", levels=[(10.0, "baseline 10.0 %")]).to_dict()
    )
    assert "baseline 10.0 %" in spec


def test_the_calibration_headline_says_which_window_it_covers() -> None:
    report = {
        "n": 300,
        "window": {"since": "2026-11-27T09:09:00+00:00", "until": None},
        "window_starts_at": "model_change",
        "model_change": {"model": "claude-haiku-4-6", "tier": "cheap"},
        "expected_calibration_error": 0.16,
        "cox": {"slope": 0.4},
        "against_perfect_calibration": {"p_value": 0.0001},
    }
    headline = frames.calibration_headline(report, "all decision time")
    assert headline.startswith(
        "Window shown: since the router's latest model change (to claude-haiku-4-6): decision "
        "time 2026-11-27 09:09 UTC → the newest label"
    )
    assert "300 labels the router is miscalibrated" in headline
    assert "over-confident" in headline
    assert "ECE 16.0 %" in headline
    requested = {
        **report,
        "window_starts_at": "requested",
        "cox": {},
        "against_perfect_calibration": {},
    }
    assert "last 24 hours (decision time 2026-11-27 09:09 UTC" in frames.calibration_headline(
        requested, "last 24 hours"
    )


def test_a_pending_pair_says_pending_and_position_calls_count_decisive_ones() -> None:
    assert frames.verdict_outcome({"status": "pending", "outcome": None}) == "pending"
    assert (
        frames.verdict_outcome({"status": "done", "outcome": "stronger_wins", "strong_needed": 1})
        == "stronger wins · strong needed"
    )
    calls = frames.position_calls(
        [
            {
                "ts": "t1",
                "order_cheaper_first": {"winner": "A"},
                "order_stronger_first": {"winner": "tie"},
            },
            {"ts": "t2", "order_cheaper_first": {"winner": "B"}, "order_stronger_first": None},
        ]
    )
    assert calls == [("t1", True), ("t2", False)]
    frame = frames.pairs_frame([{"ts": "2026-11-27T09:00:00Z", "status": "pending"}])
    assert frame.iloc[0]["outcome"] == "pending"


def test_escalation_text_keeps_the_queue_labels_apart() -> None:
    text = frames.escalation_text(
        {
            "min_margin_points": 1.0,
            "verdicts": 250,
            "escalated_verdicts": 30,
            "escalated_share": 0.12,
            "escalated_share_ci_low": 0.085,
            "escalated_share_ci_high": 0.167,
            "kept": {
                "labels": 40,
                "agreement": 0.9,
                "agreement_ci_low": 0.77,
                "agreement_ci_high": 0.96,
            },
            "escalated": {"labels": 0},
            "escalation_queue": {
                "labels": 20,
                "agreement": 0.55,
                "agreement_ci_low": 0.34,
                "agreement_ci_high": 0.74,
            },
        }
    )
    assert text is not None
    assert "12.0 % of 250 verdicts (95 % CI 8.5–16.7 %" in text
    assert "keeps: 90.0 % (95 % CI 77.0–96.0 %, 40 labels)" in text
    assert "escalates: no labels yet" in text
    assert "not a sample): 55.0 % (95 % CI 34.0–74.0 %, 20 labels)" in text
    assert frames.escalation_text({"verdicts": 0}) is None
