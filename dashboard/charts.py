"""Altair charts from the dashboard's tables, with event markers in decision time (pure, no
I/O, no Streamlit)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd  # type: ignore[import-untyped]
from shadoweval.dashboard.formatting import NO_VALUE
from shadoweval.dashboard.routing_frames import ROUTER_POINT

from shadoweval.alerts.notification import split_summary


def hourly_estimates_chart(frame: pd.DataFrame, events: pd.DataFrame) -> alt.LayerChart:
    """Judge-only and expected harm per hour of decision time, each over its 95 % band."""
    base = alt.Chart(frame).encode(
        x=_utc_axis("bucket"), color=alt.Color("estimate:N", legend=alt.Legend(orient="bottom"))
    )
    band = base.mark_area(opacity=0.15).encode(
        y=alt.Y("95 % CI low (%):Q", title="harm (% of cheap-routed traffic)"),
        y2="95 % CI high (%):Q",
    )
    line = base.mark_line(point=True).encode(
        y="harm (%):Q",
        tooltip=[
            alt.Tooltip("bucket:T", title="hour (UTC)", format="%Y-%m-%d %H:%M"),
            "estimate:N",
            alt.Tooltip("harm (%):Q", format=".1f"),
            alt.Tooltip("95 % CI low (%):Q", format=".1f"),
            alt.Tooltip("95 % CI high (%):Q", format=".1f"),
        ],
    )
    spans = frame.assign(**{"bucket end": frame["bucket"]})
    return with_event_rules(alt.LayerChart(layer=[band, line]), _events_within(events, spans))


def _utc_axis(field: str) -> alt.X:
    """Decision time in UTC, whatever the browser's time zone."""
    return alt.X(
        f"{field}:T",
        title="decision time (UTC)",
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format="%m-%d %H:%M"),
    )


TIER_COLOURS = {"strong": "#1f4e79", "cheap": "#9ecae1"}


def tier_mix_chart(
    mix: pd.DataFrame, events: pd.DataFrame | None = None, *, strong_tier: str = "strong"
) -> alt.LayerChart:
    """Decisions per bucket as stacked bars, each spanning its bucket, the strong tier at the
    bottom in a dark colour (its share is read off the baseline), events as labelled rules.

    The stack is computed here (rectangles from `stack from` to `stack to`): Vega-Lite turns
    a bar with x and x2 into a horizontal bar and stacks nothing."""
    tiers = sorted(mix["tier"].unique(), key=lambda t: (t != strong_tier, t))
    palette = [TIER_COLOURS.get(t, "#bdbdbd") for t in tiers]
    if strong_tier in tiers:
        palette[0] = TIER_COLOURS["strong"]
    stacked = mix.assign(stack=[tiers.index(t) for t in mix["tier"]]).sort_values(
        ["bucket", "stack"], kind="stable"
    )
    stacked["stack to"] = stacked.groupby("bucket")["decisions"].cumsum()
    stacked["stack from"] = stacked["stack to"] - stacked["decisions"]
    bars = (
        alt.Chart(stacked)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=_utc_axis("bucket"),
            x2="bucket end:T",
            y=alt.Y("stack from:Q", title="decisions per bucket"),
            y2="stack to:Q",
            color=alt.Color(
                "tier:N",
                title="routed tier",
                scale=alt.Scale(domain=tiers, range=palette),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=[
                alt.Tooltip("bucket:T", title="from (UTC)", format="%Y-%m-%d %H:%M"),
                "tier:N",
                "decisions:Q",
                alt.Tooltip("share of bucket (%):Q", format=".1f"),
            ],
        )
    )
    return with_event_rules(bars, _events_within(events, mix))


def share_chart(
    series: pd.DataFrame,
    *,
    y_title: str,
    events: pd.DataFrame | None = None,
    levels: Sequence[tuple[float, str]] = (),
    colour: str = "#1f4e79",
) -> alt.LayerChart:
    """A share (%) per bucket of decision time (a `share_series`) as a line over its 95 %
    band, on an axis from 0 %, with labelled horizontal `levels` (value in %, label) and
    labelled rules at `events`."""
    # From 0 always; the top is the data's (a 5 % share on a 0–100 axis is a flat line).
    highest = max([0.0, *series["95 % CI high (%)"].dropna(), *(v for v, _ in levels)])
    scale = alt.Scale(domain=[0, min(100.0, max(10.0, 10 * math.ceil(highest * 1.15 / 10)))])
    base = alt.Chart(series).encode(x=_utc_axis("bucket"))
    y = alt.Y("share (%):Q", title=y_title, scale=scale)
    band = base.mark_area(opacity=0.2, color=colour).encode(
        y=alt.Y("95 % CI low (%):Q", title=y_title, scale=scale), y2="95 % CI high (%):Q"
    )
    line = base.mark_line(point=True, color=colour).encode(
        y=y,
        tooltip=[
            alt.Tooltip("bucket:T", title="from (UTC)", format="%Y-%m-%d %H:%M"),
            alt.Tooltip("share (%):Q", format=".1f"),
            alt.Tooltip("95 % CI low (%):Q", format=".1f"),
            alt.Tooltip("95 % CI high (%):Q", format=".1f"),
            alt.Tooltip("count:Q", title="flagged"),
            alt.Tooltip("n:Q", title="of"),
        ],
    )
    layers: list[Any] = [band, line]
    if levels:
        marks = pd.DataFrame.from_records(
            [{"level": value, "label": label} for value, label in levels]
        )
        level_base = alt.Chart(marks).encode(y=alt.Y("level:Q", scale=scale))
        layers.append(
            level_base.mark_rule(strokeDash=[6, 3], color="#555555").encode(
                tooltip=[alt.Tooltip("label:N", title="line"), alt.Tooltip("level:Q", format=".1f")]
            )
        )
        layers.append(
            level_base.mark_text(
                align="left", baseline="bottom", dx=4, dy=-2, color="#555555"
            ).encode(text="label:N", x=alt.value(0))
        )
    return with_event_rules(alt.LayerChart(layer=layers), _events_within(events, series))


def _no_events() -> pd.DataFrame:
    return pd.DataFrame(columns=["ts", "kind", "router", "about"])


def _events_within(events: pd.DataFrame | None, buckets: pd.DataFrame) -> pd.DataFrame:
    """The events inside the buckets' time span: one outside it would stretch the time axis
    and squeeze the bars it is drawn over into hairlines."""
    if events is None or events.empty or buckets.empty:
        return _no_events()
    stamps = pd.to_datetime(events["ts"], utc=True, format="ISO8601")
    inside = (stamps >= buckets["bucket"].min()) & (stamps <= buckets["bucket end"].max())
    return events[inside.to_numpy()]


def pareto_chart(points: pd.DataFrame) -> alt.LayerChart:
    """Cost against mean judge score with each score's 95 % interval, on the judge's whole
    1–10 scale and a cost axis from $0: a small gap in score looks small."""
    score_scale = alt.Scale(domain=[1, 10])
    base = alt.Chart(points).encode(
        x=alt.X(
            "cost per request (USD):Q",
            title="cost per request (USD, from $0)",
            scale=alt.Scale(zero=True),
        ),
        tooltip=list(points.columns),
    )
    y = alt.Y("mean judge score (1–10):Q", title="mean judge score (1–10 scale)", scale=score_scale)
    return alt.LayerChart(
        layer=[
            base.mark_errorbar(ticks=True).encode(
                y=alt.Y(
                    "score 95 % CI low:Q",
                    title="mean judge score (1–10 scale)",
                    scale=score_scale,
                ),
                y2="score 95 % CI high:Q",
            ),
            base.mark_point(size=120, filled=True).encode(y=y),
            # The router sits between the two models and often close to one of them: its
            # label goes below the point, the models' above.
            base.transform_filter(alt.datum.point != ROUTER_POINT)
            .mark_text(dy=-14)
            .encode(y=y, text="point:N"),
            base.transform_filter(alt.datum.point == ROUTER_POINT)
            .mark_text(dy=16)
            .encode(y=y, text="point:N"),
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
    """A line over decision time with a labelled rule at each model or judge event."""
    line = (
        alt.Chart(series)
        .mark_line(point=True)
        .encode(
            x=_utc_axis(x),
            y=alt.Y(f"{y}:Q", title=y_title),
            tooltip=list(series.columns),
        )
    )
    return with_event_rules(line, events)


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


EVENT_NAMES = {
    "model_change": "model change",
    "judge_changed": "judge change",
    "quality_drop": "quality drop",
    "budget_exhausted": "budget exhausted",
    "estimated_change": "estimated change point",
    "detector_alarm": "detector alarm",
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
    ).sort_values("ts", kind="stable")
    # Labels of events close together would print over each other: three lanes, in time order.
    marks["lane"] = [2 + 13 * (i % 3) for i in range(len(marks))]
    base = alt.Chart(marks).encode(x=_utc_axis("ts"))
    rule = base.mark_rule(color="firebrick", strokeDash=[4, 3]).encode(
        tooltip=[alt.Tooltip("label:N", title="event"), alt.Tooltip("ts:T", title="at (UTC)")]
    )
    # Left of the rule: the newest events, the usual reason to look, sit at the right edge.
    text = base.mark_text(
        align="right", baseline="top", dx=-4, color="firebrick", fontSize=11
    ).encode(text="label:N", y=alt.Y("lane:Q", scale=None, axis=None))
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
                "summary": split_summary(a.get("summary") or "")[0] or a.get("title") or "",
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
