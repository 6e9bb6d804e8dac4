"""Retention: deleting decisions with everything derived from them, and purging payloads.

This module sits above the stages (after Phoenix's `server/retention.py`): it may read
every stage's tables, and only the routes and jobs that delete call it, so no stage
depends on another stage to forget something. It owns every table with request content:

| table | goes how |
|---|---|
| `decision` | deleted here |
| `decision_payload`, `shadow_run`, `verdict`, `gate_item` | ON DELETE CASCADE from `decision` |
| `review_assignment`, `review_label` | ON DELETE CASCADE from `verdict` |
| `feedback` | deleted here: keyed by (router, request_id), no foreign key |
| `session_turn` | deleted here (and ON DELETE CASCADE from `decision`) |
| `session_total` | sums of session turns: their sessions are summed again here, without them |

SQLite enforces the foreign keys (through `PRAGMA foreign_keys=ON`, set on every connection
in `db.py`). PostgreSQL's partitioned log (migration 0023) has none to `decision`: what
the cascades did is deleted here, with the decisions' idempotency keys (`decision_key`),
and whole days past `decision_retention_days` are dropped a partition at a time
(`drop_expired_days`). A payload-only deletion or purge keeps the decision, so it
deletes `decision_payload` rows and blanks the answers kept beside them explicitly.
Window snapshots keep their counts: they hold sums, no request content.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, bindparam, func, select, text, tuple_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from shadoweval.analytics import session_totals
from shadoweval.analytics.session_models import SessionTurn
from shadoweval.clock import deployment_now
from shadoweval.db import utcnow
from shadoweval.exceptions import InvalidRequest
from shadoweval.feedback.models import Feedback
from shadoweval.gate.models import FINISHED_GATE_STATUSES, GateItem
from shadoweval.ingest.models import AWAITING_PLAN, DECISION_TABLE, PAYLOAD_TABLE
from shadoweval.ingest.partitions import (
    DECISION_KEY,
    DECISION_KEY_TABLE,
    DEFAULT_PARTITION,
    day_partitions,
    day_start,
    is_partitioned,
)
from shadoweval.judge.models import OPEN_VERDICT_STATUSES, Verdict
from shadoweval.shadow.models import ShadowRun, WorkStatus
from shadoweval.sql import table_of

log = logging.getLogger(__name__)

FEEDBACK_TABLE = table_of(Feedback)
GATE_ITEM_TABLE = table_of(GateItem)
SHADOW_RUN_TABLE = table_of(ShadowRun)
VERDICT_TABLE = table_of(Verdict)
SESSION_TURN_TABLE = table_of(SessionTurn)


class DeletionResult(BaseModel):
    decisions: int
    payloads: int
    shadow_runs: int
    verdicts: int
    feedback: int = 0
    gate_items: int = 0


def _selection(
    router: str | None, request_id: str | None, segment: str | None
) -> ColumnElement[bool]:
    columns = DECISION_TABLE.c
    conditions = [
        column == value
        for column, value in (
            (columns.router, router),
            (columns.request_id, request_id),
            (columns.segment_value, segment),
        )
        if value is not None
    ]
    if not conditions:
        raise InvalidRequest("name what to delete: router, request_id and/or segment")
    return and_(*conditions)


def delete_decisions(
    *,
    session: Session,
    router: str | None = None,
    request_id: str | None = None,
    segment: str | None = None,
    payloads_only: bool = False,
) -> DeletionResult:
    """Delete decisions (with their payloads, shadow runs, verdicts, gate items, human
    feedback and review labels), or only their payloads (request and every answer text).
    """
    selected = _selection(router, request_id, segment)
    ids = select(DECISION_TABLE.c.id).where(selected)
    # Counted before deleting: a cascade reports no row counts of its own.
    counted = {
        name: int(session.scalar(select(func.count()).where(column.in_(ids))) or 0)
        for name, column in (
            ("decisions", DECISION_TABLE.c.id),
            ("payloads", PAYLOAD_TABLE.c.decision_id),
            ("shadow_runs", SHADOW_RUN_TABLE.c.decision_id),
            ("verdicts", VERDICT_TABLE.c.decision_id),
            ("gate_items", GATE_ITEM_TABLE.c.decision_id),
        )
    }
    if payloads_only:
        _delete_payloads(session, ids)
        session.commit()
        return DeletionResult(decisions=0, payloads=counted["payloads"], shadow_runs=0, verdicts=0)
    # Feedback has no foreign key; it goes first, while the decisions still name the
    # request ids a segment selects.
    counted["feedback"] = _delete_feedback(
        session, router=router, request_id=request_id, segment=segment
    )
    sessions = session_totals.forget_decisions(session, ids)
    if is_partitioned(session):
        _delete_dependents(session, ids)
    # Payloads, shadow runs, verdicts (and their review rows) and gate items cascade; the
    # sessions the decisions were turns of are summed again without them.
    session.execute(DECISION_TABLE.delete().where(DECISION_TABLE.c.id.in_(ids)))
    session_totals.recompute_sessions(session, sessions, utcnow())
    session.commit()
    log.warning(
        "deleted decisions (router=%s request_id=%s segment=%s): %s",
        router,
        request_id,
        segment,
        counted,
    )
    return DeletionResult(**counted)


def _delete_dependents(session: Session, ids: Any) -> None:
    """What the foreign keys' cascades delete where there are none (the partitioned log,
    migration 0023), and the decisions' idempotency keys: a deleted decision posted again
    is stored again, as on a database with the unique key on `decision`."""
    for column in (
        PAYLOAD_TABLE.c.decision_id,
        SHADOW_RUN_TABLE.c.decision_id,
        VERDICT_TABLE.c.decision_id,  # review rows cascade from the verdict
        GATE_ITEM_TABLE.c.decision_id,
        SESSION_TURN_TABLE.c.decision_id,
    ):
        session.execute(column.table.delete().where(column.in_(ids)))
    d, k = DECISION_TABLE.c, DECISION_KEY.c
    session.execute(
        DECISION_KEY.delete().where(
            tuple_(k.router, k.request_id).in_(select(d.router, d.request_id).where(d.id.in_(ids)))
        )
    )


def _delete_feedback(
    session: Session, *, router: str | None, request_id: str | None, segment: str | None
) -> int:
    """Delete the human feedback on the selected decisions, per router; returns how many.

    With a segment, only feedback on logged decisions of that segment goes (feedback on a
    decision never logged has no segment and stays); by request id or router alone,
    feedback goes whether or not its decision was logged.
    """
    d = DECISION_TABLE.c
    routers = set(
        session.scalars(select(d.router).where(_selection(router, request_id, segment)).distinct())
    )
    if router is not None:
        routers.add(router)
    deleted = 0
    for name in sorted(routers):
        statement = FEEDBACK_TABLE.delete().where(FEEDBACK_TABLE.c.router == name)
        if segment is not None:
            chosen = _selection(name, request_id, segment)
            statement = statement.where(
                FEEDBACK_TABLE.c.request_id.in_(select(d.request_id).where(chosen))
            )
        elif request_id is not None:
            statement = statement.where(FEEDBACK_TABLE.c.request_id == request_id)
        result: Any = session.execute(statement)
        deleted += int(result.rowcount or 0)
    return deleted


def _delete_payloads(connection: Connection | Session, decision_ids: Any) -> None:
    """Delete the stored request/response of decisions that stay, and blank the answer
    texts kept beside them (shadow runs' and gate replays'): those are payload too."""
    connection.execute(PAYLOAD_TABLE.delete().where(PAYLOAD_TABLE.c.decision_id.in_(decision_ids)))
    connection.execute(
        SHADOW_RUN_TABLE.update()
        .where(SHADOW_RUN_TABLE.c.decision_id.in_(decision_ids))
        .values(response_text=None)
    )
    connection.execute(
        GATE_ITEM_TABLE.update()
        .where(GATE_ITEM_TABLE.c.decision_id.in_(decision_ids))
        .values(candidate_answer=None, replaced_answer=None)
    )
    connection.execute(
        DECISION_TABLE.update()
        .where(DECISION_TABLE.c.id.in_(decision_ids))
        .values(payload_stored=False)
    )


def purge_expired_payloads(
    engine: Engine, *, retention_days: float, now: datetime | None = None, batch: int = 1000
) -> int:
    """Delete payloads stored longer than the retention period; returns how many.

    Clock: wall clock, since retention counts from when a payload was stored (`stored_at`),
    not from the decision's `ts`. Works in batches, one transaction each."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    total = 0
    while True:
        with engine.begin() as connection:
            ids = [
                row[0]
                for row in connection.execute(
                    select(PAYLOAD_TABLE.c.decision_id)
                    .where(PAYLOAD_TABLE.c.stored_at < cutoff)
                    .limit(batch)
                )
            ]
            if not ids:
                return total
            _delete_payloads(connection, ids)
            total += len(ids)


class DayDrop(BaseModel):
    """One pass of retention by partition (PostgreSQL)."""

    dropped: list[str] = []  # day partitions detached and dropped
    waiting: list[str] = []  # expired, kept for the next pass (work open on it, or locked)
    default_rows: int = 0  # expired rows deleted from the default partition
    drop_seconds: float = 0.0  # in the day transactions (check, payloads, DETACH + DROP)
    key_seconds: float = 0.0  # deleting the dropped days' keys, after


# Nothing that the statistics or open work still need is dropped: a day waits while its
# hourly sampling period is unplanned, a shadow run or verdict of one of its decisions is
# unfinished, or a running gate holds one of its decisions.
_OPEN_WORK = (
    "SELECT EXISTS (SELECT 1 FROM {part} WHERE sampling_skip_reason = :awaiting "
    "AND ts >= :start AND ts < :end) "
    "OR EXISTS (SELECT 1 FROM shadow_run WHERE status IN :open_runs "
    "AND ts >= :start AND ts < :end) "
    "OR EXISTS (SELECT 1 FROM verdict WHERE status IN :open_verdicts "
    "AND ts >= :start AND ts < :end) "
    "OR EXISTS (SELECT 1 FROM gate_item i JOIN gate_run r ON r.id = i.gate_run_id "
    "JOIN {part} d ON d.id = i.decision_id WHERE r.status NOT IN :finished_gates "
    "AND d.ts >= :start AND d.ts < :end)"
)


def _open_work(connection: Connection, part: str, bounds: dict[str, datetime]) -> bool:
    statement = text(_OPEN_WORK.format(part=part)).bindparams(
        bindparam("open_runs", [WorkStatus.QUEUED.value, WorkStatus.RUNNING.value], expanding=True),
        bindparam("open_verdicts", [s.value for s in OPEN_VERDICT_STATUSES], expanding=True),
        bindparam("finished_gates", [s.value for s in FINISHED_GATE_STATUSES], expanding=True),
    )
    return bool(connection.execute(statement, {"awaiting": AWAITING_PLAN, **bounds}).scalar())


# The rows that go with a decision of the day (no foreign key cascades on the partitioned log).
_DAY_DEPENDENTS = (
    "DELETE FROM decision_payload p USING {part} d WHERE p.decision_id = d.id "
    "AND d.ts >= :start AND d.ts < :end",
    "DELETE FROM session_turn t USING {part} d WHERE t.decision_id = d.id "
    "AND d.ts >= :start AND d.ts < :end",
)
# A dropped day's keys go after the drop, in batches: a day is millions of keys, and
# until they go a resend of one of its decisions is only a duplicate.
_DELETE_KEYS = (
    "DELETE FROM decision_key WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM decision_key WHERE ts >= :start AND ts < :end LIMIT :batch))"
)
_KEY_BATCH = 20_000
_LOCK_NOT_AVAILABLE = "55P03"


def drop_expired_days(
    engine: Engine,
    *,
    retention_days: float,
    skew_seconds: float,
    wall_now: datetime | None = None,
) -> DayDrop:
    """Drop the decision log's days older than `retention_days` before the deployment's
    decision-time watermark, one partition at a time (PostgreSQL; elsewhere a no-op).

    Each day in its own transaction: its payloads and session turns are deleted, then
    `DETACH PARTITION` and `DROP TABLE`, under `lock_timeout` = 1 s so a drop queued
    behind a long read gives up (and waits for the next pass) rather than stalling ingest
    behind it; its idempotency keys go after, in batches. Expired rows in the default
    partition are deleted row by row. What survives is in docs/architecture.md
    ("Retention by partition").
    """
    result = DayDrop()
    with engine.connect() as connection:
        if not is_partitioned(connection):
            return result
        now = deployment_now(connection, skew_seconds=skew_seconds, wall_now=wall_now)
        days = day_partitions(connection)
    if now is None:
        return result
    cutoff = now - timedelta(days=retention_days)
    for name, day in days:
        start = day_start(day)
        if start + timedelta(days=1) > cutoff:
            break
        started = time.perf_counter()
        dropped = _drop_day(engine, name, start, start + timedelta(days=1))
        result.drop_seconds += time.perf_counter() - started
        if dropped:
            result.dropped.append(name)
            started = time.perf_counter()
            _delete_keys(engine, start, start + timedelta(days=1))
            result.key_seconds += time.perf_counter() - started
        else:
            result.waiting.append(name)
    result.default_rows = _delete_expired_default_rows(engine, cutoff)
    if result.dropped or result.waiting:
        log.info("decision days dropped %s, waiting %s", result.dropped, result.waiting)
    return result


def _drop_day(engine: Engine, name: str, start: datetime, end: datetime) -> bool:
    bounds = {"start": start, "end": end}
    try:
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '1s'"))
            if _open_work(connection, name, bounds):
                return False
            for statement in _DAY_DEPENDENTS:
                connection.execute(text(statement.format(part=name)), bounds)
            connection.execute(text(f"ALTER TABLE decision DETACH PARTITION {name}"))
            connection.execute(text(f"DROP TABLE {name}"))
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        log.warning("decision day %s not dropped (lock_timeout): next pass", name)
        return False
    return True


def _delete_keys(engine: Engine, start: datetime, end: datetime) -> None:
    bounds = {"start": start, "end": end, "batch": _KEY_BATCH}
    while True:
        with engine.begin() as connection:
            deleted: Any = connection.execute(text(_DELETE_KEYS), bounds)
        if int(deleted.rowcount or 0) < _KEY_BATCH:
            return


def _delete_expired_default_rows(engine: Engine, cutoff: datetime) -> int:
    """Rows of the default partition older than the cutoff (a `ts` no day partition
    covered), deleted with what goes with them, unless open work holds one of them."""
    bounds = {"start": datetime.min.replace(tzinfo=UTC), "end": cutoff}
    with engine.begin() as connection:
        if _open_work(connection, DEFAULT_PARTITION, bounds):
            return 0
        for statement in _DAY_DEPENDENTS:
            connection.execute(text(statement.format(part=DEFAULT_PARTITION)), bounds)
        connection.execute(
            text(
                f"DELETE FROM {DECISION_KEY_TABLE} k USING {DEFAULT_PARTITION} d "  # noqa: S608 (our tables)
                "WHERE k.router = d.router AND k.request_id = d.request_id AND d.ts < :end"
            ),
            bounds,
        )
        deleted: Any = connection.execute(
            text(f"DELETE FROM {DEFAULT_PARTITION} WHERE ts < :end"),  # noqa: S608 (our table)
            bounds,
        )
        return int(deleted.rowcount or 0)
