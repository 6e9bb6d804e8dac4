"""Drift service: feature and router-score drift per router and UTC day, stored once per window.

Clock: decision time. A router's day is reported once its own log has moved past it (its
watermark, `clock.py`), so a replayed or backfilled log gets the reports of its
decision days whatever the wall clock says; the wall clock only stamps `created_at`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlmodel import Session

from shadoweval import clock
from shadoweval.analytics.models import DriftReport
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.exceptions import NotFound
from shadoweval.ingest.models import Decision
from shadoweval.sql import table_of

log = logging.getLogger(__name__)
DECISION_TABLE = table_of(Decision)
REPORT_TABLE = table_of(DriftReport)
# Enough rows for a stable distance; more only costs time.
MAX_ROWS_PER_WINDOW = 20_000
# How many completed days before a router's watermark day are reported when missing: a
# replay can move the watermark days ahead between two runs of the hourly job. Older
# history is left alone (each report runs Evidently for seconds).
CATCH_UP_DAYS = 7


class DriftReportPublic(BaseModel):
    id: int
    router: str
    window_start: datetime
    window_end: datetime
    reference_start: datetime
    reference_end: datetime
    status: str
    dataset_drift: bool
    drifted_share: float
    result: dict[str, Any]
    created_at: datetime


def _columns(session: Session, router: str, start: datetime, end: datetime) -> dict[str, list[Any]]:
    rows = session.execute(
        select(DECISION_TABLE.c.features, DECISION_TABLE.c.router_score)
        .where(
            DECISION_TABLE.c.router == router,
            DECISION_TABLE.c.ts >= start,
            DECISION_TABLE.c.ts < end,
        )
        .order_by(DECISION_TABLE.c.id)
        .limit(MAX_ROWS_PER_WINDOW)
    ).all()
    names = sorted({name for features, _ in rows for name in (features or {})})
    columns: dict[str, list[Any]] = {name: [] for name in names}
    columns["router_score"] = []
    for features, score in rows:
        for name in names:
            columns[name].append((features or {}).get(name))
        columns["router_score"].append(score)
    if all(v is None for v in columns["router_score"]):
        del columns["router_score"]
    return columns


def check_drift(
    *, session: Session, router: str, window_start: datetime, window_days: float = 1.0
) -> DriftReport:
    """Drift of [window_start, +window_days) against the window before it; stored once."""
    window_end = window_start + timedelta(days=window_days)
    existing = session.scalars(
        select(DriftReport).where(
            REPORT_TABLE.c.router == router,
            REPORT_TABLE.c.window_start == window_start,
            REPORT_TABLE.c.window_end == window_end,
        )
    ).first()
    if existing is not None:
        return existing
    from shadoweval.stats.drift import feature_drift

    reference_start = window_start - timedelta(days=window_days)
    reference = _columns(session, router, reference_start, window_start)
    current = _columns(session, router, window_start, window_end)
    result = feature_drift(reference, current)
    report = DriftReport(
        router=router,
        window_start=window_start,
        window_end=window_end,
        reference_start=reference_start,
        reference_end=window_start,
        status=result.status,
        dataset_drift=result.dataset_drift,
        drifted_share=result.drifted_share,
        result=result.to_dict(include_html=False),
        report_html=result.report_html,
        created_at=utcnow(),
    )
    session.add(report)
    session.commit()
    log.info(
        "drift report %s %s: %s, %.0f %% of columns drifted",
        router,
        window_start.date(),
        result.status,
        100 * result.drifted_share,
    )
    return report


def _reported(session: Session, router: str, day: datetime) -> bool:
    r = REPORT_TABLE.c
    query = select(r.id).where(r.router == router, r.window_start == day).limit(1)
    return session.execute(query).first() is not None


def _has_traffic(session: Session, router: str, day: datetime) -> bool:
    d = DECISION_TABLE.c
    query = (
        select(d.id).where(d.router == router, d.ts >= day, d.ts < day + timedelta(days=1)).limit(1)
    )
    return session.execute(query).first() is not None


def check_completed_days(
    *, session: Session, settings: Settings, wall_now: datetime | None = None
) -> int:
    """A report per router for each UTC day its log has completed (the `CATCH_UP_DAYS`
    days before its watermark's day) that has traffic and no report yet; how many made.

    `wall_now` only bounds the watermarks (wall clock + the allowed skew, tests)."""
    watermarks = clock.decision_now_by_router(
        session, skew_seconds=settings.decision_clock_skew_seconds, wall_now=wall_now
    )
    made = 0
    for router, now in sorted(watermarks.items()):
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        for back in range(CATCH_UP_DAYS, 0, -1):
            day = today - timedelta(days=back)
            if _reported(session, router, day) or not _has_traffic(session, router, day):
                continue
            check_drift(session=session, router=router, window_start=day)
            made += 1
    return made


def list_reports(
    *, session: Session, router: str | None = None, limit: int = 100
) -> list[DriftReportPublic]:
    query = select(DriftReport).order_by(REPORT_TABLE.c.window_start.desc()).limit(limit)
    if router is not None:
        query = query.where(REPORT_TABLE.c.router == router)
    return [
        DriftReportPublic.model_validate(r, from_attributes=True) for r in session.scalars(query)
    ]


def report_html(*, session: Session, report_id: int) -> str:
    report = session.get(DriftReport, report_id)
    if report is None:
        raise NotFound(f"drift report {report_id} does not exist")
    return report.report_html
