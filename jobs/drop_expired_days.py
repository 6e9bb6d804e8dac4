"""Leader job: retention by partition, dropping the decision log's days older than
`decision_retention_days` (PostgreSQL; a no-op on SQLite). See `retention.drop_expired_days`.

Clock: decision time (the deployment's watermark), as the windows that read the log."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval import retention

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> retention.DayDrop:
    return await asyncio.to_thread(
        retention.drop_expired_days,
        runtime.engine,
        retention_days=runtime.settings.decision_retention_days,
        skew_seconds=runtime.settings.decision_clock_skew_seconds,
    )
