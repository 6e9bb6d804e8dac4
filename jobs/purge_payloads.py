"""Leader job: delete request/response payloads older than the retention period.

Clock: wall clock (retention counts from when a payload was stored, not from its `ts`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval import retention

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> int:
    return await asyncio.to_thread(
        retention.purge_expired_payloads,
        runtime.engine,
        retention_days=runtime.settings.payload_retention_days,
    )
