"""Every worker: claim due alert deliveries and POST them to their channels.

Clock: wall clock (leases, retry times, the delivery max age)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shadoweval.alerts import sender

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> dict[str, int]:
    return await sender.process_due_deliveries(
        engine=runtime.engine,
        settings=runtime.settings,
        owner=runtime.worker_id,
        limit=runtime.settings.worker_batch_size,
    )
