"""What is firing? A headline, a timeline of alerts and events over decision time, the alerts
with their numbers; model events, retrain triggers, deliveries and gate runs."""

from __future__ import annotations

from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import streamlit as st
from shadoweval.dashboard import charts, data, frames, ui
from shadoweval.dashboard import formatting as fmt

from shadoweval.alerts.notification import split_summary

st.title("What is firing?")
ctx = ui.context()

alerts_answer = ctx.api.get("/v1/alerts", state="all", router=ctx.router, limit=200)
events_answer = ctx.api.events(since=ctx.since)
alerts: list[dict[str, Any]] = data.items(alerts_answer)
events: list[dict[str, Any]] = [
    e
    for e in data.items(events_answer)
    if ctx.router is None or e.get("router") in (None, ctx.router)
]


def headline(alert: dict[str, Any]) -> str:
    """One line a person reads in one breath: where, what, since when (decision time)."""
    where = alert.get("segment") or alert.get("router") or "all traffic"
    what = one_line(alert)
    since = alert.get("pending_since_ts") or alert.get("fired_ts") or alert.get("started_at")
    return f"**{where}** — {what} (since {ui.when(since, seconds=False)})"


def one_line(alert: dict[str, Any]) -> str:
    """The summary's first line, the sentence read in one breath (the notification's own
    split); the title or rule when there is no summary."""
    summary = alert.get("summary") or ""
    return split_summary(summary)[0] or alert.get("title") or alert.get("rule") or ""


def handled(alert: dict[str, Any]) -> str:
    """Who acknowledged it and until when it is silenced, in one cell."""
    parts = []
    if alert.get("acknowledged_by"):
        parts.append(f"ack: {alert['acknowledged_by']}")
    if alert.get("silenced_until"):
        parts.append(f"silenced until {ui.when(alert['silenced_until'], seconds=False)}")
    return " · ".join(parts) or fmt.NO_VALUE


firing = [a for a in alerts if a.get("state") == "firing"]
if firing:
    st.error(
        f"{len(firing)} alert{'s' if len(firing) != 1 else ''} firing. "
        + " · ".join(headline(a) for a in firing[:3])
        + (f" · and {len(firing) - 3} more" if len(firing) > 3 else ""),
        icon="🚨",
    )
elif alerts:
    st.success("Nothing is firing now; earlier alerts are on the timeline below.", icon="✅")

st.subheader("Timeline (decision time, UTC)")
st.caption(
    "One bar per alert, from when its condition first held to when it resolved (faded) or to "
    "the latest decision (still open); colour is severity. Dashed red rules mark events: "
    "model changes, judge changes, quality drops, budget exhaustion."
)
event_table = frames.events_frame(events)
if alerts or not event_table.empty:
    # The bars of open alerts end at decision time now: the newest decision, event or alert,
    # whichever is latest (the newest decision read may lag an alert raised just now).
    stamps = pd.to_datetime(
        [
            *event_table["ts"],
            *(a.get("fired_ts") or a.get("started_at") for a in alerts),
            ui.latest_decision_ts(ctx.api, ctx.router),
        ],
        utc=True,
        format="ISO8601",
    )
    now = stamps.max().to_pydatetime()
    timeline = charts.alert_timeline_frame(alerts, now=now)
    chart = charts.alert_timeline_chart(timeline, event_table)
    st.altair_chart(chart, width="stretch")
else:
    ui.empty("No alerts or events yet: the timeline appears with the first one.")

st.subheader("Alerts")
state = st.radio("State", ["firing", "resolved", "all"], horizontal=True, key="alert_state")
if not ui.unavailable(alerts_answer, "Alerts"):
    rows = [a for a in alerts if state == "all" or a.get("state") == state]
    if not rows:
        ui.empty(f"No {state} alerts." if state != "all" else "No alerts yet.")
    else:
        frame = frames.alerts_frame(rows)
        frame["what"] = [one_line(a) for a in rows]
        frame["since (decision time)"] = [
            ui.when(a.get("pending_since_ts") or a.get("fired_ts") or a.get("started_at"))
            for a in rows
        ]
        frame["handled"] = [handled(a) for a in rows]
        # Pixel widths that add up to the wide layout's content at 1,400 px (no scrolling right);
        # the alert's number is on its expander below.
        ui.table(
            frame[["state", "severity", "segment", "what", "since (decision time)", "handled"]],
            column_config={
                "state": st.column_config.TextColumn(width=70),
                "severity": st.column_config.TextColumn(width=75),
                "segment": st.column_config.TextColumn(width=100),
                "what": st.column_config.TextColumn(width=340),
                "since (decision time)": st.column_config.TextColumn(width=175),
                "handled": st.column_config.TextColumn(width=140),
            },
        )
        for alert in rows:
            with st.expander(f"#{alert['id']} · {alert.get('severity')} · {alert.get('title')}"):
                st.markdown(headline(alert))
                detail = split_summary(alert.get("summary") or "")[1]
                if detail:
                    st.text(detail)
                st.caption(
                    f"rule {alert.get('rule')} · state {alert.get('state')} · fired "
                    f"{ui.when(alert.get('fired_ts'))} (decision time) · resolved "
                    f"{ui.when(alert.get('resolved_ts') or alert.get('resolved_at'))}"
                )
                links = [
                    f"[{n}]({alert[k]})"
                    for n, k in (("dashboard", "dashboard_url"), ("runbook", "runbook_url"))
                    if alert.get(k)
                ]
                if links:
                    st.markdown(" · ".join(links))
                if alert.get("numbers"):
                    st.json(alert["numbers"], expanded=False)
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
if not ui.unavailable(events_answer, "Events"):
    if event_table.empty:
        ui.empty("No events yet.")
    else:
        ui.table(
            event_table.rename(columns={"ts": "when (decision time)"}),
            column_config={
                "when (decision time)": st.column_config.TextColumn(width=190),
                "kind": st.column_config.TextColumn(width=150),
                "router": st.column_config.TextColumn(width=180),
                "about": st.column_config.TextColumn(width=380),
            },
        )
        for event in events:
            if event.get("kind") == "model_change":
                details = event.get("details") or {}
                previous = details.get("previous_models") or []
                before = ", ".join(map(str, previous)) if isinstance(previous, list) else previous
                st.markdown(
                    f"{ui.when(event.get('ts'), seconds=False)}: model change on "
                    f"**{event.get('router')}** tier {details.get('tier') or fmt.NO_VALUE}: "
                    f"{before or fmt.NO_VALUE} → **{details.get('model')}**"
                    + (
                        f" · retrain export: `{details['export_url']}`"
                        if details.get("export_url")
                        else ""
                    )
                )

deliveries = ctx.api.get("/v1/alert-deliveries", limit=200)
for title, channels in (
    ("Retrain triggers", ("retrain",)),
    ("Alert deliveries", ("webhook", "slack", "pagerduty")),
):
    st.subheader(title)
    if ui.unavailable(deliveries, title):
        continue
    rows = [d for d in data.items(deliveries) if d.get("channel") in channels]
    if rows:
        sent = frames.deliveries_frame(rows)
        for column in ("created at", "delivered at"):  # wall clock: when the outbox sent it
            sent[column] = sent[column].map(ui.when)
        ui.table(
            sent.drop(columns=["id", "kind"]),
            column_config={
                "channel": st.column_config.TextColumn(width=75),
                "rule": st.column_config.TextColumn(width=120),
                "status": st.column_config.TextColumn(width=80),
                "attempts": st.column_config.NumberColumn(width=65),
                "created at": st.column_config.TextColumn("created at (UTC)", width=165),
                "delivered at": st.column_config.TextColumn("delivered at (UTC)", width=165),
                "last error": st.column_config.TextColumn(width=130),
                "url": st.column_config.TextColumn(width=130),
            },
        )
    else:
        ui.empty(f"No {title.lower()} yet.")

st.subheader("Gate runs")
gates = ctx.api.get("/v1/gates", router=ctx.router)
if not ui.unavailable(gates, "Gate runs"):
    gate_rows = data.items(gates)
    if not gate_rows:
        ui.empty("No gate runs yet (`shadoweval gate …` or POST /v1/gates).")
    for gate in gate_rows:
        label = (
            f"Gate #{gate['id']} · {gate.get('status')} · {gate.get('candidate_model')} "
            f"replacing {gate.get('replaced_model')} · {gate.get('items_done')}/"
            f"{gate.get('items_total')} pairs · max drop {fmt.pct(gate.get('max_drop'))} · "
            f"{fmt.usd(gate.get('cost_usd'), digits=4)} spent"
        )
        with st.expander(label):
            detail = ctx.api.get(f"/v1/gates/{gate['id']}")
            if not ui.unavailable(detail, "Gate report"):
                st.markdown(detail.get("report_markdown") or "(no report yet)")
