"""Take or keep the planner leadership (advisory lock on PostgreSQL, lease row on SQLite).

Clock: wall clock (the SQLite lease row's expiry)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> bool:
    assert runtime.elector is not None
    return await asyncio.to_thread(runtime.elector.refresh)
