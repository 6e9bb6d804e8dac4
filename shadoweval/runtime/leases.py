"""Claiming and finishing leased work items, on PostgreSQL and SQLite alike.

A work item is a row with `status`, `lease_owner`, `lease_until`, `attempts` and
`next_attempt_at`. A worker claims due `queued` rows, or `running` rows whose
lease expired (their worker died), in one UPDATE … RETURNING statement:
PostgreSQL picks the rows with `FOR UPDATE SKIP LOCKED`, so concurrent workers
never wait on or take each other's rows; SQLite runs the single statement under
its database write lock, which gives the same exclusivity. Finishing an item is
conditional on still owning its lease, so a worker whose lease was taken over
cannot record a result twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.providers.base import ProviderError
from shadoweval.retry import backoff_ceiling
from shadoweval.sql import dialect_of

QUEUED, RUNNING = "queued", "running"


def claim(
    engine: Engine,
    table: Table,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    now: datetime,
    where: ColumnElement[bool] | None = None,
) -> list[int]:
    """Claim up to `limit` due items for `owner`; returns their ids (committed). `where`
    narrows the due items (a gate's own run, for the CLI that works only that run)."""
    columns = table.c
    due = or_(
        and_(columns.status == QUEUED, columns.next_attempt_at <= now),
        and_(columns.status == RUNNING, columns.lease_until < now),
    )
    return claim_rows(
        engine,
        table,
        where=due if where is None else and_(where, due),
        order_by=(columns.next_attempt_at, columns.id),
        limit=limit,
        values={
            "status": RUNNING,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "attempts": columns.attempts + 1,
        },
    )


def claim_rows(
    engine: Engine,
    table: Table,
    *,
    where: ColumnElement[bool],
    order_by: tuple[Any, ...],
    limit: int,
    values: Mapping[str, Any],
) -> list[int]:
    """Set `values` on up to `limit` rows matching `where`, taken in `order_by` order and
    skipping rows another transaction holds; their ids (committed). The building block of
    `claim`, for leased rows whose columns differ from a work item's (provider batches)."""
    columns = table.c
    candidates = select(columns.id).where(where).order_by(*order_by).limit(limit)
    candidates = dialect_of(engine).claim(candidates)
    statement = (
        update(table)
        .where(columns.id.in_(candidates.scalar_subquery()))
        .values(**values)
        .returning(columns.id)
    )
    # A fresh connection whose first statement is the UPDATE: on SQLite a transaction
    # that read first could not upgrade to a write without risking SQLITE_BUSY.
    with engine.begin() as connection:
        return sorted(row[0] for row in connection.execute(statement))


def finish(
    engine: Engine,
    table: Table,
    *,
    item_id: int,
    owner: str,
    values: Mapping[str, Any],
) -> bool:
    """Write `values` to an item this worker still holds; False when the lease was lost."""
    with engine.begin() as connection:
        return _finish(connection, table, item_id=item_id, owner=owner, values=values)


def _finish(
    connection: Any, table: Table, *, item_id: int, owner: str, values: Mapping[str, Any]
) -> bool:
    columns = table.c
    result = connection.execute(
        update(table)
        .where(columns.id == item_id, columns.lease_owner == owner, columns.status == RUNNING)
        .values(**values)
    )
    return bool(result.rowcount == 1)


def release_for_retry(
    engine: Engine,
    table: Table,
    *,
    item_id: int,
    owner: str,
    retry_at: datetime,
    values: Mapping[str, Any] | None = None,
) -> bool:
    """Give an item back to the queue, due again at `retry_at`."""
    return finish(
        engine,
        table,
        item_id=item_id,
        owner=owner,
        values={
            "status": QUEUED,
            "lease_owner": None,
            "lease_until": None,
            "next_attempt_at": retry_at,
            **(values or {}),
        },
    )


def retry_delay_seconds(attempts: int, base_seconds: float, max_seconds: float) -> float:
    """Exponential backoff between attempts of one work item: base · 2^(attempts−1), capped
    (no jitter: the next attempt is a row's `next_attempt_at`, claimed by whichever worker)."""
    return backoff_ceiling(attempts, base_seconds=base_seconds, max_seconds=max_seconds)


def next_retry(
    error: ProviderError, *, attempts: int, settings: Settings, now: datetime
) -> datetime | None:
    """When an item whose provider call failed should run again; None when it has had its
    chances (or the failure is not one a later attempt could cure)."""
    if not error.worth_requeueing or attempts >= settings.work_max_attempts:
        return None
    delay = max(
        retry_delay_seconds(attempts, settings.work_retry_base_s, settings.work_retry_max_s),
        error.retry_after_s or 0.0,
    )
    return now + timedelta(seconds=delay)


async def claim_and_process(
    engine: Engine,
    table: Table,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    handle: Callable[[int], Awaitable[str]],
) -> dict[str, int]:
    """Claim up to `limit` due items and handle them concurrently; counts per resulting status.

    Concurrency is bounded by the providers the handlers call, not here.
    """
    ids = await asyncio.to_thread(
        claim, engine, table, owner=owner, limit=limit, lease_seconds=lease_seconds, now=utcnow()
    )
    counts: dict[str, int] = {}
    for status in await asyncio.gather(*(handle(item_id) for item_id in ids)):
        counts[status] = counts.get(status, 0) + 1
    return counts
