"""Leader job: delete delivered and failed alert deliveries (with their attempts) older than
`delivery_retention_days`, so the outbox does not grow forever.

Clock: wall clock (retention counts from a delivery's `created_at`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval.alerts import delivery_records

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> int:
    return await asyncio.to_thread(
        delivery_records.purge_finished_deliveries,
        runtime.engine,
        settings=runtime.settings,
    )
