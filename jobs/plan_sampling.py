"""Leader job: recompute each stratum's inclusion probability from budget, traffic and labels."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shadoweval.db import session_scope
from shadoweval.sampling import service as sampling_service

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _plan(runtime: WorkerRuntime) -> dict[str, Any]:
    with session_scope(runtime.engine) as session:
        plan = sampling_service.plan_sampling(session=session, settings=runtime.settings)
    return {
        "strata": len(plan.probabilities),
        "expected_cost_usd": round(plan.expected_cost_usd, 4),
        "floors_met": plan.floors_met,
    }


async def run(runtime: WorkerRuntime) -> dict[str, Any]:
    return await asyncio.to_thread(_plan, runtime)
