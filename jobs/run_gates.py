"""Every worker: plan queued gate runs, replay and judge their items, write their verdicts.

Clock: wall clock (leases and retry waits); the sample is drawn by seed, not by time."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval.gate import service as gate_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> dict[str, int]:
    planned = await asyncio.to_thread(
        gate_service.plan_due_runs,
        runtime.engine,
        owner=runtime.worker_id,
        settings=runtime.settings,
    )
    counts = await gate_service.process_due_items(
        engine=runtime.engine,
        provider_for_model=runtime.provider_for_model,
        settings=runtime.settings,
        owner=runtime.worker_id,
        limit=runtime.settings.worker_batch_size,
    )
    finished = await asyncio.to_thread(
        gate_service.finalize_ready_runs, runtime.engine, settings=runtime.settings
    )
    return {"planned": planned, **counts, "finished": finished}
