"""Is the router still calibrated? Reliability diagram, ECE and Brier over time, drift tests."""

from __future__ import annotations

from datetime import datetime

import pandas as pd  # type: ignore[import-untyped]
import streamlit as st
from shadoweval.dashboard import charts, data, frames, ui
from shadoweval.dashboard import formatting as fmt

st.title("Is the router still calibrated?")
ctx = ui.context()
reports = ctx.api.calibration(router=ctx.router, since=ctx.since)
if ui.unavailable(reports, "Calibration"):
    st.stop()
reports = [r for r in data.items(reports) if r.get("n")]
first = data.items(ctx.api.get("/v1/decisions", router=ctx.router, order="asc", limit=1))
if not reports and ctx.since is None and ctx.router is not None and first:
    # Asked for no window, the API starts it at the router's latest model change; with no
    # labels since, show every label, saying so, rather than an empty page.
    changes = data.items(ctx.api.events(router=ctx.router, kind="model_change"))
    if changes:
        reports = [
            r
            for r in data.items(ctx.api.calibration(router=ctx.router, since=first[0]["ts"]))
            if r.get("n")
        ]
        if reports:
            st.warning(
                "No labels since the router's latest model change "
                f"({ui.when(changes[0]['ts'], seconds=False)}, decision time): showing every "
                "label instead."
            )
if not reports:
    ui.empty(
        "No calibration labels yet: they come from judged pairs of decisions with a "
        "router_score (p_strong_needed)."
    )
    st.stop()

judges = [r["judge_key"] for r in reports]
judge = st.selectbox("Judge (model#prompt hash)", judges, key="calibration_judge")
report = next(r for r in reports if r["judge_key"] == judge)
headline = frames.calibration_headline(report, ctx.window_label)
p_value = (report.get("against_perfect_calibration") or {}).get("p_value")
(st.error if p_value is not None and p_value < 0.05 else st.info)(headline)
brier = report.get("brier") or {}
perfect = report.get("against_perfect_calibration") or {}
cox = report.get("cox") or {}
a, b, c = st.columns(3)
a.metric(
    "ECE (adaptive bins)",
    fmt.pct(report.get("expected_calibration_error")),
    help="Weighted expected calibration error; 0 % is perfectly calibrated.",
)
b.metric(
    "Brier score",
    f"{brier.get('brier', 0):.4f}" if brier.get("brier") is not None else "—",
    help="Mean squared error of the score against strong_needed (0 best).",
)
c.metric("Labels (n)", report.get("n", 0))
st.markdown(
    f"- **Calibration intercept / slope (Cox):** {fmt.number(cox.get('intercept'))} / "
    f"{fmt.number(cox.get('slope'))} (perfect: 0 / 1)\n"
    f"- **Test against perfect calibration:** p = {fmt.number(perfect.get('p_value'), 3)}"
)
st.subheader("Reliability diagram (95 % intervals per bin)")
st.altair_chart(
    charts.reliability_chart(frames.reliability_frame(report["reliability_curve"])),
    width="stretch",
)

st.subheader("ECE and Brier over decision time")
events = frames.events_frame(
    e
    for e in data.items(ctx.api.events(router=ctx.router))
    if e.get("kind") in ("model_change", "judge_changed") and e.get("router") in (None, ctx.router)
)
# One call for the six windows (each against the first), not one per window.
over_time = (
    ctx.api.get("/v1/calibration/windows", router=ctx.router, since=ctx.since, windows=6)
    if first
    else None
)
if isinstance(over_time, dict):
    rows = []
    methods: set[str] = set()
    for index, window in enumerate(over_time.get("windows") or []):
        match = next((r for r in window["reports"] if r["judge_key"] == judge), None)
        if match and match.get("n"):
            drift = match.get("drift_against_reference") or {}
            methods.add(str(drift.get("method") or ""))
            rows.append(
                {
                    "window start": datetime.fromisoformat(window["since"].replace("Z", "+00:00")),
                    "labels": match["n"],
                    "ECE": match.get("expected_calibration_error"),
                    "Brier": (match.get("brier") or {}).get("brier"),
                    "drift vs first window": (
                        f"p = {fmt.number(drift.get('p_value'), 3)}"
                        if index and drift.get("p_value") is not None
                        else ("reference window" if not index else "not tested")
                    ),
                }
            )
    series = pd.DataFrame.from_records(rows)
    if len(series) >= 2:
        st.caption("Six equal windows of decision time; red rules mark model and judge events.")
        st.altair_chart(
            charts.series_with_events(
                series.assign(**{"ECE (%)": 100 * series["ECE"].astype(float)}),
                x="window start",
                y="ECE (%)",
                y_title="ECE (%)",
                events=events,
            ),
            width="stretch",
        )
        st.altair_chart(
            charts.series_with_events(
                series, x="window start", y="Brier", y_title="Brier score", events=events
            ),
            width="stretch",
        )
        st.subheader("Calibration drift tests (each window against the first)")
        named = ", ".join(sorted(m for m in methods if m))
        st.caption(
            "Each window's labels against the first window's"
            + (f" ({named})" if named else "")
            + "; ECE in %, Brier on its 0–1 scale."
        )
        ui.table(
            series,
            formats={
                "window start": lambda v: ui.when(v, seconds=False),
                "ECE": lambda v: fmt.pct(float(v)),
                "Brier": lambda v: f"{float(v):.4f}",
            },
        )
    else:
        ui.empty("Too few labelled windows yet to draw calibration over time.")

st.subheader("Expected vs observed harm")
st.caption(
    "Expected harm: the router score recalibrated on the labels before the window, averaged "
    "over every cheap-routed decision of the hour. A significant gap between expected and "
    "observed harm means the score's meaning changed (concept drift); a shift of the scores "
    "alone moves expected harm without a gap."
)
gap_segments = ctx.api.segments(router=ctx.router, since=ctx.since)
forward = [
    r
    for r in data.items(gap_segments)
    if isinstance(r, dict) and r.get("direction") == "forward" and r.get("judge_key") == judge
]
if not forward:
    ui.empty("No cheap-routed segments judged by this judge yet.")
else:
    gap_segment = st.selectbox(
        "Segment", [r["segment"] for r in forward], key="calibration_gap_segment"
    )
    estimates = ctx.api.get(
        f"/v1/segments/{gap_segment}/estimates",
        router=forward[0]["router"] if ctx.router is None else ctx.router,
        judge_key=judge,
    )
    if not ui.unavailable(estimates, "Expected vs observed"):
        gap = estimates.get("gap") or {}
        if gap:
            st.markdown(
                f"Observed {fmt.pct(gap.get('observed'))}, expected "
                f"{fmt.pct(gap.get('expected'))} on the window's {gap.get('labels')} labels: "
                f"gap {fmt.pct(gap.get('gap'))} (p = {fmt.number(gap.get('p_value'), 3)})"
                + (" — **concept drift**" if gap.get("significant") else "")
            )
        frame = frames.hourly_estimates_frame(estimates.get("points", []))
        if frame.empty:
            ui.empty("No cheap-routed decisions with a router score in this window.")
        else:
            st.caption(
                "Per hour of decision time (UTC), with 95 % intervals; dashed red rules mark "
                "model and judge changes."
            )
            st.altair_chart(charts.hourly_estimates_chart(frame, events), width="stretch")
