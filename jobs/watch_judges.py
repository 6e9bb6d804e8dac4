"""Leader job: record a `judge_changed` event when a router's verdicts come from a new judge.

Clock: wall clock for completion order and the settle delay (`finished_at`: which judge was
configured when); the event's ts is decision time, the earliest decision the new judge judged."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from shadoweval.db import session_scope
from shadoweval.feedback import judge_changes

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _watch(runtime: WorkerRuntime) -> int:
    with session_scope(runtime.engine) as session:
        settle = timedelta(seconds=runtime.settings.judge_watch_settle_seconds)
        return judge_changes.record_judge_changes(session, settle=settle)


async def run(runtime: WorkerRuntime) -> int:
    return await asyncio.to_thread(_watch, runtime)
