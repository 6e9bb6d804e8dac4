"""The weighted (Hájek) harm rate of forward pairs from the verdict window snapshots.

One reduction for every place that shows "the harm rate": `/metrics`
(`shadoweval_harm_rate`) and the `quality_drop` alert, so on-call reads the same
number, with the same 95 % interval, as the hour-resolution rows of `/v1/segments`
for the same hours (labels weighted by 1/π, never a plain share of labels).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from shadoweval.analytics.models import VerdictWindowSnapshot
from shadoweval.stats.rates import RateEstimate, WeightedSums, hajek_rate_from_sums

SNAPSHOT_TABLE = cast(Table, VerdictWindowSnapshot.__table__)  # type: ignore[attr-defined]

HarmKey = tuple[str, str, str]  # router, segment value, judge key


def harm_rates(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    router: str | None = None,
    segment: str | None = None,
    judge_key: str | None = None,
) -> dict[HarmKey, RateEstimate]:
    """Per (router, segment, judge): the Hájek harm rate of the hour windows starting in
    [since, until), forward pairs only (the cheap tier's answer against the strong one's)."""
    s = SNAPSHOT_TABLE.c
    query = (
        select(
            s.router,
            s.segment_value,
            s.judge_key,
            func.sum(s.labels),
            func.sum(s.sum_w),
            func.sum(s.sum_w2),
            func.sum(s.sum_wy),
            func.sum(s.sum_vw),
            func.sum(s.sum_vwy),
        )
        .where(s.window == "hour", s.direction == "forward")
        .group_by(s.router, s.segment_value, s.judge_key)
    )
    for column, value in ((s.router, router), (s.segment_value, segment), (s.judge_key, judge_key)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(s.window_start >= since)
    if until is not None:
        query = query.where(s.window_start < until)
    out: dict[HarmKey, RateEstimate] = {}
    for key_router, key_segment, key_judge, labels, w, w2, wy, vw, vwy in session.execute(query):
        sums = WeightedSums(
            int(labels or 0),
            float(w or 0),
            float(w2 or 0),
            float(wy or 0),
            float(vw or 0),
            float(vwy or 0),
            float(vwy or 0),  # Σv·y² = Σv·y for 0/1 labels
        )
        out[(key_router, key_segment, key_judge)] = hajek_rate_from_sums(sums)
    return out


def first_hour_with_labels_after(
    session: Session, *, router: str, segment: str, judge_key: str, skip: int
) -> datetime | None:
    """The start of the hour window holding the (skip+1)-th forward label of a segment,
    in decision time: where the sequential test's monitoring began after its `skip`
    reference labels. None while there are not that many labels."""
    s = SNAPSHOT_TABLE.c
    rows = session.execute(
        select(s.window_start, s.labels)
        .where(
            s.window == "hour",
            s.direction == "forward",
            s.router == router,
            s.segment_value == segment,
            s.judge_key == judge_key,
            s.labels > 0,
        )
        .order_by(s.window_start)
    )
    seen = 0
    for window_start, labels in rows:
        seen += int(labels)
        if seen > skip:
            return cast(datetime, window_start)
    return None
