"""Every worker: record that it is alive, whether it leads, and how its jobs fare.

Clock: wall clock (a heartbeat is about wall time)."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING

from shadoweval.db import utcnow
from shadoweval.runtime import service as runtime_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


async def run(runtime: WorkerRuntime) -> None:
    await asyncio.to_thread(
        runtime_service.beat,
        runtime.engine,
        worker_id=runtime.worker_id,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        started_at=runtime.started_at,
        now=utcnow(),
        is_leader=runtime.is_leader,
        jobs=runtime.jobs_summary(),
    )
