"""Gate service: create a run, sample its requests, replay and judge each item, reach a verdict.

Every step is a leased row (runtime.leases): a queued `gate_run` is claimed to
draw its sample (the items are inserted in the same transaction that marks it
planned), each `gate_item` is claimed to replay and judge one request, and
partial results (each answer, each judge order) are stored as soon as they
exist. A worker that dies loses only the call in flight; whoever takes the
lease over continues from what was stored. The run's verdict is written once,
by a conditional update, when its last item finishes.

Spending: before its first call an item reserves an upper estimate of its cost on
the run (gate.budget) by a conditional update against the cap, and the transaction
that ends the item swaps the reservation for the actual cost, so items in flight on
any number of workers cannot together overshoot `max_cost_usd`.

One module per step: `create` (create and read runs), `plan` (draw the sample), `items`
(replay and judge one item), `verdict` (the run's verdict), with the tables in `rows`.
This module runs one gate to its end (the CLI) and keeps the names callers import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.gate.create import create_gate as create_gate
from shadoweval.gate.create import get_gate as get_gate
from shadoweval.gate.create import list_gates as list_gates
from shadoweval.gate.create import validate_request as validate_request
from shadoweval.gate.items import fail_exhausted_items as fail_exhausted_items
from shadoweval.gate.items import process_due_items as process_due_items
from shadoweval.gate.items import process_item as process_item
from shadoweval.gate.models import FINISHED_GATE_STATUSES, GateItemStatus, GateRun
from shadoweval.gate.plan import claim_run, plan_run
from shadoweval.gate.plan import plan_due_runs as plan_due_runs
from shadoweval.gate.rows import ITEM_TABLE as ITEM_TABLE
from shadoweval.gate.rows import RUN_TABLE as RUN_TABLE
from shadoweval.gate.rows import KnowsModel as KnowsModel
from shadoweval.gate.rows import ProviderForModel as ProviderForModel
from shadoweval.gate.verdict import finalize_ready_runs as finalize_ready_runs
from shadoweval.gate.verdict import finalize_run as finalize_run


async def run_gate(
    *,
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    run_id: int,
    owner: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> GateRun:
    """Plan (if needed) and work one run's items in this process until it has a verdict.

    Items held by another worker are waited for, not taken; queued retries are
    waited for until due. `on_progress(finished, total)` is called as items finish.
    """
    if await asyncio.to_thread(
        claim_run, engine, run_id, owner=owner, lease_seconds=settings.work_lease_seconds
    ):
        with Session(engine) as session:
            planned = session.get(GateRun, run_id)
            assert planned is not None
        if planned.planned_at is None:
            await asyncio.to_thread(plan_run, engine, run_id=run_id, owner=owner)
    while True:
        status = await asyncio.to_thread(finalize_run, engine, run_id=run_id, settings=settings)
        progress = await asyncio.to_thread(_progress, engine, run_id)
        if on_progress is not None:
            on_progress(*progress)
        if status in FINISHED_GATE_STATUSES:
            break
        counts = await process_due_items(
            engine=engine,
            provider_for_model=provider_for_model,
            settings=settings,
            owner=owner,
            limit=settings.worker_batch_size,
            run_id=run_id,
        )
        if not counts:
            await asyncio.sleep(await asyncio.to_thread(_seconds_until_due, engine, run_id))
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        assert run is not None
        return run


def _progress(engine: Engine, run_id: int) -> tuple[int, int]:
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        assert run is not None
        return run.items_done + run.items_error, run.items_total


def _seconds_until_due(engine: Engine, run_id: int) -> float:
    """How long until one of the run's open items can be claimed (capped: new work may come)."""
    columns = ITEM_TABLE.c
    with Session(engine) as session:
        due = session.execute(
            select(
                func.min(columns.next_attempt_at).filter(columns.status == GateItemStatus.QUEUED),
                func.min(columns.lease_until).filter(columns.status == GateItemStatus.RUNNING),
            ).where(columns.gate_run_id == run_id)
        ).one()
    times = [t for t in due if t is not None]
    if not times:
        return 0.05
    earliest = min(t if t.tzinfo else t.replace(tzinfo=utcnow().tzinfo) for t in times)
    return float(min(max((earliest - utcnow()).total_seconds(), 0.05), 5.0))
