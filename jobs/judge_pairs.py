"""Every worker: claim queued verdicts and judge each pair in both orders.

Clock: wall clock (leases, retry times, `finished_at`); it keys no window on time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shadoweval.judge import service as judge_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> dict[str, int]:
    return await judge_service.process_due_verdicts(
        engine=runtime.engine,
        provider_for_model=runtime.provider_for_model,
        settings=runtime.settings,
        owner=runtime.worker_id,
        limit=runtime.settings.worker_batch_size,
    )
