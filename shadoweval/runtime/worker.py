"""The worker process: APScheduler firing the jobs in `shadoweval.jobs`.

Every worker claims work items (shadow runs, verdicts); only the leader fires
the planning jobs (enqueueing sampled decisions). A job that fails is logged
and counted in the worker's heartbeat, and the schedule keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.providers.base import Provider
from shadoweval.runtime.leader import LeaderElector

log = logging.getLogger(__name__)

Job = Callable[["WorkerRuntime"], Awaitable[Any]]


@dataclass
class JobStats:
    runs: int = 0
    failures: int = 0
    last_started_at: str | None = None
    last_duration_ms: float | None = None
    last_error: str | None = None
    last_result: Any = None


@dataclass
class WorkerRuntime:
    """What jobs get: the engine, settings, providers, and who this worker is."""

    engine: Engine
    settings: Settings
    provider_for_model: Callable[[str], Provider]
    price_per_mtok: Callable[[str], float | None]
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    started_at: datetime = field(default_factory=utcnow)
    stats: dict[str, JobStats] = field(default_factory=dict)
    elector: LeaderElector | None = None

    def __post_init__(self) -> None:
        if self.elector is None:
            self.elector = LeaderElector(
                self.engine, self.worker_id, self.settings.leader_lease_seconds
            )

    @property
    def is_leader(self) -> bool:
        assert self.elector is not None
        return self.elector.is_leader

    async def run_job(self, name: str, job: Job) -> Any:
        """Run one job, recording its outcome; never raises (the schedule must go on)."""
        stats = self.stats.setdefault(name, JobStats())
        stats.runs += 1
        stats.last_started_at = utcnow().isoformat()
        started = time.perf_counter()
        try:
            stats.last_result = await job(self)
            stats.last_error = None
            if _did_something(stats.last_result):
                log.info("job %s: %s", name, stats.last_result, extra={"worker": self.worker_id})
            return stats.last_result
        except Exception as error:  # a job's failure must not stop the worker
            stats.failures += 1
            stats.last_error = f"{error.__class__.__name__}: {error}"[:500]
            log.exception("job %s failed", name, extra={"worker": self.worker_id})
            return None
        finally:
            stats.last_duration_ms = round((time.perf_counter() - started) * 1000, 1)

    def jobs_summary(self) -> dict[str, Any]:
        return {name: vars(stats) for name, stats in self.stats.items()}


def _did_something(result: Any) -> bool:
    if isinstance(result, dict):
        return any(_did_something(value) for value in result.values())
    return isinstance(result, int) and not isinstance(result, bool) and result > 0


def build_runtime(
    settings: Settings, engine: Engine
) -> tuple[WorkerRuntime, Callable[[], Awaitable[None]]]:
    """A runtime over the configured providers, and the coroutine that closes them."""
    from shadoweval.providers.pricing import PricingTable
    from shadoweval.providers.registry import build_provider_registry

    registry = build_provider_registry(settings)
    pricing = PricingTable.from_settings(settings)

    def price_per_mtok(model: str) -> float | None:
        price = pricing.lookup(model)
        return None if price is None else price.input + price.output

    runtime = WorkerRuntime(
        engine=engine,
        settings=settings,
        provider_for_model=registry.for_model,
        price_per_mtok=price_per_mtok,
    )
    return runtime, registry.aclose


async def _work_lane(runtime: WorkerRuntime, name: str, job: Job, stop: asyncio.Event) -> None:
    """Claim and process work items back to back; rest only when the queue is empty."""
    while not stop.is_set():
        result = await runtime.run_job(name, job)
        if not _did_something(result):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), runtime.settings.worker_poll_seconds)


def start_work_lanes(runtime: WorkerRuntime, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """`worker_lanes` concurrent claim loops per kind of work item."""
    from shadoweval.jobs.scheduler import WORK_JOBS

    return [
        asyncio.create_task(_work_lane(runtime, job.name, job.run, stop), name=f"{job.name}-{lane}")
        for job in WORK_JOBS
        for lane in range(runtime.settings.worker_lanes)
    ]


async def run_worker(runtime: WorkerRuntime, *, once: bool = False) -> None:
    """Run until SIGINT/SIGTERM (or one pass of every job with `once`).

    Periodic jobs (leadership, planning, heartbeats) fire from APScheduler; work
    items are claimed by continuous lanes, so calls stay in flight back to back.
    """
    from shadoweval.jobs.scheduler import ONE_PASS, build_scheduler

    assert runtime.elector is not None
    if once:
        runtime.elector.refresh()
        for job in ONE_PASS:
            if not job.leader_only or runtime.is_leader:
                await runtime.run_job(job.name, job.run)
        runtime.elector.release()
        return

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    scheduler = build_scheduler(runtime)
    scheduler.start()
    lanes = start_work_lanes(runtime, stop)
    log.info("worker started", extra={"worker": runtime.worker_id, "lanes": len(lanes)})
    try:
        await stop.wait()
    finally:
        log.info("worker stopping", extra={"worker": runtime.worker_id})
        scheduler.shutdown(wait=False)
        # Unfinished items keep their lease and are taken over when it expires.
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        await asyncio.to_thread(runtime.elector.release)
