"""What did the judge see? Both answers side by side with both orders' verdicts; judge quality."""

from __future__ import annotations

from typing import Any

import streamlit as st
from shadoweval.dashboard import charts, data, frames, routing_frames, ui
from shadoweval.dashboard import formatting as fmt

from shadoweval.providers.simulated import ANSWER_RE, strip_sim_tags


def shown(text: str) -> str:
    """Text without the simulated provider's hidden markers (request and answer tags)."""
    return ANSWER_RE.sub("", strip_sim_tags(text)).strip()


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
            f"swap consistency {fmt.rate_with_interval(judge['swap_consistency'])}; "
            f"position-A preference {fmt.rate_with_interval(judge['position_a_preference'])}; "
            f"judge spend {fmt.usd(judge.get('judge_cost_usd'), digits=4)}"
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
            f"{fmt.number(group.get('kappa'))} "
            f"(95 % CI {fmt.number(group.get('kappa_ci_low'))}–"
            f"{fmt.number(group.get('kappa_ci_high'))}, n = {group.get('n', 0)} pairs); "
            f"observed agreement {fmt.pct(group.get('observed_agreement'))}, by chance "
            f"{fmt.pct(group.get('expected_agreement'))}; answer acceptable per judge "
            f"{fmt.pct(group.get('judge_acceptable_rate'))}, per humans "
            f"{fmt.pct(group.get('human_acceptable_rate'))}"
        )
        escalation = frames.escalation_text(group.get("escalation"))
        if escalation:
            st.caption(escalation)

st.subheader("Judge bias against humans")
segment_rows = ctx.api.segments(router=ctx.router, since=ctx.since)
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
            f"{fmt.pct(ppi.get('judge_bias'))} (95 % CI "
            f"{fmt.pct(ppi.get('judge_bias_ci_low'))} to "
            f"{fmt.pct(ppi.get('judge_bias_ci_high'))}, {ppi['human_labels']} human labels); "
            "negative: the judge misses harm"
        )

st.subheader("Consistency over decision time")
segment_names = sorted(
    {r["segment"] for r in data.items(segment_rows) if isinstance(r, dict) and r.get("segment")}
)
segment_options = ["any", *segment_names]
ui.linked("judge_segment", "segment", segment_options)
if st.session_state.get("judge_segment") not in segment_options:
    st.session_state.pop("judge_segment", None)
segment_choice = st.selectbox(
    "Segment (the charts and the pairs below)", segment_options, key="judge_segment"
)
segment = None if segment_choice == "any" else segment_choice
# Per hour, the API adds the counts up; a window of verdicts under a day is drawn per 10
# minutes from the verdicts themselves (a day of them at most).
timeline = ctx.api.get("/v1/judge/timeline", router=ctx.router, segment=segment, since=ctx.since)
hours = data.items(timeline) if isinstance(timeline, list) else []
consistency = position_a = None
bucket = "hour"
if len(hours) > 24:
    starts = [h["start"] for h in hours]
    consistency = routing_frames.share_series_from_counts(
        starts, [h["consistent"] for h in hours], [h["verdicts"] for h in hours]
    )
    position_a = routing_frames.share_series_from_counts(
        starts, [h["position_a_calls"] for h in hours], [h["decisive_calls"] for h in hours]
    )
    judged: Any = hours
else:
    judged = ctx.api.list_all(
        "/v1/verdicts",
        max_items=5000,
        router=ctx.router,
        segment=segment,
        since=ctx.since,
        status="done",
    )
    if not isinstance(judged, data.Unavailable) and judged:
        freq, bucket = routing_frames.bucket_for([v["ts"] for v in judged])
        consistency = routing_frames.share_series(
            [v["ts"] for v in judged],
            [v.get("outcome") != "inconsistent" for v in judged],
            freq=freq,
        )
        calls = frames.position_calls(judged)
        position_a = routing_frames.share_series(
            [c[0] for c in calls], [c[1] for c in calls], freq=freq
        )
if consistency is not None and position_a is not None:
    events = frames.events_frame(
        e
        for e in data.items(ctx.api.events(router=ctx.router, since=ctx.since))
        if e.get("kind") in ("model_change", "judge_changed")
        and e.get("router") in (None, ctx.router)
    )
    st.caption(
        f"Per {bucket} of decision time, with 95 % intervals; dashed red rules mark model and "
        "judge changes. Swap consistency: both orders name the same winner. Position-A "
        "preference: share of decisive calls (either order) that picked the answer shown "
        "first; 50 % is no position bias."
    )
    left, right = st.columns(2)
    left.altair_chart(
        charts.share_chart(consistency, y_title="swap consistency (%)", events=events).properties(
            height=240
        ),
        width="stretch",
    )
    right.altair_chart(
        charts.share_chart(
            position_a,
            y_title="position-A preference (%)",
            events=events,
            levels=[(50.0, "no position bias (50 %)")],
            colour="#8e44ad",
        ).properties(height=240),
        width="stretch",
    )
elif not ui.unavailable(judged, "Verdicts"):
    ui.empty("No judged pairs yet to draw the judge's consistency over time.")

st.subheader("Judged pairs")
f2, f3 = st.columns(2)
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
# The count and the newest twenty from the API, then one read for the twenty, answers
# included: no paging through every match, and no call per pair.
pairs = ctx.api.get("/v1/judge/pairs", limit=20, **filters)
if ui.unavailable(pairs, "Verdicts"):
    st.stop()
newest = list(pairs.get("newest_ids") or [])
if not newest:
    ui.empty("No judged pairs match these filters.")
    st.stop()
shown_pairs = ctx.api.get("/v1/verdicts", id=newest, include_answers=True, limit=len(newest))
by_id = {v["id"]: v for v in data.items(shown_pairs)}
verdicts = [by_id[verdict_id] for verdict_id in newest if verdict_id in by_id]
st.caption(
    f"The newest {len(newest)} of {pairs.get('matching', len(newest))} matching pairs, newest "
    "first; open a pair for the request, both answers and both orders' verdicts."
)
ui.table(frames.pairs_frame(verdicts))
for position, verdict in enumerate(verdicts):
    label = "SIMULATED · " if verdict.get("simulated") else ""
    with st.expander(
        f"{label}{verdict['segment_value']} · {verdict['request_id']} · "
        f"{frames.verdict_outcome(verdict)}",
        expanded=position == 0,
    ):
        request = verdict.get("request") or {}
        messages = request.get("messages") or []
        if messages:
            last = messages[-1].get("content")
            st.markdown(f"**Request:** {shown(str(last))}")
        left, right = st.columns(2)
        left.markdown(
            f"**Cheaper: {verdict['cheaper_model']}** "
            f"(score {fmt.number(verdict.get('score_cheaper'), 0)}/10)"
        )
        left.text(shown(verdict.get("cheaper_answer") or "(not stored)"))
        right.markdown(
            f"**Stronger: {verdict['stronger_model']}** "
            f"(score {fmt.number(verdict.get('score_stronger'), 0)}/10)"
        )
        right.text(shown(verdict.get("stronger_answer") or "(not stored)"))
        for name in ("order_cheaper_first", "order_stronger_first"):
            order = verdict.get(name)
            if not order:
                st.markdown(f"*{name.replace('_', ' ')}:* not judged yet")
                continue
            st.markdown(
                f"*{name.replace('_', ' ')}:* winner **{order.get('winner')}**, "
                f"A {order.get('score_a')}/10, B {order.get('score_b')}/10 — "
                f"{order.get('rationale') or fmt.NO_VALUE}"
            )
