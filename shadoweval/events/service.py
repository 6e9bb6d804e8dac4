"""Recording events exactly once per (kind, dedup key)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shadoweval import paging
from shadoweval.db import utcnow
from shadoweval.events.models import Event, EventKind, EventPage, EventPublic
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
    *,
    session: Session,
    kind: str | None = None,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 200,
) -> list[EventPublic]:
    """Events newest first, in (ts, id) order, filtered by kind, router and decision time."""
    return list_events_page(
        session=session,
        kind=kind,
        router=router,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    ).items


def list_events_page(
    *,
    session: Session,
    kind: str | None = None,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 200,
) -> EventPage:
    """One page of `list_events`; its `next_cursor` is the (ts, id) of its last event."""
    c = EVENT_TABLE.c
    query = select(Event).order_by(c.ts.desc(), c.id.desc()).limit(limit + 1)
    for column, value in ((c.kind, kind), (c.router, router)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    if cursor:
        key = paging.decode_keyset(cursor)
        query = query.where(or_(c.ts < key.ts, and_(c.ts == key.ts, c.id < key.id)))
    rows = list(session.scalars(query))
    page = [EventPublic.model_validate(e, from_attributes=True) for e in rows[:limit]]
    more = len(rows) > limit and page
    return EventPage(
        items=page,
        next_cursor=paging.encode_keyset(page[-1].ts, page[-1].id) if more else None,
    )
