"""Leader job: feature and router-score drift of each completed UTC day (Evidently, lazily).

Clock: decision time (a day is complete once the router's watermark has passed it); the
wall clock only stamps `created_at`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval.analytics import drift_service
from shadoweval.db import session_scope

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _check(runtime: WorkerRuntime) -> int:
    with session_scope(runtime.engine) as session:
        return drift_service.check_completed_days(session=session, settings=runtime.settings)


async def run(runtime: WorkerRuntime) -> int:
    return await asyncio.to_thread(_check, runtime)
