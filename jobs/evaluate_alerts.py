"""Leader job: evaluate the alert rules, advance each alert's lifecycle, queue notifications."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval.alerts import service as alerts_service
from shadoweval.db import session_scope

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _evaluate(runtime: WorkerRuntime) -> int:
    with session_scope(runtime.engine) as session:
        result = alerts_service.evaluate_alerts(session=session, settings=runtime.settings)
    # Counted as work done only when something changed, so idle passes stay quiet.
    return result.opened + result.resolved + len(result.notifications)


async def run(runtime: WorkerRuntime) -> int:
    return await asyncio.to_thread(_evaluate, runtime)
