"""Every worker: claim due shadow runs and run them on the other tier.

Clock: wall clock (leases and retry times); it keys no window on time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shadoweval.shadow import service as shadow_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> dict[str, int]:
    return await shadow_service.process_due_runs(
        engine=runtime.engine,
        provider_for_model=runtime.provider_for_model,
        settings=runtime.settings,
        owner=runtime.worker_id,
        limit=runtime.settings.worker_batch_size,
    )
