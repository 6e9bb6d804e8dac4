"""Leader job: scan new decisions for models new to a router's tier (model_change events).

Clock: decision time (first-seen times, the event's ts and its sampling boost are decisions'
`ts`); the database clock only times the watermark's settle delay."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shadoweval.pool import watcher as model_watcher

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _watch(runtime: WorkerRuntime) -> dict[str, Any]:
    result = model_watcher.watch_models(engine=runtime.engine, settings=runtime.settings)
    # Only the counts: a watermark alone would make every idle run look busy in the log.
    return result.model_dump(exclude={"watermark"})


async def run(runtime: WorkerRuntime) -> dict[str, Any]:
    return await asyncio.to_thread(_watch, runtime)
