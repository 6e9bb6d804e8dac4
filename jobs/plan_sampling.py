"""Leader job: the sampling plan.

Clock: decision time. In `hourly` mode (the default) it samples every closed decision-time
period (sampling.periods): the model watcher runs first, so a model change recorded from the
log boosts the periods after it whatever the job timing. Wall time is read only to close
periods when decision time has stopped moving (the end of a stream). In `at_ingest` mode it
recomputes the plan ingest samples by, looking back from the decision-time watermark.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shadoweval import clock
from shadoweval.analytics import threshold_band_advice
from shadoweval.db import session_scope
from shadoweval.pool import watcher as model_watcher
from shadoweval.sampling import periods
from shadoweval.sampling import service as sampling_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _plan(runtime: WorkerRuntime) -> dict[str, Any]:
    settings = runtime.settings
    if settings.sampling_mode == "hourly":
        model_watcher.watch_models(engine=runtime.engine, settings=settings)
        with session_scope(runtime.engine) as session:
            result = periods.sample_closed_periods(
                session=session,
                settings=settings,
                threshold_advisor=threshold_band_advice.band_advice,
            )
        return {
            "periods": result.periods,
            "sampled": result.sampled,
            "refused": result.refused,
            "late": result.late,
            "waiting": result.waiting,
        }
    with session_scope(runtime.engine) as session:
        now = clock.deployment_now(session, skew_seconds=settings.decision_clock_skew_seconds)
        if now is None:
            return {"strata": 0}
        plan = sampling_service.plan_sampling(session=session, settings=settings, now=now)
    return {
        "strata": len(plan.probabilities),
        "expected_cost_usd": round(plan.expected_cost_usd, 4),
        "floors_met": plan.floors_met,
    }


async def run(runtime: WorkerRuntime) -> dict[str, Any]:
    return await asyncio.to_thread(_plan, runtime)
