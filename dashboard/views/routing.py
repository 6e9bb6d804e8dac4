"""Is routing paying off? Cost against the always-strong baseline, tier mix, the Pareto view."""

from __future__ import annotations

import streamlit as st
from shadoweval.dashboard import charts, data, frames, routing_frames, ui
from shadoweval.dashboard import formatting as fmt

# Cell text by header: "(USD)" columns in dollars, "(%)" columns as percentages.
USD_COLUMNS = (
    "savings (USD)",
    "95 % CI low (USD)",
    "95 % CI high (USD)",
    *[c for c in routing_frames.SPEND_COLUMNS.values() if c.endswith("(USD)")],
    "gross savings (USD)",
    "cache cost of switching (USD)",
    "net savings (USD)",
)
USD_AND_PERCENT = {
    **dict.fromkeys(USD_COLUMNS, fmt.usd_cell),
    "savings rate (%)": fmt.percent_cell,
    "cache loss (% of gross savings)": fmt.percent_cell,
}

st.title("Is routing paying off?")
ctx = ui.context()
if ctx.router is None:
    ui.empty("No decisions yet. Post routing decisions to POST /v1/decisions to see costs here.")
    st.stop()

economics = ctx.api.get("/v1/economics", router=ctx.router, since=ctx.since, by="day")
if ui.unavailable(economics, "Economics"):
    st.stop()
if not economics.get("n_requests"):
    ui.empty(f"No decisions of {ctx.router} in {ctx.window_label}.")
    st.stop()

n = economics["n_requests"]
st.caption(f"{ctx.router}: {n} decisions in {ctx.window_label}; USD per request unless stated.")
# This router's monitoring spend only: the banner nets it out of this router's savings.
spend_answer = ctx.api.spend(router=ctx.router, since=ctx.since)
spend = data.items(spend_answer)
net = routing_frames.net_of_monitoring(economics, spend)
if isinstance(spend_answer, data.Unavailable):
    ui.unavailable(spend_answer, "Monitoring spend (the banner cannot net it out)")
elif net is not None:
    banner = {"pays": st.success, "costs": st.error, "unclear": st.warning}[net.verdict]
    banner(routing_frames.net_savings_text(net, ctx.window_label))

left, middle, right = st.columns(3)
left.metric(
    "Realized cost per request (USD)",
    fmt.usd(economics.get("realized_cost_per_request_usd")),
    help=fmt.usd_interval(
        economics.get("realized_cost_per_request_usd"),
        economics.get("realized_cost_per_request_ci95_usd"),
    ),
)
middle.metric(
    "Always-strong baseline per request (USD)",
    fmt.usd(economics.get("always_strong_cost_per_request_usd")),
    help=f"Every request priced at {economics.get('strong_model')}.",
)
right.metric(
    "Savings rate vs always strong",
    fmt.pct(economics.get("savings_rate")),
)
overhead = (
    f"{fmt.usd(economics.get('router_overhead_per_request_usd'), digits=6)} (reported on "
    f"{fmt.pct(economics.get('router_cost_reported_share'))} of decisions)"
    if economics.get("router_cost_reported_share")
    else "not reported (decisions carry no router_cost_usd)"
)
savings_per_request = fmt.usd_interval(
    economics.get("savings_per_request_usd"), economics.get("savings_per_request_ci95_usd")
)
st.markdown(
    f"- **Savings per request:** {savings_per_request}"
    f"\n- **Savings in the window:** {fmt.usd(economics.get('savings_total_usd'), digits=4)}"
    f"\n- **Router overhead per request:** {overhead}"
    f"\n- **Strong share:** {fmt.share_with_interval(economics.get('strong_share'))}"
    f"\n- **Escalations:** {fmt.share_with_interval(economics.get('escalation'))};"
    f" **fallbacks:** {fmt.share_with_interval(economics.get('fallback'))};"
    f" **failovers:** {fmt.share_with_interval(economics.get('failover'))}"
)
latency = economics.get("latency_all_ms") or {}
st.markdown(
    f"- **Latency:** p50 {fmt.number(latency.get('p50_ms'), 0)} ms, "
    f"p90 {fmt.number(latency.get('p90_ms'), 0)} ms, "
    f"p99 {fmt.number(latency.get('p99_ms'), 0)} ms (n = {latency.get('n', 0)})"
)
break_even = economics.get("break_even") or {}
if break_even:
    st.caption(
        f"Before monitoring: savings {fmt.usd(break_even.get('savings_side_usd'), digits=6)} "
        f"against router cost {fmt.usd(break_even.get('router_cost_side_usd'), digits=6)} "
        "per request ((1 − strong share) × (C_strong − C_cheap) against the router's overhead)."
    )

st.subheader("Savings per day (USD)")
# The economics answer carries its days: one read of the window, not one per day.
per_day = routing_frames.economics_days(economics.get("days") or [], limit=14)
if per_day:
    st.caption(
        "Per UTC day of decision ts: savings against always-strong = n × savings per request, "
        "with its 95 % interval (USD); savings rate = savings ÷ the always-strong cost (%)."
    )
    ui.table(routing_frames.savings_per_day(per_day), formats=USD_AND_PERCENT)
if spend:
    st.caption("Monitoring cost: shadow re-runs and judge calls, USD per UTC day of decision ts.")
    ui.table(routing_frames.spend_frame(spend), formats=USD_AND_PERCENT)

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
    mix = routing_frames.tier_mix(decisions, freq=freq)
    if mix.empty:
        ui.empty("No decisions in this window.")
    else:
        events = frames.events_frame(
            e
            for e in data.items(ctx.api.events(router=ctx.router, since=ctx.since))
            if e.get("kind") in ("model_change", "judge_changed")
            and e.get("router") in (None, ctx.router)
        )
        strong = routing_frames.strong_share_series(decisions, freq=freq)
        overall = fmt.share_with_interval(economics.get("strong_share"))
        st.caption(
            f"The latest {len(decisions)} decisions, per {bucket} of decision time: the strong "
            f"tier (dark, at the bottom of each bar) took {overall} of the window's decisions. "
            "Below: the strong share per bucket (% of its decisions) with its 95 % interval. "
            "Dashed red rules mark model and judge changes."
        )
        st.altair_chart(charts.tier_mix_chart(mix, events), width="stretch")
        st.altair_chart(
            charts.share_chart(strong, y_title="strong share (%)", events=events).properties(
                height=220
            ),
            width="stretch",
        )

st.subheader("Cost–quality (Pareto) view")
verdicts = ctx.api.list_all("/v1/verdicts", max_items=2000, router=ctx.router, since=ctx.since)
points = routing_frames.pareto_points(
    economics, data.items(verdicts) if isinstance(verdicts, list) else []
)
if points.empty:
    ui.empty("No judged pairs yet: the Pareto view needs verdicts from shadow runs.")
else:
    st.caption(
        "Quality is the judge's mean score on judged pairs, on its whole 1–10 scale with a 95 % "
        "interval; cost is USD per request, from $0."
    )
    st.altair_chart(charts.pareto_chart(points), width="stretch")
    score = {c: (lambda v: f"{v:.2f}") for c in routing_frames.PARETO_COLUMNS[2:5]}
    ui.table(points, formats={"cost per request (USD)": fmt.usd, **score})

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
            fmt.pct(cache.get("switching_share")),
            help=fmt.pct_interval(*(cache.get("switching_share_ci95") or [None, None])),
        )
        middle.metric(
            "Cache cost of switching (USD)",
            fmt.usd(cache.get("cache_cost_of_switching_usd"), digits=4),
        )
        strongest = cache.get("strongest_tier") or {}
        right.metric(
            "Net savings after cache loss (USD)",
            fmt.usd(strongest.get("net_savings_usd"), digits=4),
            help="Against every turn of each session on its strongest tier.",
        )
        ui.table(routing_frames.session_cache_frame(cache), formats=USD_AND_PERCENT)
        loops = sessions.get("tool_loops") or {}
        st.markdown(
            f"- **Escalations:** {loops.get('at_conversation_start', 0)} at the start of a "
            f"conversation, {loops.get('inside_tool_loop', 0)} inside a tool loop, "
            f"{loops.get('elsewhere', 0)} elsewhere; mid-loop rate "
            f"{fmt.pct(loops.get('mid_loop_share'))} of tool-loop turns "
            f"({fmt.pct_interval(*(loops.get('mid_loop_share_ci95') or [None, None]))})"
        )
