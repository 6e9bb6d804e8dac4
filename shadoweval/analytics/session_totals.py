"""Per-session running totals: the aggregator copies each new decision that carries a
`session_id` into `session_turn` and recomputes the `session_total` rows of every
session it touched, so `GET /v1/sessions` sums a row per (session, served model).

Recomputed, not incremented: a turn's counterfactual depends on the turn before it in
(ts, id) order (`stats/sessions.py`), so a turn that arrives late or out of order
changes its successor's figures. Recomputing a touched session from its turns (a few
narrow rows, by index) gives what a recomputation from scratch gives, in any arrival
order; the same SQL (`analytics.session_sql.session_sums`) computes both.

Watermark: the model watcher's (pool/watcher.py). Ingest transactions commit out of id
order on PostgreSQL, so a pass reads every decision past the watermark, and the highest
id it saw becomes the watermark only `session_totals_settle_seconds` (database clock)
later: a decision is missed only if its ingest transaction stays open that long after
drawing its id. A re-read decision already in `session_turn` is skipped and touches no
session. Each batch (turns and the totals they touch) is one transaction and the
watermark moves after it, never backwards: a crash loses nothing, a repeat adds nothing.

Clock: decision time for every figure (a session's window is its first turn's `ts`); the
database clock only for the settle delay and `updated_at` stamps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, true, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from shadoweval.analytics.session_models import (
    SESSION_SUMS,
    SessionTotal,
    SessionTotalsState,
    SessionTurn,
)
from shadoweval.analytics.session_sql import decision_turns, session_sums
from shadoweval.config import Settings
from shadoweval.db import UtcDateTime
from shadoweval.ingest.models import DECISION_TABLE
from shadoweval.sql import dialect_of, table_of

TURN_TABLE = table_of(SessionTurn)
TOTAL_TABLE = table_of(SessionTotal)
STATE_TABLE = table_of(SessionTotalsState)
WATERMARK_NAME = "session_totals"
TURN_COLUMNS = [column.name for column in TURN_TABLE.columns]
TOTAL_COLUMNS = [
    "router",
    "session_id",
    "served_model",
    "first_ts",
    "first_decision_id",
    "segment_value",
    "first_turn",
    *SESSION_SUMS,
]
# Session ids per statement when recomputing: well inside SQLite's bound-parameter limit.
_SESSIONS_PER_STATEMENT = 2000

SessionKey = tuple[str, str]  # (router, session_id)


@dataclass(frozen=True)
class _Mark:
    watermark: int
    pending_id: int | None
    pending_at: datetime | None


def _database_now(connection: Connection) -> datetime:
    value = connection.execute(select(func.current_timestamp())).scalar_one()
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS" in UTC
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    moment: datetime = value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _read_mark(connection: Connection) -> _Mark:
    c = STATE_TABLE.c
    row = connection.execute(
        select(c.last_decision_id, c.pending_decision_id, c.pending_at).where(
            c.name == WATERMARK_NAME
        )
    ).first()
    if row is None:
        return _Mark(0, None, None)
    return _Mark(int(row[0]), None if row[1] is None else int(row[1]), row[2])


def _next_mark(mark: _Mark, highest: int, clock: datetime, settle: timedelta) -> _Mark:
    """Promote the newest checkpoint that has settled; keep the oldest one that has not
    (replacing it with each pass's fresh one would keep it from ever settling)."""
    watermark, pending_id, pending_at = mark.watermark, None, None
    for checkpoint_id, checkpoint_at in ((mark.pending_id, mark.pending_at), (highest, clock)):
        if checkpoint_id is None or checkpoint_at is None or checkpoint_id <= watermark:
            continue
        if clock - checkpoint_at >= settle:
            watermark = checkpoint_id
        elif pending_id is None:
            pending_id, pending_at = checkpoint_id, checkpoint_at
    return _Mark(watermark, pending_id, pending_at)


def _store_mark(connection: Connection, mark: _Mark, now: datetime) -> None:
    c = STATE_TABLE.c
    connection.execute(
        dialect_of(connection).insert_or_ignore(
            STATE_TABLE,
            {"name": WATERMARK_NAME, "last_decision_id": 0, "updated_at": now},
            conflict_on=["name"],
        )
    )
    # Never backwards: a slower concurrent pass must not undo a faster one's progress.
    connection.execute(
        update(STATE_TABLE)
        .where(c.name == WATERMARK_NAME, c.last_decision_id <= mark.watermark)
        .values(
            last_decision_id=mark.watermark,
            pending_decision_id=mark.pending_id,
            pending_at=mark.pending_at,
            updated_at=now,
        )
    )


def _copy_turns(connection: Connection, low: int, high: int) -> list[SessionKey]:
    """Copy the decisions with low < id ≤ high that carry a session and are not copied yet;
    returns the session of each turn copied."""
    d = DECISION_TABLE.c
    t = TURN_TABLE.c
    statement = (
        dialect_of(connection)
        .insert(TURN_TABLE)
        .from_select(TURN_COLUMNS, decision_turns().where(d.id > low, d.id <= high))
        # A decision read again (the settle window, a repeated pass) is already there: only
        # the turns inserted now come back, and only their sessions are summed again.
        .on_conflict_do_nothing(index_elements=["decision_id"])
        .returning(t.router, t.session_id)
    )
    return [(str(router), str(session)) for router, session in connection.execute(statement)]


def recompute_sessions(
    connection: Connection | Session, keys: Iterable[SessionKey], now: datetime
) -> int:
    """Replace the `session_total` rows of these sessions by the sums of their turns now in
    `session_turn` (none left: the rows go). Returns how many sessions were recomputed."""
    by_router: dict[str, list[str]] = defaultdict(list)
    for router, session_id in sorted(set(keys)):  # one lock order for concurrent passes
        by_router[router].append(session_id)
    t = TURN_TABLE.c
    c = TOTAL_TABLE.c
    insert = dialect_of(connection).insert(TOTAL_TABLE)
    recomputed = 0
    for router, session_ids in by_router.items():
        for start in range(0, len(session_ids), _SESSIONS_PER_STATEMENT):
            chunk = session_ids[start : start + _SESSIONS_PER_STATEMENT]
            connection.execute(
                TOTAL_TABLE.delete().where(c.router == router, c.session_id.in_(chunk))
            )
            turns = select(TURN_TABLE).where(t.router == router, t.session_id.in_(chunk)).subquery()
            sums = session_sums(turns).subquery("sums")
            rows = select(
                *(sums.c[name] for name in TOTAL_COLUMNS),
                literal(now, UtcDateTime()).label("updated_at"),
            ).where(true())  # SQLite: an INSERT … SELECT with ON CONFLICT needs a WHERE
            statement = insert.from_select([*TOTAL_COLUMNS, "updated_at"], rows)
            # Upsert: a concurrent recomputation (retention) may have written a row since.
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["router", "session_id", "served_model"],
                    set_={
                        name: statement.excluded[name]
                        for name in [*TOTAL_COLUMNS[3:], "updated_at"]
                    },
                )
            )
            recomputed += len(chunk)
    return recomputed


def fold_new_decisions(
    engine: Engine, settings: Settings, *, now: datetime | None = None
) -> dict[str, int]:
    """Copy the decisions past the watermark into `session_turn`, in id ranges of
    `session_totals_batch_size`, and recompute the sessions they touch; see the module
    docstring. `now` stands in for the database clock (tests)."""
    d = DECISION_TABLE.c
    settle = timedelta(seconds=settings.session_totals_settle_seconds)
    with engine.connect() as connection:
        clock = now or _database_now(connection)
        mark = _read_mark(connection)
        highest = int(connection.execute(select(func.max(d.id))).scalar() or 0)
    turns = sessions = 0
    low = mark.watermark
    while low < highest:
        high = min(low + settings.session_totals_batch_size, highest)
        with engine.begin() as connection:
            copied = _copy_turns(connection, low, high)
            sessions += recompute_sessions(connection, copied, clock)
        turns += len(copied)
        low = high
    with engine.begin() as connection:
        _store_mark(connection, _next_mark(mark, highest, clock, settle), clock)
    return {"session_turns_copied": turns, "sessions_recomputed": sessions}


def forget_decisions(session: Session, decision_ids: Any) -> set[SessionKey]:
    """Delete the turns of the selected decisions (a subquery of ids) and return their
    sessions, to sum again (`recompute_sessions`) once the decisions are gone.

    Explicit, not left to the foreign key's cascade alone: a partitioned decision log has
    no foreign keys into it."""
    t = TURN_TABLE.c
    rows = session.execute(
        select(t.router, t.session_id).where(t.decision_id.in_(decision_ids)).distinct()
    )
    sessions = {(str(router), str(session_id)) for router, session_id in rows}
    session.execute(TURN_TABLE.delete().where(t.decision_id.in_(decision_ids)))
    return sessions


def rebuild_session_totals(engine: Engine, *, now: datetime | None = None) -> int:
    """Recompute every session's totals from scratch from the decision log (repair, and
    the reference the incremental totals are tested against). Leaves the watermark alone:
    the turns it copies are the ones a later pass would skip. Returns the sessions."""
    with engine.begin() as connection:
        clock = now or _database_now(connection)
        connection.execute(TOTAL_TABLE.delete())
        connection.execute(TURN_TABLE.delete())
        connection.execute(TURN_TABLE.insert().from_select(TURN_COLUMNS, decision_turns()))
        sums = session_sums(TURN_TABLE).subquery("sums")
        rows = select(
            *(sums.c[name] for name in TOTAL_COLUMNS),
            literal(clock, UtcDateTime()).label("updated_at"),
        )
        connection.execute(TOTAL_TABLE.insert().from_select([*TOTAL_COLUMNS, "updated_at"], rows))
        return int(
            connection.scalar(
                select(func.count()).select_from(
                    select(TOTAL_TABLE.c.router, TOTAL_TABLE.c.session_id).distinct().subquery()
                )
            )
            or 0
        )
