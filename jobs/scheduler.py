"""The schedule of `shadoweval worker`: which job runs how often, and on which workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from shadoweval.jobs import (
    aggregate,
    check_drift,
    enqueue_shadow,
    heartbeat,
    judge_pairs,
    leadership,
    plan_sampling,
    purge_payloads,
    run_shadow,
)

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    run: Callable[[WorkerRuntime], Awaitable[Any]]
    interval: Callable[[WorkerRuntime], float]  # seconds, from settings
    leader_only: bool = False


PERIODIC_JOBS = (
    ScheduledJob("leadership", leadership.run, lambda rt: rt.settings.leader_lease_seconds / 3),
    ScheduledJob(
        "enqueue_shadow",
        enqueue_shadow.run,
        lambda rt: rt.settings.enqueue_interval_seconds,
        leader_only=True,
    ),
    ScheduledJob(
        "plan_sampling",
        plan_sampling.run,
        lambda rt: rt.settings.planner_interval_seconds,
        leader_only=True,
    ),
    ScheduledJob(
        "aggregate",
        aggregate.run,
        lambda rt: rt.settings.aggregate_interval_seconds,
        leader_only=True,
    ),
    ScheduledJob("check_drift", check_drift.run, lambda rt: 3600.0, leader_only=True),
    ScheduledJob("purge_payloads", purge_payloads.run, lambda rt: 3600.0, leader_only=True),
    ScheduledJob("heartbeat", heartbeat.run, lambda rt: 10.0),
)
# Claimed by every worker in continuous lanes (see runtime.worker), not on a timer.
WORK_JOBS = (
    ScheduledJob("run_shadow", run_shadow.run, lambda rt: rt.settings.worker_poll_seconds),
    ScheduledJob("judge_pairs", judge_pairs.run, lambda rt: rt.settings.worker_poll_seconds),
)

# `shadoweval worker --once`: plan, work, then report.
_BY_NAME = {job.name: job for job in (*PERIODIC_JOBS, *WORK_JOBS)}
ONE_PASS = tuple(
    _BY_NAME[name]
    for name in (
        "leadership",
        "plan_sampling",
        "enqueue_shadow",
        "run_shadow",
        "judge_pairs",
        "aggregate",
        "heartbeat",
    )
)


def build_scheduler(runtime: WorkerRuntime) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for job in PERIODIC_JOBS:

        async def fire(job: ScheduledJob = job) -> None:
            if job.leader_only and not runtime.is_leader:
                return
            try:
                await runtime.run_job(job.name, job.run)
            except asyncio.CancelledError:
                # The worker is shutting down mid-job; leases and locks are released by the
                # shutdown path, and a traceback here would only alarm on-call.
                return

        scheduler.add_job(
            fire,
            "interval",
            seconds=job.interval(runtime),
            id=job.name,
            name=job.name,
            # One instance at a time; missed ticks collapse into one run.
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=None if job.name == "heartbeat" else _now(),
        )
    return scheduler


def _now() -> Any:
    from shadoweval.db import utcnow

    return utcnow()
