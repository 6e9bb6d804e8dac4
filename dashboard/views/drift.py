"""Has the input changed? Feature and router-score drift per completed UTC day, and the
Evidently report."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st
import streamlit.components.v1 as components
from shadoweval.dashboard import charts, data, frames, ui

st.title("Has the input changed?")
ctx = ui.context()
reports = ctx.api.get("/v1/drift", router=ctx.router)
if ui.unavailable(reports, "Drift reports"):
    st.stop()
rows = data.items(reports)
if not rows:
    # The job (jobs/check_drift.py) reports whole UTC days of decision time, once a router's
    # decisions have moved past the day; within the first day there is nothing to show yet.
    now = ui.latest_decision_ts(ctx.api, ctx.router)
    if now is None:
        when_first = "No decisions have arrived yet."
    else:
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        when_first = (
            f"Decision time is now {ui.when(now, seconds=False)}: today's decisions are first "
            f"reported once decision time passes {ui.when(midnight, seconds=False)} (a short "
            "demo stays within its first day, so it shows none)."
        )
    ui.empty(
        "No drift reports yet. The worker compares each completed UTC day of a router's "
        "decisions (features and router scores) with the day before it; it looks for newly "
        f"completed days every hour. {when_first}"
    )
    st.stop()
st.caption(
    "Evidently tests of each completed UTC day (decision time) against the day before; share "
    "of drifted columns. Today's decisions are reported once the day is over."
)
frame = frames.drift_frame(rows)
ui.table(frame)
series = frame[frame["status"] == "ok"][["window end", "drifted share of columns"]]
if len(series) >= 2:
    events = frames.events_frame(
        e
        for e in data.items(ctx.api.events())
        if e.get("kind") in ("model_change", "judge_changed")
    )
    st.altair_chart(
        charts.series_with_events(
            series,
            x="window end",
            y="drifted share of columns",
            y_title="drifted share of columns (0–1)",
            events=events,
        ),
        width="stretch",
    )
chosen = st.selectbox(
    "Report",
    [r["id"] for r in rows],
    key="drift_report",
    format_func=lambda i: next(
        f"#{r['id']} {ui.when(r['window_start'], seconds=False)} → "
        f"{ui.when(r['window_end'], seconds=False)}"
        for r in rows
        if r["id"] == i
    ),
)
report = next(r for r in rows if r["id"] == chosen)
columns = frames.drift_columns(report.get("result") or {})
if not columns.empty:
    ui.table(columns)
html = ctx.api.get_text(f"/v1/drift/{chosen}/report.html")
if isinstance(html, data.Unavailable):
    ui.unavailable(html, "Evidently report")
elif st.toggle("Show the stored Evidently report", key="drift_show_html"):
    components.html(html, height=900, scrolling=True)
