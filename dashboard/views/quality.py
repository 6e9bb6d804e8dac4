"""Where is quality lost? Per-segment harm and missed savings, coverage, the sequential test."""

from __future__ import annotations

import pandas as pd  # type: ignore[import-untyped]
import streamlit as st
from shadoweval.dashboard import charts, data, frames, routing_frames, ui
from shadoweval.dashboard import formatting as fmt

from shadoweval.config import Settings

st.title("Where is quality lost?")
ctx = ui.context()
rows = ctx.api.segments(router=ctx.router, since=ctx.since, expected=True)
if ui.unavailable(rows, "Segments"):
    st.stop()
table = frames.segments_table(rows)
if table.empty:
    ui.empty(
        "No judged pairs yet. Harm rates appear once sampled decisions have been re-run on the "
        "other tier and judged."
    )
    st.stop()

st.caption(
    "Harm rate: share of cheap-routed traffic where the strong answer wins in both orders. "
    "Missed savings: share of strong-routed traffic where the cheap answer was acceptable. "
    "Weighted by 1/π, 95 % intervals; sorted by risk (upper bound) within each measure. "
    "Intervals are process-level: they bound the segment's rate on its traffic, so even "
    "where every decision is sampled (π = 1) they have a width."
)
for _, row in table[table["measure"] == "harm rate"].iterrows():
    st.markdown(
        f"**{row['segment']}** — harm rate "
        + fmt.rate_with_interval(
            {
                "estimate": row["rate"],
                "ci_low": row["95 % CI low"],
                "ci_high": row["95 % CI high"],
                "n": row["labels (n)"],
            }
        )
        + f"; {fmt.pct(row['share of traffic labelled'])} of {row['decisions']} decisions "
        f"labelled; sequential test: {row['sequential test']}"
    )
st.subheader("Three estimates of harm")
st.caption(
    "Judge-only: the judge's labels. Human-corrected (PPI): every judge label, debiased by "
    "the human labels of the uniform review sample. Expected: the router score recalibrated "
    "on labels, averaged over every cheap-routed decision (needs no new labels)."
)
for row in rows:
    if row.get("direction") != "forward":
        continue
    ppi, expected = row.get("ppi") or {}, row.get("expected") or {}
    parts = [f"judge-only {fmt.rate_with_interval(row['rate'])}"]
    if ppi.get("estimate") is not None:
        parts.append(
            "human-corrected "
            + fmt.rate_with_interval({**ppi, "n": ppi.get("human_labels")})
            + f" (worth {fmt.number(ppi.get('effective_human_labels'), 0)} human labels)"
        )
    if expected.get("estimate") is not None:
        parts.append(
            "expected " + fmt.rate_with_interval({**expected, "n": expected.get("decisions")})
        )
    st.markdown(f"**{row['segment']}** — " + "; ".join(parts))
shown = table.copy()
for column in ("rate", "95 % CI low", "95 % CI high", "share of traffic labelled"):
    shown[column] = shown[column].map(lambda v: fmt.pct(None if pd.isna(v) else v))
# The router is the sidebar's and each segment's test is in its line above: the rest fits.
ui.table(
    shown.drop(columns=["router", "sequential test"]).rename(
        columns={"rate": "rate (%)", "share of traffic labelled": "labelled (%)"}
    )
)

st.subheader("One segment over decision time")
# Riskiest first (the table's order: harm rate by the upper bound of its interval), so the
# page opens on the alarmed segment, else the one most likely to be losing quality.
# A segment whose detector alarmed leads whatever its interval.
ranked = table.assign(_alarm=~table["sequential test"].str.startswith("ALARM")).sort_values(
    ["_alarm", "measure"], kind="stable"
)
segments = list(dict.fromkeys(ranked["segment"]))
ui.linked("quality_segment", "segment", segments)
segment = st.selectbox(
    "Segment (riskiest first)", segments, key="quality_segment", index=0 if segments else None
)
verdicts = ctx.api.list_all(
    "/v1/verdicts",
    max_items=5000,
    router=ctx.router,
    segment=segment,
    since=ctx.since,
    status="done",
    direction="forward",
)
rows_v = verdicts if isinstance(verdicts, list) else []
if not rows_v:
    ui.empty(f"No judged cheap-routed pairs in {segment} yet.")
else:
    state = next(
        (
            r.get("sequential")
            for r in rows
            if r.get("segment") == segment and r.get("direction") == "forward"
        ),
        None,
    )
    settings = Settings()
    lines = frames.detector_lines(
        state, min_rise=max(0.0, settings.harm_alert_rate - settings.harm_baseline)
    )
    levels = []
    if lines is not None and lines.baseline is not None:
        levels.append(
            (
                100 * lines.baseline,
                f"baseline {fmt.pct(lines.baseline)} ({lines.baseline_labels} labels)",
            )
        )
    if lines is not None and lines.alarm is not None:
        levels.append(
            (
                100 * lines.alarm,
                f"alarm line {fmt.pct(lines.alarm)} (over {lines.alarm_labels} labels)",
            )
        )
    if lines is not None and lines.alarm is None:
        st.caption(
            f"No alarm line yet: even {lines.alarm_labels} harmful labels in a row would not "
            f"fire the detector against a baseline of only {lines.baseline_labels} labels."
        )
    events = pd.concat(
        [
            frames.events_frame(
                e
                for e in data.items(ctx.api.events(router=ctx.router, since=ctx.since))
                if e.get("kind") in ("model_change", "judge_changed")
                and e.get("router") in (None, ctx.router)
            ),
            frames.detector_events(state),
        ],
        ignore_index=True,
    )
    series = routing_frames.share_series(
        [v["ts"] for v in rows_v], [v.get("strong_needed") == 1 for v in rows_v]
    )
    st.caption(
        "Share of harmful cheap-routed pairs per 10 minutes of decision time, unweighted, "
        "with its 95 % interval. Baseline: the detector's harm rate before its estimated "
        "change point. Alarm line: the harm rate over the detector's post-change labels (or "
        "the next 50, while it sees no rise) at which it fires against that baseline. Dashed "
        "red rules: model and judge changes, the estimated change point, the alarm."
    )
    st.altair_chart(
        charts.share_chart(
            series, y_title="harm rate (% of judged pairs, 95 % CI)", events=events, levels=levels
        ),
        width="stretch",
    )
