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
    create_partitions,
    deliver_alerts,
    drop_expired_days,
    enqueue_shadow,
    evaluate_alerts,
    heartbeat,
    judge_pairs,
    leadership,
    plan_sampling,
    poll_batches,
    purge_deliveries,
    purge_payloads,
    retrain_triggers,
    run_gates,
    run_shadow,
    submit_batches,
    watch_judges,
    watch_models,
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
    ScheduledJob(
        "evaluate_alerts",
        evaluate_alerts.run,
        lambda rt: rt.settings.alert_evaluate_interval_seconds,
        leader_only=True,
    ),
    ScheduledJob("purge_deliveries", purge_deliveries.run, lambda rt: 3600.0, leader_only=True),
    ScheduledJob("purge_payloads", purge_payloads.run, lambda rt: 3600.0, leader_only=True),
    # PostgreSQL's day partitions of the decision log: created ahead, dropped past retention.
    ScheduledJob("create_partitions", create_partitions.run, lambda rt: 3600.0, leader_only=True),
    ScheduledJob("drop_expired_days", drop_expired_days.run, lambda rt: 3600.0, leader_only=True),
    ScheduledJob("retrain_triggers", retrain_triggers.run, lambda rt: 15.0, leader_only=True),
    ScheduledJob(
        "watch_judges",
        watch_judges.run,
        lambda rt: rt.settings.judge_watch_interval_seconds,
        leader_only=True,
    ),
    ScheduledJob(
        "watch_models",
        watch_models.run,
        lambda rt: rt.settings.model_watch_interval_seconds,
        leader_only=True,
    ),
    # Batch mode (every worker: batch rows are claimed under a lease, like work items).
    ScheduledJob(
        "submit_batches",
        submit_batches.run,
        lambda rt: rt.settings.batch_submit_interval_seconds,
    ),
    ScheduledJob(
        "poll_batches", poll_batches.run, lambda rt: rt.settings.batch_poll_interval_seconds
    ),
    ScheduledJob("heartbeat", heartbeat.run, lambda rt: 10.0),
)
# Claimed by every worker in continuous lanes (see runtime.worker), not on a timer.
WORK_JOBS = (
    ScheduledJob("run_shadow", run_shadow.run, lambda rt: rt.settings.worker_poll_seconds),
    ScheduledJob("judge_pairs", judge_pairs.run, lambda rt: rt.settings.worker_poll_seconds),
    ScheduledJob("run_gates", run_gates.run, lambda rt: rt.settings.worker_poll_seconds),
    ScheduledJob("deliver_alerts", deliver_alerts.run, lambda rt: rt.settings.worker_poll_seconds),
)

# `shadoweval worker --once`: plan, work, then report.
_BY_NAME = {job.name: job for job in (*PERIODIC_JOBS, *WORK_JOBS)}
ONE_PASS = tuple(
    _BY_NAME[name]
    for name in (
        "leadership",
        "plan_sampling",
        "watch_models",
        "enqueue_shadow",
        "run_shadow",
        "judge_pairs",
        "submit_batches",
        "poll_batches",
        "run_gates",
        "aggregate",
        "watch_judges",
        "evaluate_alerts",
        "retrain_triggers",
        "deliver_alerts",
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
