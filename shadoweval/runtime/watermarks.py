"""A settling watermark over decision ids, for passes that read the decision log in id order.

Ingest transactions commit out of id order on PostgreSQL, so a pass that moved its
watermark straight to the highest id it read could skip a lower id still uncommitted.
Instead each pass records a checkpoint (the highest id it saw, at the database clock);
a checkpoint becomes the watermark only once `settle` has passed since, and every pass
reads again from the watermark (idempotently). A decision is missed only if its ingest
transaction is still open that long after it drew its id. Used by the model watcher
(`pool/watcher.py`) and the session totals (`analytics/session_totals.py`), each with its
own state table of the same columns (name, last_decision_id, pending_decision_id,
pending_at, updated_at).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shadoweval.sql import dialect_of

Bind = Connection | Session


@dataclass(frozen=True)
class Mark:
    watermark: int
    pending_id: int | None
    pending_at: datetime | None


def database_now(bind: Bind) -> datetime:
    """The database's clock (the one checkpoints are compared on), as an aware UTC time."""
    value: Any = bind.execute(select(func.current_timestamp())).scalar_one()
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS" in UTC
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    moment: datetime = value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_mark(bind: Bind, table: Table, name: str) -> Mark:
    c = table.c
    row = bind.execute(
        select(c.last_decision_id, c.pending_decision_id, c.pending_at).where(c.name == name)
    ).first()
    if row is None:
        return Mark(0, None, None)
    return Mark(int(row[0]), None if row[1] is None else int(row[1]), row[2])


def next_mark(mark: Mark, highest: int, clock: datetime, settle: timedelta) -> Mark:
    """Promote the newest checkpoint that has settled; keep the oldest one that has not
    (replacing it with each pass's fresh one would keep it from ever settling).

    A checkpoint (id, t) says: every id up to `id` had drawn its id by t. Once `settle`
    has passed since t, those still uncommitted have been open that long."""
    watermark, pending_id, pending_at = mark.watermark, None, None
    for checkpoint_id, checkpoint_at in ((mark.pending_id, mark.pending_at), (highest, clock)):
        if checkpoint_id is None or checkpoint_at is None or checkpoint_id <= watermark:
            continue
        if clock - checkpoint_at >= settle:
            watermark = checkpoint_id
        elif pending_id is None:
            pending_id, pending_at = checkpoint_id, checkpoint_at
    return Mark(watermark, pending_id, pending_at)


def store_mark(bind: Bind, table: Table, name: str, mark: Mark, now: datetime) -> None:
    c = table.c
    bind.execute(
        dialect_of(bind).insert_or_ignore(
            table, {"name": name, "last_decision_id": 0, "updated_at": now}, conflict_on=["name"]
        )
    )
    # Never backwards: a slower concurrent pass must not undo a faster one's progress.
    bind.execute(
        update(table)
        .where(c.name == name, c.last_decision_id <= mark.watermark)
        .values(
            last_decision_id=mark.watermark,
            pending_decision_id=mark.pending_id,
            pending_at=mark.pending_at,
            updated_at=now,
        )
    )
