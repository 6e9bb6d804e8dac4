"""Is routing paying off? Cost against the always-strong baseline, tier mix, the Pareto view."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st
from shadoweval.dashboard import charts, data, ui

st.title("Is routing paying off?")
ctx = ui.context()
if ctx.router is None:
    ui.empty("No decisions yet. Post routing decisions to POST /v1/decisions to see costs here.")
    st.stop()

economics = ctx.api.get("/v1/economics", router=ctx.router, since=ctx.since)
if ui.unavailable(economics, "Economics"):
    st.stop()
if not economics.get("n_requests"):
    ui.empty(f"No decisions of {ctx.router} in {ctx.window_label}.")
    st.stop()

n = economics["n_requests"]
st.caption(f"{ctx.router}: {n} decisions in {ctx.window_label}; USD per request unless stated.")
left, middle, right = st.columns(3)
left.metric(
    "Realized cost per request (USD)",
    charts.usd(economics.get("realized_cost_per_request_usd")),
    help=charts.usd_interval(
        economics.get("realized_cost_per_request_usd"),
        economics.get("realized_cost_per_request_ci95_usd"),
    ),
)
middle.metric(
    "Always-strong baseline per request (USD)",
    charts.usd(economics.get("always_strong_cost_per_request_usd")),
    help=f"Every request priced at {economics.get('strong_model')}.",
)
right.metric(
    "Savings rate vs always strong",
    charts.pct(economics.get("savings_rate")),
)
overhead = (
    f"{charts.usd(economics.get('router_overhead_per_request_usd'), digits=6)} (reported on "
    f"{charts.pct(economics.get('router_cost_reported_share'))} of decisions)"
    if economics.get("router_cost_reported_share")
    else "not reported (decisions carry no router_cost_usd)"
)
savings_per_request = charts.usd_interval(
    economics.get("savings_per_request_usd"), economics.get("savings_per_request_ci95_usd")
)
st.markdown(
    f"- **Savings per request:** {savings_per_request}"
    f"\n- **Savings in the window:** {charts.usd(economics.get('savings_total_usd'), digits=4)}"
    f"\n- **Router overhead per request:** {overhead}"
    f"\n- **Strong share:** {charts.share_with_interval(economics.get('strong_share'))}"
    f"\n- **Escalations:** {charts.share_with_interval(economics.get('escalation'))};"
    f" **fallbacks:** {charts.share_with_interval(economics.get('fallback'))};"
    f" **failovers:** {charts.share_with_interval(economics.get('failover'))}"
)
latency = economics.get("latency_all_ms") or {}
st.markdown(
    f"- **Latency:** p50 {charts.number(latency.get('p50_ms'), 0)} ms, "
    f"p90 {charts.number(latency.get('p90_ms'), 0)} ms, "
    f"p99 {charts.number(latency.get('p99_ms'), 0)} ms (n = {latency.get('n', 0)})"
)
break_even = economics.get("break_even") or {}
if break_even:
    pays = break_even.get("router_pays_for_itself")
    text = (
        f"Break-even check: savings {charts.usd(break_even.get('savings_side_usd'), digits=6)} "
        f"vs router cost {charts.usd(break_even.get('router_cost_side_usd'), digits=6)} per request"
    )
    (st.success if pays else st.error)(
        text
        + (" — the router pays for itself." if pays else " — the router costs more than it saves.")
    )

st.subheader("Savings per day (USD)")
first = data.items(ctx.api.get("/v1/decisions", router=ctx.router, order="asc", limit=1))
last = data.items(ctx.api.get("/v1/decisions", router=ctx.router, order="desc", limit=1))
if first and last:
    days = charts.utc_days(first[0]["ts"], last[0]["ts"], limit=14)
    if ctx.since is not None:
        days = [d for d in days if d + timedelta(days=1) > ctx.since]
    per_day = [
        (
            day,
            ctx.api.get(
                "/v1/economics", router=ctx.router, since=day, until=day + timedelta(days=1)
            ),
        )
        for day in days
    ]
    savings = charts.savings_per_day(
        [(day, e) for day, e in per_day if not isinstance(e, data.Unavailable)]
    )
    st.caption(
        "Per UTC day of decision ts: savings against always-strong = n × savings per request, "
        "with its 95 % interval (USD)."
    )
    st.dataframe(savings, hide_index=True)
spend = data.items(ctx.api.get("/v1/spend", router=ctx.router, since=ctx.since))
if spend:
    st.caption("Monitoring cost: shadow re-runs and judge calls, USD per UTC day of decision ts.")
    st.dataframe(spend, hide_index=True)

st.subheader("Traffic and tier mix over decision time")
decisions = ctx.api.list_all(
    "/v1/decisions",
    max_items=5000,
    page_size=1000,  # the decisions route's largest page
    router=ctx.router,
    since=ctx.since,
    order="desc",
)
if not ui.unavailable(decisions, "Decisions"):
    freq, bucket = ("10min", "10 minutes") if len(decisions) < 5000 else ("h", "hour")
    mix = charts.tier_mix(decisions, freq=freq)
    if mix.empty:
        ui.empty("No decisions in this window.")
    else:
        st.caption(f"The latest {len(decisions)} decisions, per {bucket} of decision time.")
        st.altair_chart(charts.tier_mix_chart(mix), width="stretch")

st.subheader("Cost–quality (Pareto) view")
verdicts = ctx.api.list_all("/v1/verdicts", max_items=2000, router=ctx.router, since=ctx.since)
points = charts.pareto_points(economics, data.items(verdicts) if isinstance(verdicts, list) else [])
if points.empty:
    ui.empty("No judged pairs yet: the Pareto view needs verdicts from shadow runs.")
else:
    st.caption("Quality is the judge's mean score (1–10) on judged pairs; cost is USD per request.")
    st.altair_chart(charts.pareto_chart(points), width="stretch")
    st.dataframe(points, hide_index=True)

st.subheader("What does per-turn routing cost?")
sessions = ctx.api.get("/v1/sessions", router=ctx.router, since=ctx.since)
if not ui.unavailable(sessions, "Sessions"):
    cache = sessions.get("cache")
    if sessions.get("status") != "ok" or not cache:
        ui.empty(
            f"{ctx.router}: {sessions.get('status', 'no sessions logged')} in {ctx.window_label}"
            " — decisions need a session_id for the prompt-cache analysis."
        )
    else:
        st.caption(
            "A router that switches tiers inside a session writes its prompt prefix into a second "
            "cache and pays cache-write prices again where a session-sticky router reads a warm "
            "cache. Cache cost of switching = the excess cache writes × (write − read price) of "
            "the model that served them; net savings = gross savings − that cost (USD, over the "
            "window's sessions)."
        )
        left, middle, right = st.columns(3)
        left.metric(
            "Sessions that switch tier",
            charts.pct(cache.get("switching_share")),
            help=charts.pct_interval(*(cache.get("switching_share_ci95") or [None, None])),
        )
        middle.metric(
            "Cache cost of switching (USD)",
            charts.usd(cache.get("cache_cost_of_switching_usd"), digits=4),
        )
        strongest = cache.get("strongest_tier") or {}
        right.metric(
            "Net savings after cache loss (USD)",
            charts.usd(strongest.get("net_savings_usd"), digits=4),
            help="Against every turn of each session on its strongest tier.",
        )
        st.dataframe(charts.session_cache_frame(cache), hide_index=True)
        loops = sessions.get("tool_loops") or {}
        st.markdown(
            f"- **Escalations:** {loops.get('at_conversation_start', 0)} at the start of a "
            f"conversation, {loops.get('inside_tool_loop', 0)} inside a tool loop, "
            f"{loops.get('elsewhere', 0)} elsewhere; mid-loop rate "
            f"{charts.pct(loops.get('mid_loop_share'))} of tool-loop turns "
            f"({charts.pct_interval(*(loops.get('mid_loop_share_ci95') or [None, None]))})"
        )
