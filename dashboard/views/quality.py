"""Where is quality lost? Per-segment harm and missed savings, coverage, the sequential test."""

from __future__ import annotations

import pandas as pd  # type: ignore[import-untyped]
import streamlit as st
from shadoweval.dashboard import charts, data, ui

st.title("Where is quality lost?")
ctx = ui.context()
rows = ctx.api.get("/v1/segments", router=ctx.router, since=ctx.since, expected=True)
if ui.unavailable(rows, "Segments"):
    st.stop()
table = charts.segments_table(rows)
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
        + charts.rate_with_interval(
            {
                "estimate": row["rate"],
                "ci_low": row["95 % CI low"],
                "ci_high": row["95 % CI high"],
                "n": row["labels (n)"],
            }
        )
        + f"; {charts.pct(row['share of traffic labelled'])} of {row['decisions']} decisions "
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
    parts = [f"judge-only {charts.rate_with_interval(row['rate'])}"]
    if ppi.get("estimate") is not None:
        parts.append(
            "human-corrected "
            + charts.rate_with_interval({**ppi, "n": ppi.get("human_labels")})
            + f" (worth {charts.number(ppi.get('effective_human_labels'), 0)} human labels)"
        )
    if expected.get("estimate") is not None:
        parts.append(
            "expected " + charts.rate_with_interval({**expected, "n": expected.get("decisions")})
        )
    st.markdown(f"**{row['segment']}** — " + "; ".join(parts))
shown = table.copy()
for column in ("rate", "95 % CI low", "95 % CI high", "share of traffic labelled"):
    shown[column] = shown[column].map(lambda v: charts.pct(None if pd.isna(v) else v))
st.dataframe(shown, hide_index=True, width="stretch")

st.subheader("One segment over decision time")
segments = sorted(table["segment"].unique())
ui.linked("quality_segment", "segment", segments)
segment = st.selectbox("Segment", segments, key="quality_segment")
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
    frame = pd.DataFrame.from_records(rows_v)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame = frame.set_index("ts").sort_index()
    per_bucket = frame["strong_needed"].resample("10min").agg(["mean", "count"]).dropna()
    per_bucket = per_bucket.rename(columns={"mean": "harm rate", "count": "labels"}).reset_index()
    events = charts.events_frame(data.items(ctx.api.get("/v1/events")))
    st.caption(
        "Unweighted share of harmful pairs per 10 minutes of decision time "
        "(labels per point in the tooltip)."
    )
    st.altair_chart(
        charts.series_with_events(
            per_bucket, x="ts", y="harm rate", y_title="harm rate (share)", events=events
        ),
        width="stretch",
    )
