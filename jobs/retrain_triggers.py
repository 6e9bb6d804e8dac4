"""Leader: turn each new model_change event into one retrain delivery.

Clock: wall clock (events created longer than the delivery max age ago are not triggered);
the trigger carries the event's decision-time ts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadoweval.alerts import outbox
from shadoweval.db import session_scope

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _enqueue(runtime: WorkerRuntime) -> int:
    with session_scope(runtime.engine) as session:
        return outbox.enqueue_retrain_triggers(session=session, settings=runtime.settings)


async def run(runtime: WorkerRuntime) -> dict[str, int]:
    return {"queued": await asyncio.to_thread(_enqueue, runtime)}
