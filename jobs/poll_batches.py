"""Every worker: check submitted provider batches and collect those that have ended.

Clock: wall clock (when to check again, leases)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shadoweval.shadow import batch as batch_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> dict[str, int]:
    return await batch_service.poll_batches(
        engine=runtime.engine,
        settings=runtime.settings,
        provider_for_model=runtime.provider_for_model,
        owner=runtime.worker_id,
    )
