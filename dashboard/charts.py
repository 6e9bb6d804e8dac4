"""Pure transformations from API answers to tables, labels and Altair charts (no I/O, no Streamlit).

Every figure a user sees says its unit and, when estimated, its 95 % interval:
the formatters here are the one place that wording lives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd  # type: ignore[import-untyped]

NO_VALUE = "—"


# --- formatting -------------------------------------------------------------------------------


def usd(value: float | None, *, digits: int = 5) -> str:
    """USD with enough significant digits for per-request costs ($0.00111)."""
    if value is None:
        return NO_VALUE
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.{digits}f}"


def number(value: float | None, digits: int = 2) -> str:
    return NO_VALUE if value is None else f"{value:.{digits}f}"


def pct(value: float | None, *, digits: int = 1) -> str:
    return NO_VALUE if value is None else f"{100 * value:.{digits}f} %"


def pct_interval(low: float | None, high: float | None, *, digits: int = 1) -> str:
    if low is None or high is None:
        return "95 % CI n/a"
    return f"95 % CI {100 * low:.{digits}f}–{100 * high:.{digits}f} %"


def rate_with_interval(estimate: Mapping[str, Any] | None) -> str:
    """ "12.5 % (95 % CI 8.0–17.0 %, n = 40)" from an Estimate {estimate, ci_low, ci_high, n}."""
    if not estimate or estimate.get("estimate") is None:
        return f"{NO_VALUE} (n = {estimate.get('n', 0) if estimate else 0})"
    return (
        f"{pct(estimate['estimate'])} "
        f"({pct_interval(estimate.get('ci_low'), estimate.get('ci_high'))}"
        f", n = {estimate.get('n', 0)})"
    )


def share_with_interval(share: Mapping[str, Any] | None) -> str:
    """A {share, ci95_low, ci95_high, count, n} figure as text."""
    if not share or share.get("share") is None:
        return NO_VALUE
    return (
        f"{pct(share['share'])} ({pct_interval(share.get('ci95_low'), share.get('ci95_high'))}, "
        f"{share.get('count', 0)} of {share.get('n', 0)})"
    )


def usd_interval(value: float | None, interval: Sequence[float] | None) -> str:
    if value is None:
        return NO_VALUE
    if not interval or len(interval) != 2 or None in interval:
        return usd(value)
    return f"{usd(value)} (95 % CI {usd(interval[0])}–{usd(interval[1])})"


def sequential_state(state: Mapping[str, Any] | None) -> str:
    """The quality-drop detector in words: watching (and any rise it sees), or alarmed since."""
    if not state:
        return "not started"
    if state.get("alarmed_at_ts"):
        return f"ALARM since {state['alarmed_at_ts']} (decision time)"
    labels = int(state.get("labels") or 0)
    evidence = max(0.0, float(state.get("evidence") or 0.0))
    post_n = int(state.get("post_change_labels") or 0)
    if post_n == 0 or state.get("post_change_harm_rate") is None:
        return f"watching: no rise seen in {labels} labels"
    return (
        f"watching: harm {pct(state['post_change_harm_rate'])} in the last {post_n} labels "
        f"(since {state.get('change_ts')}) against {pct(state.get('pre_change_harm_rate'))} "
        f"before; evidence {pct(min(evidence, 1.0), digits=0)} of the alarm threshold"
    )


# --- tables -----------------------------------------------------------------------------------


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


def tier_mix(decisions: Iterable[Mapping[str, Any]], *, freq: str = "h") -> pd.DataFrame:
    """Decisions per time bucket (of the decision's ts) and tier."""
    frame = pd.DataFrame.from_records(
        [{"ts": d["ts"], "tier": d["tier"]} for d in decisions], columns=["ts", "tier"]
    )
    if frame.empty:
        return pd.DataFrame(columns=["bucket", "tier", "decisions"])
    frame["bucket"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601").dt.floor(freq)
    counted = frame.groupby(["bucket", "tier"]).size().rename("decisions").reset_index()
    return counted.sort_values(["bucket", "tier"]).reset_index(drop=True)


def pareto_points(
    economics: Mapping[str, Any], verdicts: Iterable[Mapping[str, Any]]
) -> pd.DataFrame:
    """Cost per request (USD) against mean judge score (1–10) for each model and the router.

    The router's score mixes the cheaper answer on cheap-routed pairs with the
    stronger answer on strong-routed ones, weighted by its strong share.
    """
    done = [v for v in verdicts if v.get("status") == "done" and v.get("score_cheaper") is not None]
    if not done or not economics.get("n_requests"):
        return pd.DataFrame(columns=["point", "cost per request (USD)", "mean judge score (1–10)"])
    frame = pd.DataFrame.from_records(done)
    cheap_score = float(frame["score_cheaper"].mean())
    strong_score = float(frame["score_stronger"].mean())
    forward = frame[frame["direction"] == "forward"]
    reverse = frame[frame["direction"] == "reverse"]
    strong_share = float((economics.get("strong_share") or {}).get("share") or 0.0)
    routed_cheap = float(forward["score_cheaper"].mean()) if not forward.empty else cheap_score
    routed_strong = float(reverse["score_stronger"].mean()) if not reverse.empty else strong_score
    break_even = economics.get("break_even") or {}
    rows = [
        (
            "always cheap",
            break_even.get("weak_cost_per_request_usd"),
            cheap_score,
        ),
        (
            f"always strong ({economics.get('strong_model') or 'strong'})",
            economics.get("always_strong_cost_per_request_usd"),
            strong_score,
        ),
        (
            "router (operating point)",
            economics.get("realized_cost_per_request_usd"),
            (1 - strong_share) * routed_cheap + strong_share * routed_strong,
        ),
    ]
    return pd.DataFrame.from_records(
        [r for r in rows if r[1] is not None],
        columns=["point", "cost per request (USD)", "mean judge score (1–10)"],
    )


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


def utc_days(first_ts: str, last_ts: str, *, limit: int) -> list[datetime]:
    """Midnights (UTC) of the days from `first_ts` to `last_ts`, the latest `limit` of them."""
    start = pd.Timestamp(first_ts).tz_convert("UTC").floor("D")
    end = pd.Timestamp(last_ts).tz_convert("UTC").floor("D")
    days = pd.date_range(start, end, freq="D")
    return [d.to_pydatetime() for d in days[-limit:]]


def savings_per_day(per_day: Iterable[tuple[datetime, Mapping[str, Any]]]) -> pd.DataFrame:
    """Savings (USD) per UTC day with the 95 % interval of n × savings per request."""
    records = []
    for day, economics in per_day:
        n = int(economics.get("n_requests") or 0)
        if not n:
            continue
        interval = economics.get("savings_per_request_ci95_usd") or [None, None]
        low, high = (None, None) if None in interval else (interval[0] * n, interval[1] * n)
        records.append(
            {
                "day (UTC)": day.date().isoformat(),
                "decisions": n,
                "savings (USD)": economics.get("savings_total_usd"),
                "95 % CI low (USD)": low,
                "95 % CI high (USD)": high,
                "savings rate": economics.get("savings_rate"),
            }
        )
    return pd.DataFrame.from_records(
        records,
        columns=[
            "day (UTC)",
            "decisions",
            "savings (USD)",
            "95 % CI low (USD)",
            "95 % CI high (USD)",
            "savings rate",
        ],
    )


def session_cache_frame(cache: Mapping[str, Any]) -> pd.DataFrame:
    """Per-turn routing against the two session-sticky policies of /v1/sessions (USD): gross
    savings with a warm cache, the cache cost of switching, net savings, and the net savings
    per session with its 95 % interval."""
    loss = cache.get("cache_cost_of_switching_usd")
    records = []
    for key, label in (
        ("first_turn_tier", "every turn on the first turn's tier"),
        ("strongest_tier", "every turn on the session's strongest tier"),
    ):
        policy = cache.get(key) or {}
        per_session = policy.get("net_savings_per_session_usd") or {}
        low, high = per_session.get("ci95_low"), per_session.get("ci95_high")
        records.append(
            {
                "against": label,
                "gross savings (USD)": policy.get("gross_savings_usd"),
                "cache cost of switching (USD)": loss,
                "net savings (USD)": policy.get("net_savings_usd"),
                "net per session (USD, 95 % CI)": usd_interval(
                    per_session.get("mean"),
                    None if low is None or high is None else [float(low), float(high)],
                ),
                "loss / gross savings": policy.get("loss_share_of_gross_savings"),
            }
        )
    return pd.DataFrame.from_records(records)


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


def time_windows(start: datetime, end: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """`count` equal consecutive windows covering [start, end)."""
    if count < 1 or end <= start:
        return []
    step = (end - start) / count
    return [(start + i * step, start + (i + 1) * step) for i in range(count)]


# --- charts -----------------------------------------------------------------------------------


def _utc_axis(field: str) -> alt.X:
    """Decision time in UTC, whatever the browser's time zone."""
    return alt.X(
        f"{field}:T",
        title="decision time (UTC)",
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format="%m-%d %H:%M"),
    )


def tier_mix_chart(mix: pd.DataFrame) -> alt.Chart:
    chart: alt.Chart = (
        alt.Chart(mix)
        .mark_bar()
        .encode(
            x=_utc_axis("bucket"),
            y=alt.Y("decisions:Q", title="decisions per bucket", stack=True),
            color=alt.Color("tier:N", title="routed tier"),
            tooltip=["bucket:T", "tier:N", "decisions:Q"],
        )
    )
    return chart


def pareto_chart(points: pd.DataFrame) -> alt.LayerChart:
    base = alt.Chart(points).encode(
        x=alt.X("cost per request (USD):Q", title="cost per request (USD)"),
        y=alt.Y(
            "mean judge score (1–10):Q",
            title="mean judge score (1–10)",
            scale=alt.Scale(zero=False),
        ),
        tooltip=list(points.columns),
    )
    return alt.LayerChart(
        layer=[
            base.mark_point(size=120, filled=True),
            base.mark_text(dy=-12).encode(text="point:N"),
        ]
    )


def reliability_chart(frame: pd.DataFrame) -> alt.LayerChart:
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x="x:Q", y="y:Q")
    )
    base = alt.Chart(frame).encode(
        x=alt.X(
            "mean_score:Q",
            title="router score (p_strong_needed), bin mean",
            scale=alt.Scale(domain=[0, 1]),
        ),
    )
    bars = base.mark_errorbar().encode(
        y=alt.Y(
            "ci_low:Q",
            title="observed strong_needed rate (95 % CI)",
            scale=alt.Scale(domain=[0, 1]),
        ),
        y2="ci_high:Q",
    )
    points = base.mark_point(filled=True).encode(
        y="observed_rate:Q", tooltip=["mean_score", "observed_rate", "ci_low", "ci_high", "count"]
    )
    return alt.LayerChart(layer=[diagonal, bars, points])


def series_with_events(
    series: pd.DataFrame, *, x: str, y: str, y_title: str, events: pd.DataFrame
) -> alt.LayerChart:
    """A line over decision time with a vertical rule at each model or judge event."""
    line = (
        alt.Chart(series)
        .mark_line(point=True)
        .encode(
            x=_utc_axis(x),
            y=alt.Y(f"{y}:Q", title=y_title),
            tooltip=list(series.columns),
        )
    )
    if events.empty:
        return alt.LayerChart(layer=[line])
    rules = (
        alt.Chart(events)
        .mark_rule(color="firebrick", strokeDash=[2, 2])
        .encode(x=_utc_axis("ts"), tooltip=["kind:N", "about:N", "ts:T"])
    )
    return alt.LayerChart(layer=[line, rules])


# --- threshold advisor ------------------------------------------------------------------------


def threshold_frame(
    curve: Iterable[Mapping[str, Any]],
    *,
    threshold_in_force: float | None,
    recommended: float | None,
) -> pd.DataFrame:
    """A segment's /v1/thresholds curve as rows, harm in %, with which point is which."""
    records = []
    for point in curve:
        t = point["threshold"]
        role = "other"
        if recommended is not None and abs(t - recommended) < 1e-9:
            role = "recommended"
        elif threshold_in_force is not None and abs(t - threshold_in_force) < 1e-9:
            role = "in force"
        records.append(
            {
                "threshold": t,
                "strong share (%)": 100 * point["strong_share"],
                "harm (% of traffic)": 100 * point["harm_rate"],
                "harm low (%)": 100 * point["harm_low"],
                "harm high (%)": 100 * point["harm_high"],
                "cost per request (USD)": point["cost_per_request_usd"],
                "savings vs in force (USD/request)": point["savings_vs_in_force_usd"],
                "labels in band": point["labels_in_band"],
                "point": role,
            }
        )
    columns = [
        "threshold",
        "strong share (%)",
        "harm (% of traffic)",
        "harm low (%)",
        "harm high (%)",
        "cost per request (USD)",
        "savings vs in force (USD/request)",
        "labels in band",
        "point",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def cost_harm_chart(frame: pd.DataFrame, *, harm_budget: float) -> alt.LayerChart:
    """Cost per request against harm, one point per threshold, with the harm band (simultaneous
    over the grid), the budget ε as a rule, and the operating and recommended points marked."""
    base = alt.Chart(frame).encode(
        y=alt.Y("cost per request (USD):Q", title="cost per request (USD)"),
        tooltip=list(frame.columns),
    )
    band = base.mark_rule(opacity=0.35).encode(
        x=alt.X("harm low (%):Q", title="harm (% of all traffic, simultaneous band)"),
        x2="harm high (%):Q",
    )
    line = base.mark_line(point=False).encode(x="harm (% of traffic):Q", order="threshold:Q")
    marked = (
        alt.Chart(frame[frame["point"] != "other"])
        .mark_point(size=160, filled=True)
        .encode(
            x="harm (% of traffic):Q",
            y="cost per request (USD):Q",
            color=alt.Color("point:N", title=""),
            tooltip=list(frame.columns),
        )
    )
    budget = (
        alt.Chart(pd.DataFrame({"budget": [100 * harm_budget]}))
        .mark_rule(color="firebrick", strokeDash=[4, 3])
        .encode(x="budget:Q")
    )
    return alt.LayerChart(layer=[band, line, marked, budget])


# --- event markers and the alerts timeline ----------------------------------------------------

EVENT_NAMES = {
    "model_change": "model change",
    "judge_changed": "judge change",
    "quality_drop": "quality drop",
    "budget_exhausted": "budget exhausted",
}


def event_label(kind: str | None, about: str | None) -> str:
    """ "model change: claude-haiku-4-5" — what an event marker says on a chart."""
    name = EVENT_NAMES.get(kind or "", (kind or "event").replace("_", " "))
    return f"{name}: {about}" if about else name


def event_rules(events: pd.DataFrame) -> alt.LayerChart:
    """A dashed vertical rule at each event (an `events_frame`), labelled at the top of the
    chart, on the decision-time axis; layer it over any chart whose x is decision time."""
    marks = events.assign(
        label=[event_label(k, a) for k, a in zip(events["kind"], events["about"], strict=True)]
    )
    base = alt.Chart(marks).encode(x=_utc_axis("ts"))
    rule = base.mark_rule(color="firebrick", strokeDash=[4, 3]).encode(
        tooltip=[alt.Tooltip("label:N", title="event"), alt.Tooltip("ts:T", title="at (UTC)")]
    )
    # Left of the rule: the newest events, the usual reason to look, sit at the right edge.
    text = base.mark_text(
        align="right", baseline="top", dx=-4, color="firebrick", fontSize=11
    ).encode(text="label:N", y=alt.value(2))
    return alt.LayerChart(layer=[rule, text])


def with_event_rules(chart: alt.Chart | alt.LayerChart, events: pd.DataFrame) -> alt.LayerChart:
    """`chart` with a labelled rule at each event (nothing added when there are none)."""
    if events.empty:
        return alt.LayerChart(layer=[chart])
    return alt.LayerChart(layer=[chart, event_rules(events)])


def alert_timeline_frame(alerts: Iterable[Mapping[str, Any]], *, now: datetime) -> pd.DataFrame:
    """One bar per alert over decision time: from when its condition first held (or it fired)
    to when it resolved, or to `now` (the latest decision time) while it is open."""
    records = []
    for a in alerts:
        start = a.get("pending_since_ts") or a.get("fired_ts") or a.get("started_at")
        resolved = a.get("state") == "resolved"
        end = (a.get("resolved_ts") or a.get("resolved_at")) if resolved else None
        start_ts = pd.Timestamp(start) if start else pd.Timestamp(now)
        start_ts = start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts
        end_ts = pd.Timestamp(end) if end else pd.Timestamp(now)
        end_ts = end_ts.tz_localize("UTC") if end_ts.tzinfo is None else end_ts
        where = " · ".join(str(v) for v in (a.get("router"), a.get("segment")) if v)
        records.append(
            {
                "alert": f"#{a.get('id')} {a.get('rule')}" + (f" ({where})" if where else ""),
                "severity": a.get("severity") or NO_VALUE,
                "state": a.get("state") or NO_VALUE,
                "from": start_ts,
                "to": max(end_ts, start_ts),
                "summary": a.get("summary") or a.get("title") or "",
            }
        )
    columns = ["alert", "severity", "state", "from", "to", "summary"]
    return pd.DataFrame.from_records(records, columns=columns)


def alert_timeline_chart(timeline: pd.DataFrame, events: pd.DataFrame) -> alt.LayerChart:
    """Alerts as bars over decision time (colour: severity), a dot where each began (so a
    just-fired alert shows), events as labelled rules."""
    base = alt.Chart(timeline).encode(
        x=_utc_axis("from"),
        # One y scale for the bar and dot layers (a sort by another field would split them).
        # Outer padding leaves the top of the plot to the event labels.
        y=alt.Y(
            "alert:N", title=None, axis=alt.Axis(labelLimit=320), scale=alt.Scale(paddingOuter=0.6)
        ),
        color=alt.Color(
            "severity:N",
            scale=alt.Scale(
                domain=["critical", "warning", "info"], range=["#c0392b", "#e67e22", "#7f8c8d"]
            ),
            legend=alt.Legend(orient="bottom"),
        ),
        opacity=alt.condition(alt.datum.state == "resolved", alt.value(0.45), alt.value(1.0)),
        tooltip=[
            "alert:N",
            "severity:N",
            "state:N",
            alt.Tooltip("from:T", title="from (UTC)", format="%Y-%m-%d %H:%M:%S"),
            alt.Tooltip("to:T", title="to (UTC)", format="%Y-%m-%d %H:%M:%S"),
            "summary:N",
        ],
    )
    bars = alt.LayerChart(
        layer=[
            base.mark_bar(height=14, cornerRadius=3).encode(x2="to:T"),
            base.mark_point(filled=True, size=90),
        ]
    )
    if timeline.empty and not events.empty:
        # No alert yet: the events alone, on one band (a chart with no y would collapse).
        lane = events.assign(lane="events")
        strip = (
            alt.Chart(lane)
            .mark_tick(opacity=0)
            .encode(x=_utc_axis("ts"), y=alt.Y("lane:N", title=None, axis=None))
        )
        return with_event_rules(strip, events).properties(height=alt.Step(48))
    # A row per alert (Streamlit squeezes the rows of a fixed-height chart together).
    return with_event_rules(bars, events).properties(height=alt.Step(28))
