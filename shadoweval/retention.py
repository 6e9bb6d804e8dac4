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

Both databases enforce the foreign keys (SQLite through `PRAGMA foreign_keys=ON`, set on
every connection in `db.py`). A payload-only deletion or purge keeps the decision, so it
deletes `decision_payload` rows and blanks the answers kept beside them explicitly.
Window snapshots keep their counts: they hold sums, no request content.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from shadoweval.analytics import session_totals
from shadoweval.db import utcnow
from shadoweval.exceptions import InvalidRequest
from shadoweval.feedback.models import Feedback
from shadoweval.gate.models import GateItem
from shadoweval.ingest.models import DECISION_TABLE, PAYLOAD_TABLE
from shadoweval.judge.models import Verdict
from shadoweval.shadow.models import ShadowRun
from shadoweval.sql import table_of

log = logging.getLogger(__name__)

FEEDBACK_TABLE = table_of(Feedback)
GATE_ITEM_TABLE = table_of(GateItem)
SHADOW_RUN_TABLE = table_of(ShadowRun)
VERDICT_TABLE = table_of(Verdict)


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
