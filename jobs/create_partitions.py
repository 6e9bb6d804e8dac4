"""Leader job: create the decision log's day partitions for today and the next 7 days
(PostgreSQL; a no-op on SQLite), so they exist before the traffic that needs them.

Clock: wall clock, not decision time: partitions serve the rows about to arrive, whose
`ts` is around now. Idempotent (`CREATE TABLE IF NOT EXISTS … PARTITION OF`): any worker
that is leader may run it any number of times."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval.db import utcnow
from shadoweval.ingest import partitions

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime

DAYS_AHEAD = 7


async def run(runtime: WorkerRuntime) -> list[str]:
    return await asyncio.to_thread(
        partitions.create_days_ahead, runtime.engine, today=utcnow().date(), days=DAYS_AHEAD
    )
