"""What is firing? Alerts with their numbers; model events, retrain triggers, gate runs."""

from __future__ import annotations

import streamlit as st
from shadoweval.dashboard import charts, data, ui

st.title("What is firing?")
ctx = ui.context()

st.subheader("Alerts")
state = st.radio("State", ["firing", "resolved", "all"], horizontal=True, key="alert_state")
alerts = ctx.api.get("/v1/alerts", state=state, router=ctx.router)
if not ui.unavailable(alerts, "Alerts"):
    rows = data.items(alerts)
    if not rows:
        ui.empty(f"No {state} alerts." if state != "all" else "No alerts yet.")
    else:
        st.dataframe(charts.alerts_frame(rows), hide_index=True, width="stretch")
        for alert in rows:
            with st.expander(f"#{alert['id']} [{alert.get('severity')}] {alert.get('title')}"):
                st.write(alert.get("summary"))
                st.json(alert.get("numbers") or {}, expanded=True)
                links = [
                    f"[{n}]({alert[k]})"
                    for n, k in (("dashboard", "dashboard_url"), ("runbook", "runbook_url"))
                    if alert.get(k)
                ]
                if links:
                    st.markdown(" · ".join(links))
                if ctx.api.can_operate and alert.get("state") == "firing":
                    a, b = st.columns(2)
                    if a.button("Acknowledge", key=f"ack_{alert['id']}"):
                        done = ctx.api.post(f"/v1/alerts/{alert['id']}/acknowledge", {})
                        if not ui.unavailable(done, "Acknowledge"):
                            st.success("Acknowledged.")
                    minutes = b.number_input(
                        "Silence for (minutes)", 5, 10080, 60, key=f"silence_min_{alert['id']}"
                    )
                    if b.button("Silence", key=f"silence_{alert['id']}"):
                        done = ctx.api.post(
                            f"/v1/alerts/{alert['id']}/silence", {"minutes": int(minutes)}
                        )
                        if not ui.unavailable(done, "Silence"):
                            st.success(f"Silenced for {int(minutes)} minutes.")

st.subheader("Events (quality drops, model changes, judge changes, budget)")
events = ctx.api.get("/v1/events", since=ctx.since)
if not ui.unavailable(events, "Events"):
    rows = [
        e for e in data.items(events) if ctx.router is None or e.get("router") in (None, ctx.router)
    ]
    if not rows:
        ui.empty("No events yet.")
    else:
        st.dataframe(charts.events_frame(rows), hide_index=True, width="stretch")
        for event in rows:
            if event.get("kind") == "model_change":
                details = event.get("details") or {}
                st.markdown(
                    f"Model change on **{event.get('router')}** tier {details.get('tier')}: "
                    f"{details.get('previous_models')} → **{details.get('model')}**"
                    + (
                        f" · retrain export: `{details['export_url']}`"
                        if details.get("export_url")
                        else ""
                    )
                )

for title, channels in (
    ("Retrain triggers", ("retrain",)),
    ("Alert deliveries", ("webhook", "slack", "pagerduty")),
):
    st.subheader(title)
    deliveries = ctx.api.get("/v1/alert-deliveries", limit=200)
    if ui.unavailable(deliveries, title):
        continue
    rows = [d for d in data.items(deliveries) if d.get("channel") in channels]
    if rows:
        st.dataframe(charts.deliveries_frame(rows), hide_index=True, width="stretch")
    else:
        ui.empty(f"No {title.lower()} yet.")

st.subheader("Gate runs")
gates = ctx.api.get("/v1/gates", router=ctx.router)
if not ui.unavailable(gates, "Gate runs"):
    rows = data.items(gates)
    if not rows:
        ui.empty("No gate runs yet (`shadoweval gate …` or POST /v1/gates).")
    for gate in rows:
        label = (
            f"Gate #{gate['id']} · {gate.get('status')} · {gate.get('candidate_model')} "
            f"replacing {gate.get('replaced_model')} · {gate.get('items_done')}/"
            f"{gate.get('items_total')} pairs · max drop {charts.pct(gate.get('max_drop'))} · "
            f"{charts.usd(gate.get('cost_usd'), digits=4)} spent"
        )
        with st.expander(label):
            detail = ctx.api.get(f"/v1/gates/{gate['id']}")
            if not ui.unavailable(detail, "Gate report"):
                st.markdown(detail.get("report_markdown") or "(no report yet)")
