"""Has the input changed? Feature and router-score drift per window, and the Evidently report."""

from __future__ import annotations

import streamlit as st
import streamlit.components.v1 as components
from shadoweval.dashboard import charts, data, ui

st.title("Has the input changed?")
ctx = ui.context()
reports = ctx.api.get("/v1/drift", router=ctx.router)
if ui.unavailable(reports, "Drift reports"):
    st.stop()
rows = data.items(reports)
if not rows:
    ui.empty(
        "No drift reports yet: the worker compares each window of features and router scores "
        "with the window before, hourly, once there is enough traffic."
    )
    st.stop()
st.caption("Evidently tests per window against the previous window; share of drifted columns.")
frame = charts.drift_frame(rows)
st.dataframe(frame, hide_index=True, width="stretch")
series = frame[frame["status"] == "ok"][["window end", "drifted share of columns"]]
if len(series) >= 2:
    events = charts.events_frame(
        e
        for e in data.items(ctx.api.get("/v1/events"))
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
        f"#{r['id']} {r['window_start']} → {r['window_end']}" for r in rows if r["id"] == i
    ),
)
report = next(r for r in rows if r["id"] == chosen)
columns = charts.drift_columns(report.get("result") or {})
if not columns.empty:
    st.dataframe(columns, hide_index=True, width="stretch")
html = ctx.api.get_text(f"/v1/drift/{chosen}/report.html")
if isinstance(html, data.Unavailable):
    ui.unavailable(html, "Evidently report")
elif st.toggle("Show the stored Evidently report", key="drift_show_html"):
    components.html(html, height=900, scrolling=True)
