"""What the alert routes call: reads, acknowledge and silence; and the gauges of /metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import func, select
from sqlmodel import Session

from shadoweval import paging
from shadoweval.alerts.lifecycle import EvaluationResult, _resolve
from shadoweval.alerts.models import (
    Alert,
    AlertPage,
    AlertPublic,
)
from shadoweval.alerts.tables import ALERT_TABLE
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.exceptions import InvalidRequest, NotFound


def _public(alert: Alert) -> AlertPublic:
    return AlertPublic.model_validate(alert, from_attributes=True)


def list_alerts(
    *,
    session: Session,
    state: str = "all",
    router: str | None = None,
    segment: str | None = None,
    rule: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> AlertPage:
    """Newest first; `next_cursor` continues the listing."""
    a = ALERT_TABLE.c
    query = select(Alert).order_by(a.id.desc()).limit(limit + 1)
    if state != "all":
        query = query.where(a.state == state)
    for column, value in ((a.router, router), (a.segment, segment), (a.rule, rule)):
        if value is not None:
            query = query.where(column == value)
    if cursor is not None:
        query = query.where(a.id < paging.decode_id(cursor))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPage(
        items=[_public(row) for row in rows],
        next_cursor=paging.encode_id(cast(int, rows[-1].id)) if more and rows else None,
    )


def _get(session: Session, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id} not found", alert_id=alert_id)
    return alert


def get_alert(*, session: Session, alert_id: int) -> AlertPublic:
    return _public(_get(session, alert_id))


def acknowledge(
    *,
    session: Session,
    settings: Settings,
    alert_id: int,
    by: str | None,
    now: datetime | None = None,
) -> AlertPublic:
    """Stops reminders for the episode. A `router_stale` alert is cleared by it (DESIGN.md,
    Model changes), and says so to the receivers that were told it fired."""
    now = now or utcnow()
    alert = _get(session, alert_id)
    if alert.acknowledged_at is None:
        alert.acknowledged_at = now
        alert.acknowledged_by = by
        alert.updated_at = now
    session.add(alert)
    if alert.kind == "router_stale" and alert.state == "firing":
        _resolve(
            session,
            settings,
            alert,
            "acknowledged",
            now,
            alert.last_notified_at is not None,
            EvaluationResult(),
        )
    session.commit()
    return _public(alert)


def silence(
    *,
    session: Session,
    alert_id: int,
    minutes: int | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> AlertPublic:
    """No notification for the alert (and later episodes of its key) until `until`."""
    now = now or utcnow()
    end = until if until is not None else now + timedelta(minutes=minutes or 0)
    if end <= now:
        raise InvalidRequest("`until` must be in the future", field="until")
    alert = _get(session, alert_id)
    alert.silenced_until = end
    alert.updated_at = now
    session.add(alert)
    session.commit()
    return _public(alert)


# --- gauges for /metrics ----------------------------------------------------------------------


def firing_counts(session: Session) -> list[tuple[str, str, str, int]]:
    """(rule, severity, level, firing alerts) for /metrics."""
    a = ALERT_TABLE.c
    rows = session.execute(
        select(a.rule, a.severity, a.level, func.count())
        .where(a.state == "firing")
        .group_by(a.rule, a.severity, a.level)
    ).all()
    return [(rule, severity, level, int(n)) for rule, severity, level, n in rows]


def firing_alerts(session: Session) -> list[Alert]:
    return list(session.scalars(select(Alert).where(ALERT_TABLE.c.state == "firing").limit(1000)))
