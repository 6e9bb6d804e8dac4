"""Recording events exactly once per (kind, dedup key)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shadoweval.db import utcnow
from shadoweval.events.models import Event, EventKind, EventPublic
from shadoweval.sql import dialect_of, table_of

log = logging.getLogger(__name__)
EVENT_TABLE = table_of(Event)


def record_event(
    connection: Connection | Session,
    *,
    kind: EventKind,
    dedup_key: str,
    ts: datetime,
    router: str | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Insert the event unless one with the same (kind, dedup_key) exists; True when new."""
    insert = dialect_of(connection).insert
    result = connection.execute(
        insert(EVENT_TABLE)
        .values(
            kind=kind,
            dedup_key=dedup_key,
            ts=ts,
            created_at=utcnow(),
            router=router,
            details=details or {},
        )
        .on_conflict_do_nothing(index_elements=["kind", "dedup_key"])
        .returning(EVENT_TABLE.c.id)
    )
    new = result.first() is not None
    if new:
        log.warning("event %s %s (router %s): %s", kind, dedup_key, router or "-", details or {})
    return new


def list_events(
    *, session: Session, kind: str | None = None, since: datetime | None = None, limit: int = 200
) -> list[EventPublic]:
    query = select(Event).order_by(EVENT_TABLE.c.ts.desc(), EVENT_TABLE.c.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(EVENT_TABLE.c.kind == kind)
    if since is not None:
        query = query.where(EVENT_TABLE.c.ts >= since)
    return [EventPublic.model_validate(e, from_attributes=True) for e in session.scalars(query)]
