"""What did the judge see? Both answers side by side with both orders' verdicts; judge quality."""

from __future__ import annotations

import streamlit as st
from shadoweval.dashboard import charts, data, ui

from shadoweval.providers.simulated import strip_sim_tags

st.title("What did the judge see?")
ctx = ui.context()

st.subheader("Judge consistency")
quality = ctx.api.get("/v1/judge/quality", since=ctx.since)
if not ui.unavailable(quality, "Judge quality"):
    judges = data.items(quality)
    if not judges:
        ui.empty("No judged pairs yet.")
    for judge in judges:
        st.markdown(
            f"**{judge['judge_model']}** (prompt {judge['prompt_hash']}): "
            f"{judge['verdicts_done']} pairs judged, {judge['verdicts_error']} errors; "
            f"swap consistency {charts.rate_with_interval(judge['swap_consistency'])}; "
            f"position-A preference {charts.rate_with_interval(judge['position_a_preference'])}; "
            f"judge spend {charts.usd(judge.get('judge_cost_usd'), digits=4)}"
        )
st.subheader("Agreement with human labels")
agreement = ctx.api.get("/v1/judge/agreement", router=ctx.router, since=ctx.since)
if not ui.unavailable(agreement, "Agreement with human labels"):
    groups = data.items(agreement)
    if not groups:
        ui.empty(
            "No human labels yet: reviewers label pairs from GET /v1/review/queue, and "
            "POST /v1/feedback adds end-user feedback."
        )
    for group in groups:
        st.markdown(
            f"**{group['judge_model']}** (prompt {group['prompt_hash']}): Cohen's κ "
            f"{charts.number(group.get('kappa'))} "
            f"(95 % CI {charts.number(group.get('kappa_ci_low'))}–"
            f"{charts.number(group.get('kappa_ci_high'))}, n = {group.get('n', 0)} pairs); "
            f"observed agreement {charts.pct(group.get('observed_agreement'))}, by chance "
            f"{charts.pct(group.get('expected_agreement'))}; answer acceptable per judge "
            f"{charts.pct(group.get('judge_acceptable_rate'))}, per humans "
            f"{charts.pct(group.get('human_acceptable_rate'))}"
        )

st.subheader("Judge bias against humans")
segment_rows = ctx.api.get("/v1/segments", router=ctx.router, since=ctx.since)
if not ui.unavailable(segment_rows, "Judge bias"):
    biased = [r for r in data.items(segment_rows) if (r.get("ppi") or {}).get("human_labels")]
    if not biased:
        ui.empty(
            "No human labels in the uniform review sample yet: the judge's bias is its harm "
            "rate minus the human one on those pairs."
        )
    for row in biased:
        ppi = row["ppi"]
        st.markdown(
            f"**{row['segment']}** ({row['judge_key']}): judge bias "
            f"{charts.pct(ppi.get('judge_bias'))} (95 % CI "
            f"{charts.pct(ppi.get('judge_bias_ci_low'))} to "
            f"{charts.pct(ppi.get('judge_bias_ci_high'))}, {ppi['human_labels']} human labels); "
            "negative: the judge misses harm"
        )

st.subheader("Judged pairs")
f1, f2, f3 = st.columns(3)
ui.linked("judge_segment", "segment")
segment = f1.text_input("Segment", key="judge_segment") or None
outcome = f2.selectbox(
    "Outcome", ["any", "cheaper_wins", "stronger_wins", "tie", "inconsistent"], key="judge_outcome"
)
direction = f3.selectbox("Direction", ["any", "forward", "reverse"], key="judge_direction")
filters = {
    "router": ctx.router,
    "segment": segment,
    "since": ctx.since,
    "outcome": None if outcome == "any" else outcome,
    "direction": None if direction == "any" else direction,
}
# The API pages oldest first; the newest pairs are what an owner looks at.
matching = ctx.api.list_all("/v1/verdicts", max_items=5000, **filters)
if ui.unavailable(matching, "Verdicts"):
    st.stop()
newest = [v["id"] for v in matching[-20:]][::-1]
if not newest:
    ui.empty("No judged pairs match these filters.")
    st.stop()
st.caption(f"The newest {len(newest)} of {len(matching)} matching pairs.")
verdicts = []
for verdict_id in newest:
    full = ctx.api.get(f"/v1/verdicts/{verdict_id}")
    if not isinstance(full, data.Unavailable):
        verdicts.append(full)
for verdict in verdicts:
    label = "SIMULATED · " if verdict.get("simulated") else ""
    with st.expander(
        f"{label}{verdict['segment_value']} · {verdict['request_id']} · "
        f"outcome {verdict.get('outcome')} · strong_needed {verdict.get('strong_needed')}"
    ):
        request = verdict.get("request") or {}
        messages = request.get("messages") or []
        if messages:
            last = messages[-1].get("content")
            st.markdown(f"**Request:** {strip_sim_tags(str(last))}")
        left, right = st.columns(2)
        left.markdown(
            f"**Cheaper: {verdict['cheaper_model']}** (score {verdict.get('score_cheaper')}/10)"
        )
        left.text(strip_sim_tags(verdict.get("cheaper_answer") or "(not stored)"))
        right.markdown(
            f"**Stronger: {verdict['stronger_model']}** (score {verdict.get('score_stronger')}/10)"
        )
        right.text(strip_sim_tags(verdict.get("stronger_answer") or "(not stored)"))
        for name in ("order_cheaper_first", "order_stronger_first"):
            order = verdict.get(name) or {}
            st.markdown(
                f"*{name.replace('_', ' ')}:* winner **{order.get('winner')}**, "
                f"A {order.get('score_a')}/10, B {order.get('score_b')}/10 — "
                f"{order.get('rationale')}"
            )
