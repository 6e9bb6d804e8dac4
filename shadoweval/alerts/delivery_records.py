"""Delivery rows after the fact: the API's lists of deliveries and attempts, the per-channel
counts /metrics shows, and the purge of finished rows (wall time: retention is about
storage, not decisions)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, type_coerce
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval import paging
from shadoweval.alerts import channels
from shadoweval.alerts.delivery_models import (
    AlertDelivery,
    AlertDeliveryPage,
    AlertDeliveryPublic,
    DeliveryAttemptPage,
    DeliveryAttemptPublic,
    DeliveryStatus,
)
from shadoweval.alerts.outbox import ATTEMPT_TABLE, DELIVERY_TABLE, OPEN_STATUSES
from shadoweval.config import Settings
from shadoweval.db import UtcDateTime, utcnow
from shadoweval.exceptions import NotFound

log = logging.getLogger(__name__)


# --- retention -----------------------------------------------------------------------------


def purge_finished_deliveries(
    engine: Engine, *, settings: Settings, now: datetime | None = None, batch: int = 1000
) -> int:
    """Delete delivered and failed deliveries created more than `delivery_retention_days`
    ago, with their attempts, in batches (short transactions); returns how many.

    Never sooner than a day past `delivery_max_age_hours`: a retrain event is triggered
    only while no delivery row of it exists, and only within that age, so a purged row
    can never make an event trigger twice. Open deliveries are never touched.
    """
    now = now or utcnow()
    keep = max(
        timedelta(days=settings.delivery_retention_days),
        timedelta(hours=settings.delivery_max_age_hours) + timedelta(days=1),
    )
    cutoff = now - keep
    c, a = DELIVERY_TABLE.c, ATTEMPT_TABLE.c
    total = 0
    while True:
        with engine.begin() as connection:
            ids = list(
                connection.scalars(
                    select(c.id)
                    .where(
                        c.status.in_((DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)),
                        c.created_at < cutoff,
                    )
                    .order_by(c.id)
                    .limit(batch)
                )
            )
            if not ids:
                return total
            # Explicitly: SQLite enforces the ON DELETE CASCADE only with foreign keys on.
            connection.execute(ATTEMPT_TABLE.delete().where(a.delivery_id.in_(ids)))
            connection.execute(DELIVERY_TABLE.delete().where(c.id.in_(ids)))
            total += len(ids)
        log.info("purged %d finished alert deliveries older than %s", len(ids), cutoff)


# --- reading -------------------------------------------------------------------------------


def list_deliveries(
    *,
    session: Session,
    alert_id: int | None = None,
    event_id: int | None = None,
    status: str | None = None,
    channel: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> AlertDeliveryPage:
    """Deliveries newest first, each with its attempts; URLs redacted, no secrets."""
    c = DELIVERY_TABLE.c
    query = select(DELIVERY_TABLE)
    for column, value in (
        (c.alert_id, alert_id),
        (c.event_id, event_id),
        (c.status, status),
        (c.channel, channel),
    ):
        if value is not None:
            query = query.where(column == value)
    if cursor:
        query = query.where(c.id < paging.decode_id(cursor))
    rows = [dict(r._mapping) for r in session.execute(query.order_by(c.id.desc()).limit(limit + 1))]
    page = rows[:limit]
    attempts = _recent_attempts(session, [int(r["id"]) for r in page])
    items = [_public(row, attempts[int(row["id"])]) for row in page]
    next_cursor = paging.encode_id(int(page[-1]["id"])) if len(rows) > limit else None
    return AlertDeliveryPage(items=items, next_cursor=next_cursor)


# A delivery retried for a day has a few hundred attempts: lists show the last few, and
# GET /v1/alert-deliveries/{id}/attempts pages through all of them.
RECENT_ATTEMPTS = 5


def _recent_attempts(
    session: Session, delivery_ids: list[int]
) -> dict[int, list[DeliveryAttemptPublic]]:
    """The last RECENT_ATTEMPTS attempts of each delivery, oldest first."""
    out: dict[int, list[DeliveryAttemptPublic]] = {i: [] for i in delivery_ids}
    if not delivery_ids:
        return out
    a = ATTEMPT_TABLE.c
    rank = (
        func.row_number()
        .over(partition_by=a.delivery_id, order_by=(a.attempt.desc(), a.id.desc()))
        .label("rank")
    )
    ranked = select(ATTEMPT_TABLE, rank).where(a.delivery_id.in_(delivery_ids)).subquery("ranked")
    r = ranked.c
    for attempt in session.execute(
        select(ranked).where(r.rank <= RECENT_ATTEMPTS).order_by(r.delivery_id, r.attempt, r.id)
    ):
        out[int(attempt.delivery_id)].append(DeliveryAttemptPublic.model_validate(attempt._mapping))
    return out


def list_attempts(
    *, session: Session, delivery_id: int, cursor: str | None = None, limit: int = 100
) -> DeliveryAttemptPage:
    """Every attempt of one delivery, newest first; `next_cursor` continues."""
    if session.get(AlertDelivery, delivery_id) is None:
        raise NotFound(f"alert delivery {delivery_id} not found", delivery_id=delivery_id)
    a = ATTEMPT_TABLE.c
    query = select(ATTEMPT_TABLE).where(a.delivery_id == delivery_id)
    if cursor:
        query = query.where(a.id < paging.decode_id(cursor))
    rows = list(session.execute(query.order_by(a.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return DeliveryAttemptPage(
        items=[DeliveryAttemptPublic.model_validate(row._mapping) for row in page],
        next_cursor=paging.encode_id(int(page[-1].id)) if len(rows) > limit else None,
    )


def _public(row: dict[str, Any], attempts: list[DeliveryAttemptPublic]) -> AlertDeliveryPublic:
    open_ = row["status"] in OPEN_STATUSES
    return AlertDeliveryPublic(
        id=row["id"],
        channel=row["channel"],
        channel_name=row["channel_name"],
        url=channels.redact_url(row["url"], row["channel"]),
        status=row["status"],
        kind=row["kind"],
        rule=row["rule"],
        dedup_key=row["dedup_key"],
        alert_id=row["alert_id"],
        event_id=row["event_id"],
        attempt_count=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if open_ else None,
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        failed_at=row["failed_at"],
        last_error=row["last_error"],
        payload=row["payload"],
        attempts=attempts,
    )


def open_counts(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    """Per channel: deliveries not yet delivered, failed ones, and the oldest open one's age."""
    c = DELIVERY_TABLE.c
    is_open = c.status.in_(OPEN_STATUSES)
    oldest_open = type_coerce(func.min(case((is_open, c.created_at))), UtcDateTime())
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                c.channel,
                func.sum(case((is_open, 1), else_=0)),
                func.sum(case((c.status == DeliveryStatus.FAILED, 1), else_=0)),
                oldest_open,
            ).group_by(c.channel)
        ).all()
    return [
        {
            "channel": channel,
            "pending": int(pending or 0),
            "failed": int(failed or 0),
            "oldest_open_age_s": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        }
        for channel, pending, failed, oldest in rows
    ]
