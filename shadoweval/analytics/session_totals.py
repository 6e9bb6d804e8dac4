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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, true
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
from shadoweval.runtime import watermarks
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
        clock = now or watermarks.database_now(connection)
        mark = watermarks.read_mark(connection, STATE_TABLE, WATERMARK_NAME)
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
        watermarks.store_mark(
            connection,
            STATE_TABLE,
            WATERMARK_NAME,
            watermarks.next_mark(mark, highest, clock, settle),
            clock,
        )
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
        clock = now or watermarks.database_now(connection)
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
