"""Leader job: fold finished verdicts and ingest's traffic deltas into window snapshots, new
session turns into the per-session totals, then advance the sequential tests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from shadoweval.analytics import session_totals, snapshots

if TYPE_CHECKING:
    from shadoweval.runtime.worker import WorkerRuntime


def _aggregate(runtime: WorkerRuntime) -> dict[str, Any]:
    aggregated = snapshots.aggregate_finished_verdicts(runtime.engine)
    return {
        "aggregated": aggregated,
        "traffic_deltas_folded": snapshots.fold_traffic_deltas(runtime.engine),
        **session_totals.fold_new_decisions(runtime.engine, runtime.settings),
        **snapshots.advance_sequential_tests(runtime.engine, runtime.settings),
    }


async def run(runtime: WorkerRuntime) -> dict[str, Any]:
    return await asyncio.to_thread(_aggregate, runtime)
