"""Leader job: give sampled decisions their shadow runs and verdict rows."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shadoweval.db import session_scope
from shadoweval.shadow import service as shadow_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _enqueue(runtime: WorkerRuntime) -> dict[str, Any]:
    with session_scope(runtime.engine) as session:
        result = shadow_service.enqueue_sampled_decisions(
            session=session, settings=runtime.settings, price_per_mtok=runtime.price_per_mtok
        )
    advanced = shadow_service.advance_stalled_verdicts(runtime.engine)
    return {"enqueued": result.enqueued, "skipped": result.skipped, "advanced": advanced}


async def run(runtime: WorkerRuntime) -> dict[str, Any]:
    return await asyncio.to_thread(_enqueue, runtime)
