"""Gate step 1: claim a queued run and draw its sample; the items are inserted in the
transaction that marks the run planned."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.gate import report
from shadoweval.gate.create import segment_traffic
from shadoweval.gate.models import (
    GateItemStatus,
    GateRun,
    GateStatus,
)
from shadoweval.gate.rows import DECISION_TABLE, ITEM_TABLE, PAYLOAD_TABLE, RUN_TABLE
from shadoweval.gate.sample import allocate, seeded_order
from shadoweval.runtime import leases

log = logging.getLogger(__name__)


def _eligible(run: GateRun) -> Any:
    """Replayable requests: routed to the replaced model, request payload kept, not
    redacted (a redacted prompt against the logged answer is not a fair comparison)."""
    d, p = DECISION_TABLE.c, PAYLOAD_TABLE.c
    conditions = [
        d.router == run.router,
        d.chosen_model == run.replaced_model,
        d.has_request.is_(True),
        d.payload_redacted.is_(False),
        p.request.is_not(None),
    ]
    if run.segments:
        conditions.append(d.segment_value.in_(run.segments))
    return and_(*conditions)


def _draw_sample(connection: Connection, run: GateRun) -> dict[str, list[tuple[int, str]]]:
    """The stratified sample per segment, drawn by the database: a count per segment, the
    even allocation (gate.sample.allocate), then per segment the first n decisions in a
    seeded order (gate.sample.seeded_order). Nothing but the sample is loaded, however
    many decisions the router has, and the same seed over the same log draws the same
    sample on SQLite and PostgreSQL."""
    d, p = DECISION_TABLE.c, PAYLOAD_TABLE.c
    eligible = _eligible(run)
    joined = DECISION_TABLE.join(PAYLOAD_TABLE, p.decision_id == d.id)
    available = {
        str(segment): int(count)
        for segment, count in connection.execute(
            select(d.segment_value, func.count())
            .select_from(joined)
            .where(eligible)
            .group_by(d.segment_value)
        )
    }
    allocation = allocate(available, run.sample_size)
    chosen: dict[str, list[tuple[int, str]]] = {}
    for segment in sorted(available):
        if allocation[segment] <= 0:
            continue
        rows = connection.execute(
            select(d.id, d.request_id)
            .select_from(joined)
            .where(eligible, d.segment_value == segment)
            .order_by(seeded_order(d.id, run.seed), d.id)
            .limit(allocation[segment])
        )
        chosen[segment] = [(int(decision_id), str(request_id)) for decision_id, request_id in rows]
    return chosen


def plan_run(engine: Engine, *, run_id: int, owner: str, now: datetime | None = None) -> str:
    """Draw a claimed run's stratified sample and insert its items, atomically; its status."""
    now = now or utcnow()
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        assert run is not None
    with engine.begin() as connection:
        sample = _draw_sample(connection, run)
        if not sample:
            message = (
                f"no replayable stored requests: router {run.router!r} has no decision routed "
                f"to {run.replaced_model!r} with a stored, unredacted request"
                + (f" in segment(s) {', '.join(run.segments)}" if run.segments else "")
                + " (payloads kept per SHADOWEVAL_STORE_PAYLOADS and purged after retention)"
            )
            if not leases._finish(
                connection,
                RUN_TABLE,
                item_id=run_id,
                owner=owner,
                values=error_values(run, message, now),
            ):
                raise _LeaseLost(run_id)
            return GateStatus.ERROR
        rows: list[dict[str, Any]] = []
        for segment, drawn in sorted(sample.items()):
            for decision_id, request_id in drawn:
                rows.append(
                    {
                        "gate_run_id": run_id,
                        "decision_id": decision_id,
                        "request_id": request_id,
                        "segment_value": segment,
                        "status": GateItemStatus.QUEUED,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "replaced_reused": False,
                        "candidate_cost_usd": 0.0,
                        "replaced_cost_usd": 0.0,
                        "judge_cost_usd": 0.0,
                        "reserved_usd": 0.0,
                    }
                )
        traffic = segment_traffic(connection, run.router, run.replaced_model, run.segments)
        values = {
            "status": GateStatus.RUNNING,
            "lease_owner": None,
            "lease_until": None,
            "planned_at": now,
            "items_total": len(rows),
            "segment_traffic": {s: traffic.get(s, 0) for s in sample},
        }
        if not leases._finish(connection, RUN_TABLE, item_id=run_id, owner=owner, values=values):
            raise _LeaseLost(run_id)  # rolls the items back: the new lease holder plans it
        connection.execute(insert(ITEM_TABLE), rows)
    return GateStatus.RUNNING


class _LeaseLost(Exception):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"gate run {run_id}: lease lost while planning")


def error_values(run: GateRun, message: str, now: datetime) -> dict[str, Any]:
    names = {
        "router": run.router,
        "candidate_model": run.candidate_model,
        "replaced_model": run.replaced_model,
        "error": message,
    }
    return {
        "status": GateStatus.ERROR,
        "lease_owner": None,
        "lease_until": None,
        "finished_at": now,
        "error": message[:2000],
        "report_markdown": report.render_error_markdown(**names),
        "junit_xml": report.render_error_junit(**names),
    }


def plan_due_runs(engine: Engine, *, owner: str, settings: Settings, limit: int = 4) -> int:
    """Claim queued (or abandoned mid-planning) runs and plan them; how many were planned."""
    ids = leases.claim(
        engine,
        RUN_TABLE,
        owner=owner,
        limit=limit,
        lease_seconds=settings.work_lease_seconds,
        now=utcnow(),
    )
    for run_id in ids:
        try:
            plan_run(engine, run_id=run_id, owner=owner)
        except _LeaseLost:
            log.warning("gate run %s was taken over while planning", run_id)
    return len(ids)


def claim_run(engine: Engine, run_id: int, *, owner: str, lease_seconds: float) -> bool:
    """leases.claim for one given run (the CLI runs its own gate, not whichever is due)."""
    now = utcnow()
    columns = RUN_TABLE.c
    due = or_(
        columns.status == GateStatus.QUEUED,
        and_(columns.status == GateStatus.RUNNING, columns.lease_until < now),
    )
    # Unlike leases.claim, a queued run is taken before its next_attempt_at: the CLI
    # asked for this run now, and run_gate does not come back to claim it later.
    claimed = leases.claim_rows(
        engine,
        RUN_TABLE,
        where=and_(columns.id == run_id, due),
        order_by=(columns.id,),
        limit=1,
        values={
            "status": GateStatus.RUNNING,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "attempts": columns.attempts + 1,
        },
    )
    return claimed == [run_id]
