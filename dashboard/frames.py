"""API answers → tables for the quality, calibration, judge, drift and alerts pages (pure, no
I/O, no Streamlit)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from shadoweval.dashboard.formatting import (
    number,
    pct,
    pct_interval,
    percent_value,
    sequential_state,
    usd,
    utc_text,
)

from shadoweval.stats import change_point


def segments_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Per segment and direction, riskiest first (upper bound of the 95 % interval)."""
    records = []
    for row in rows:
        rate = row.get("rate") or {}
        coverage = row.get("coverage") or {}
        label = "harm rate" if row.get("label") == "harm_rate" else "missed savings"
        records.append(
            {
                "router": row.get("router"),
                "segment": row.get("segment"),
                "measure": label,
                "rate": rate.get("estimate"),
                "95 % CI low": rate.get("ci_low"),
                "95 % CI high": rate.get("ci_high"),
                "labels (n)": rate.get("n", 0),
                "decisions": coverage.get("decisions", 0),
                "share of traffic labelled": coverage.get("share_of_traffic_labelled"),
                "budget refused": coverage.get("budget_refused", 0),
                "not shadowable": sum(
                    int(coverage.get(k, 0) or 0)
                    for k in (
                        "without_payload",
                        "provider_failures",
                        "redacted",
                        "judge_errors",
                        "other_skips",
                    )
                ),
                "sequential test": sequential_state(row.get("sequential"))
                if row.get("direction") == "forward"
                else "n/a (reverse shadow)",
                "judge": row.get("judge_key"),
            }
        )
    frame = pd.DataFrame.from_records(
        records,
        columns=[
            "router",
            "segment",
            "measure",
            "rate",
            "95 % CI low",
            "95 % CI high",
            "labels (n)",
            "decisions",
            "share of traffic labelled",
            "budget refused",
            "not shadowable",
            "sequential test",
            "judge",
        ],
    )
    if frame.empty:
        return frame
    risk = frame["95 % CI high"].fillna(frame["rate"]).fillna(-1.0)
    return (
        frame.assign(_risk=risk)
        .sort_values(["measure", "_risk"], ascending=[True, False], kind="stable")
        .drop(columns="_risk")
        .reset_index(drop=True)
    )


def position_calls(verdicts: Iterable[Mapping[str, Any]]) -> list[tuple[Any, bool]]:
    """(ts, picked position A) for every decisive call (A or B, not a tie) of either order."""
    calls = []
    for verdict in verdicts:
        for name in ("order_cheaper_first", "order_stronger_first"):
            winner = (verdict.get(name) or {}).get("winner")
            if winner in ("A", "B"):
                calls.append((verdict["ts"], winner == "A"))
    return calls


OUTCOME_WORDS = {
    "cheaper_wins": "cheaper wins",
    "stronger_wins": "stronger wins",
    "tie": "tie",
    "inconsistent": "inconsistent (orders disagree)",
}


def verdict_outcome(verdict: Mapping[str, Any]) -> str:
    """ "stronger wins · strong needed" — or the status of a pair not judged yet ("pending")."""
    if verdict.get("status") != "done" or verdict.get("outcome") is None:
        reason = verdict.get("skip_reason") or verdict.get("error_detail")
        return f"{verdict.get('status') or 'pending'}" + (f" ({reason})" if reason else "")
    outcome = OUTCOME_WORDS.get(verdict["outcome"], str(verdict["outcome"]).replace("_", " "))
    needed = verdict.get("strong_needed")
    if needed is None:
        return outcome
    return f"{outcome} · {'strong needed' if needed else 'cheap acceptable'}"


def pairs_frame(verdicts: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per judged pair: when, where, what the judge decided, both scores."""
    columns = [
        "decision time",
        "segment",
        "request",
        "routed tier",
        "outcome",
        "cheaper (1–10)",
        "stronger (1–10)",
        "judge (USD)",
    ]
    records = [
        {
            "decision time": v.get("ts"),
            "segment": v.get("segment_value"),
            "request": v.get("request_id"),
            "routed tier": v.get("routed_tier"),
            "outcome": verdict_outcome(v),
            "cheaper (1–10)": v.get("score_cheaper"),
            "stronger (1–10)": v.get("score_stronger"),
            "judge (USD)": None
            if v.get("judge_cost_usd") is None
            else usd(v.get("judge_cost_usd"), digits=5),
        }
        for v in verdicts
    ]
    frame = pd.DataFrame.from_records(records, columns=columns)
    if not frame.empty:
        frame["decision time"] = pd.to_datetime(frame["decision time"], utc=True, format="ISO8601")
    return frame


# Labels a watching detector (no rise seen yet) is shown to need: the alarm line is the harm
# rate over this many new labels that would fire it.
ALARM_LINE_LABELS = 50


@dataclass(frozen=True)
class DetectorLines:
    """The horizontal lines of a segment's harm chart, from its quality-drop detector."""

    baseline: float | None  # harm rate before the estimated change point (all labels if none)
    baseline_labels: int
    alarm: float | None  # harm rate over `alarm_labels` new labels that fires the detector
    alarm_labels: int


def detector_lines(state: Mapping[str, Any] | None, *, min_rise: float) -> DetectorLines | None:
    """The baseline and alarm line of a segment's change-point detector (a /v1/segments
    `sequential` state).

    Baseline: the harm rate before the estimated change point. Alarm line: the least harm
    rate over the post-change stretch (its labels, or `ALARM_LINE_LABELS` while no rise is
    seen) at which the detector's log GLR at that split (`change_point.rise_log_glr`, with the
    rise δ = `min_rise`) reaches its threshold h. The detector also tries other splits, so it
    can fire a little below the line, never above it. None without a state or a threshold.
    """
    if not state or not state.get("threshold"):
        return None
    labels = int(state.get("labels") or 0)
    harms = int(state.get("harms") or 0)
    post_n = int(state.get("post_change_labels") or 0)
    post_rate = state.get("post_change_harm_rate")
    if post_n > 0 and post_rate is not None:
        pre_n, pre_x = labels - post_n, harms - round(post_rate * post_n)
        stretch = post_n
    else:
        pre_n, pre_x, stretch = labels, harms, ALARM_LINE_LABELS
    if pre_n < 1:
        return DetectorLines(None, 0, None, stretch)
    post_harms = np.arange(stretch + 1)
    glr = change_point.rise_log_glr(pre_n, pre_x, stretch, post_harms, min_rise)
    firing = np.nonzero(glr >= float(state["threshold"]))[0]
    alarm = float(post_harms[firing[0]]) / stretch if firing.size else None
    return DetectorLines(pre_x / pre_n, pre_n, alarm, stretch)


def detector_events(state: Mapping[str, Any] | None) -> pd.DataFrame:
    """The detector's estimated change point and its alarm, as events for `with_event_rules`."""
    rows = []
    if state and state.get("post_change_labels") and state.get("change_ts"):
        rows.append({"ts": state["change_ts"], "kind": "estimated_change", "about": ""})
    if state and state.get("alarmed_at_ts"):
        rows.append({"ts": state["alarmed_at_ts"], "kind": "detector_alarm", "about": ""})
    frame = pd.DataFrame.from_records(rows, columns=["ts", "kind", "router", "about"])
    if not frame.empty:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    return frame


def calibration_window(report: Mapping[str, Any], window_label: str) -> str:
    """Which decision time a /v1/calibration report covers, in words: the API starts the
    window at the router's latest model change when none is asked for."""
    window = report.get("window") or {}
    since, until = window.get("since"), window.get("until")
    span = f"{utc_text(since)} → {utc_text(until) if until else 'the newest label'}"
    if report.get("window_starts_at") == "model_change":
        change = report.get("model_change") or {}
        model = change.get("model")
        return (
            f"since the router's latest model change{f' (to {model})' if model else ''}: "
            f"decision time {span}; the reference for the drift test is the window before it"
        )
    if report.get("window_starts_at") == "all" or since is None:
        return "all decision time"
    return f"{window_label} (decision time {span})"


def calibration_headline(report: Mapping[str, Any], window_label: str) -> str:
    """One sentence: is the router calibrated in the window shown, on how many labels."""
    cox = report.get("cox") or {}
    slope = cox.get("slope")
    perfect = report.get("against_perfect_calibration") or {}
    p_value = perfect.get("p_value")
    if slope is None or p_value is None or p_value >= 0.05:
        shape = ""  # the slope's direction means something only where the test rejects
    elif slope < 0.8:
        shape = ", over-confident (slope below 1: its scores are too extreme)"
    elif slope > 1.25:
        shape = ", under-confident (slope above 1: its scores are too timid)"
    else:
        shape = ""
    if p_value is None:
        verdict = "untested (too few labels for the test against perfect calibration)"
    elif p_value < 0.05:
        verdict = f"miscalibrated (test against perfect calibration p = {number(p_value, 3)})"
    else:
        verdict = (
            "not shown to be miscalibrated (test against perfect calibration "
            f"p = {number(p_value, 3)})"
        )
    ece = pct(report.get("expected_calibration_error"))
    return (
        f"Window shown: {calibration_window(report, window_label)}. Over its "
        f"{report.get('n', 0)} labels the router is {verdict}{shape}; ECE {ece}, calibration "
        f"slope {number(slope)} (perfect: 1)."
    )


def hourly_estimates_frame(points: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """/v1/segments/{segment}/estimates points as long rows: hour, which estimate, harm (%)
    and its 95 % interval (%)."""
    records = []
    for point in points:
        for key, name in (("judge_only", "judge-only"), ("expected", "expected")):
            figure = point.get(key) or {}
            if figure.get("estimate") is None:
                continue
            records.append(
                {
                    "bucket": point["hour"],
                    "estimate": name,
                    "harm (%)": 100 * figure["estimate"],
                    "95 % CI low (%)": percent_value(figure.get("ci_low")),
                    "95 % CI high (%)": percent_value(figure.get("ci_high")),
                }
            )
    columns = ["bucket", "estimate", "harm (%)", "95 % CI low (%)", "95 % CI high (%)"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    if not frame.empty:
        frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True, format="ISO8601")
    return frame


def reliability_frame(curve: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    columns = ["mean_score", "observed_rate", "ci_low", "ci_high", "count"]
    return pd.DataFrame.from_records(
        [{c: b.get(c) for c in columns} for b in curve], columns=columns
    )


def events_frame(events: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    records = []
    for event in events:
        details = event.get("details") or {}
        what = details.get("segment") or details.get("model") or details.get("judge_model") or ""
        records.append(
            {
                "ts": event.get("ts"),
                "kind": event.get("kind"),
                "router": event.get("router"),
                "about": str(what),
            }
        )
    frame = pd.DataFrame.from_records(records, columns=["ts", "kind", "router", "about"])
    if not frame.empty:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    return frame


def drift_frame(reports: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    records = [
        {
            "id": r.get("id"),
            "router": r.get("router"),
            "window start": r.get("window_start"),
            "window end": r.get("window_end"),
            "status": r.get("status"),
            "dataset drift": r.get("dataset_drift"),
            "drifted share of columns": r.get("drifted_share"),
        }
        for r in reports
    ]
    return pd.DataFrame.from_records(
        records,
        columns=[
            "id",
            "router",
            "window start",
            "window end",
            "status",
            "dataset drift",
            "drifted share of columns",
        ],
    )


def drift_columns(result: Mapping[str, Any]) -> pd.DataFrame:
    """Per-column drift of one report's `result` ({columns: {name: {...}}} or a list)."""
    columns = result.get("columns") or result.get("drift_by_columns") or {}
    if isinstance(columns, Mapping):
        records = [
            {"column": name, **dict(values)}
            for name, values in columns.items()
            if isinstance(values, Mapping)
        ]
    else:
        records = [dict(c) for c in columns if isinstance(c, Mapping)]
    return pd.DataFrame.from_records(records)


def alerts_frame(alerts: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    records = [
        {
            "id": a.get("id"),
            "state": a.get("state"),
            "severity": a.get("severity"),
            "rule": a.get("rule"),
            "router": a.get("router"),
            "segment": a.get("segment"),
            "title": a.get("title"),
            "started at": a.get("started_at"),
            "acknowledged by": a.get("acknowledged_by"),
            "silenced until": a.get("silenced_until"),
        }
        for a in alerts
    ]
    return pd.DataFrame.from_records(
        records,
        columns=[
            "id",
            "state",
            "severity",
            "rule",
            "router",
            "segment",
            "title",
            "started at",
            "acknowledged by",
            "silenced until",
        ],
    )


def deliveries_frame(deliveries: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """What the outbox sent where (URLs arrive redacted), with its attempts."""
    columns = [
        "id",
        "channel",
        "kind",
        "rule",
        "status",
        "attempts",
        "created at",
        "delivered at",
        "last error",
        "url",
    ]
    records = [
        {
            "id": d.get("id"),
            "channel": d.get("channel"),
            "kind": d.get("kind"),
            "rule": d.get("rule"),
            "status": d.get("status"),
            "attempts": d.get("attempt_count"),
            "created at": d.get("created_at"),
            "delivered at": d.get("delivered_at"),
            "last error": d.get("last_error"),
            "url": d.get("url"),
        }
        for d in deliveries
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def escalation_text(escalation: Mapping[str, Any] | None) -> str | None:
    """One paragraph on judge escalation: the share escalated, and agreement with humans on
    the verdicts the judge keeps vs those it escalates (uniform review sample), the
    escalation queue's own labels apart (never pooled: they sample nothing)."""
    if not escalation or not escalation.get("verdicts"):
        return None

    def share(part: Mapping[str, Any] | None) -> str:
        part = part or {}
        if not part.get("labels"):
            return "no labels yet"
        return (
            f"{pct(part.get('agreement'))} "
            f"({pct_interval(part.get('agreement_ci_low'), part.get('agreement_ci_high'))}, "
            f"{part['labels']} labels)"
        )

    escalated = pct_interval(
        escalation.get("escalated_share_ci_low"), escalation.get("escalated_share_ci_high")
    )
    return (
        f"Escalated to human review: {pct(escalation.get('escalated_share'))} of "
        f"{escalation['verdicts']} verdicts ({escalated}; its two orders disagree or its score "
        f"margin is below {number(escalation.get('min_margin_points'))} points). Agreement "
        f"with humans on the verdicts it keeps: {share(escalation.get('kept'))}; on those it "
        f"escalates: {share(escalation.get('escalated'))}. Escalation-queue labels (its "
        f"hardest cases, not a sample): {share(escalation.get('escalation_queue'))}."
    )
