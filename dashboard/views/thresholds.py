"""What threshold should I run? The cost–harm curve per segment, the operating point, and the
recommendation with its guarantee and USD-per-day forecast (GET /v1/thresholds)."""

from __future__ import annotations

import streamlit as st
from shadoweval.dashboard import charts, data, ui
from shadoweval.dashboard import formatting as fmt

st.title("What threshold should I run?")
ctx = ui.context()
if ctx.router is None:
    ui.empty("No routers yet.")
    st.stop()
left, right = st.columns(2)
harm_budget = left.slider(
    "Harm budget ε (% of all traffic served a cheap answer that loses)",
    min_value=0.5,
    max_value=20.0,
    value=5.0,
    step=0.5,
    key="threshold_harm_budget",
)
delta = right.selectbox(
    "Risk δ (chance the recommendation's harm exceeds ε)",
    [0.05, 0.1, 0.2],
    index=1,
    key="threshold_delta",
)
report = ctx.api.get(
    "/v1/thresholds", router=ctx.router, harm_budget=harm_budget / 100, delta=delta
)
if ui.unavailable(report, "Threshold advice"):
    st.stop()
if not report.get("applicable"):
    ui.empty(f"Not applicable: {report.get('not_applicable_reason')}")
    st.stop()
st.caption(
    f"The last {report['window_days']:g} decision days up to the router's watermark "
    f"({report['window_until']}), whatever the sidebar window; judge {report['judge_key']}. "
    f"Threshold in force {fmt.number(report['threshold_in_force'], 3)}: "
    f"{report['strong_tier']} at or above, {report['cheap_tier']} below. Bands are 95 % and "
    "simultaneous over all thresholds; the recommendation is Learn then Test at risk δ."
)
segments = data.items(report.get("segments"))
names = [s["segment"] if s["segment"] is not None else "(all segments)" for s in segments]
chosen = st.selectbox("Segment", names, key="threshold_segment")
segment = segments[names.index(chosen)]
advice = segment["recommendation"]
a, b, c = st.columns(3)
a.metric(
    "Recommended threshold",
    fmt.number(advice.get("threshold"), 3),
    delta=advice.get("change"),
    delta_color="off",
    help=advice.get("reason"),
)
b.metric(
    "Harm at the recommendation",
    fmt.pct(advice.get("harm_rate"), digits=2),
    help=f"band up to {fmt.pct(advice.get('harm_high'), digits=2)}",
)
saving = advice.get("savings_usd_per_day")
c.metric(
    "Savings vs the threshold in force",
    fmt.NO_VALUE if saving is None else f"${saving:,.2f}/day",
    help=(
        "USD per decision day at this window's traffic; band "
        f"${advice.get('savings_usd_per_day_low') or 0:,.2f} to "
        f"${advice.get('savings_usd_per_day_high') or 0:,.2f}"
    ),
)
st.markdown(
    f"- **{segment['n_requests']} requests** ({segment['requests_per_day']:.0f} a day), "
    f"**{segment['n_labels']} labels**, estimator {segment['estimator']}\n"
    f"- {advice.get('reason')}"
)
shortfall = advice.get("shortfall")
if shortfall:
    more = (
        "more labels would not help"
        if shortfall.get("labels_more") is None
        else f"about {shortfall['labels_more']} more labels would let the test go on"
    )
    st.warning(
        f"{shortfall['reason']}: {shortfall['labels_now']} labels with a score in "
        f"[{shortfall['score_low']:.3f}, {shortfall['score_high']:.3f}); {more}."
    )
frame = charts.threshold_frame(
    segment["curve"],
    threshold_in_force=report["threshold_in_force"],
    recommended=advice.get("threshold"),
)
st.subheader("Cost against harm, one point per threshold")
st.altair_chart(charts.cost_harm_chart(frame, harm_budget=harm_budget / 100), width="stretch")
st.subheader("The curve")
st.dataframe(frame, hide_index=True)
