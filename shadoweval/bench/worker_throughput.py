"""Worker throughput, one worker process against two, on a loaded database (`bench scale`).

A batch of `items` fresh decisions goes through the real path up to the workers: ingested
with `ingest.service.ingest_decisions` (payloads kept, as hourly sampling keeps them until
the planner decides), marked sampled as the planner marks a period's draws (π, `sampled`,
no skip reason), and given their shadow run and verdict row by the leader's
`shadow.service.enqueue_sampled_decisions` (timed and reported beside). Then one or two
worker processes (`python -m shadoweval.bench.worker_throughput`, two started once for
all batches) each run the work lanes every `shadoweval worker` runs
(`runtime.worker.start_work_lanes`: claim under a lease, shadow call, judge both orders)
against the simulated provider, until every verdict of the batch is finished. Not run:
the leader's periodic jobs (planning, aggregation, partitions, retention), which one
leader runs whatever the number of workers and which would act on the bench's other rows.

Items/s is the batch over the wall time from the go signal to the last verdict's
`finished_at` (processes are started and connected before it, so their import time is
not in it); beside it, the worker processes' CPU ms per item (PostgreSQL's not included),
which moves less with the machine's load. Two settings differ from a deployment: the
provider rate limits are lifted (per wall-clock minute, they would cap the figure, not
the worker), and the idle poll is 0.1 s instead of 2 s (judge lanes find no work until
the first shadow runs finish; the figure is the workers' capacity, not the poll interval).

Each item must be processed once: the batch's verdicts all `done`, its shadow runs all
`succeeded`, and their `attempts` summing to the rows (a second claim of a row would add
one); otherwise the bench raises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

WORKER_POLL_SECONDS = 0.1
PROVIDER_UNLIMITED = 1e12
SAMPLED_INCLUSION_PROBABILITY = 0.2  # the default π of the cheap tier
TIER_MODELS = {"cheap": "claude-haiku-4-5", "strong": "claude-sonnet-4-6"}  # make_decisions'
STARTUP_TIMEOUT_SECONDS = 60.0


def worker_env(database_url: str, data_dir: Path, router: str) -> dict[str, str]:
    """The environment of one worker process: the deployment's settings, with the two
    differences the module docstring names."""
    from shadoweval.bench.ingest import _settings_env

    return {
        **os.environ,
        **_settings_env(database_url, data_dir),
        "SHADOWEVAL_USE_SIMULATED_PROVIDER": "true",
        "SHADOWEVAL_PROVIDER_REQUESTS_PER_MINUTE": str(PROVIDER_UNLIMITED),
        "SHADOWEVAL_PROVIDER_TOKENS_PER_MINUTE": str(PROVIDER_UNLIMITED),
        "SHADOWEVAL_WORKER_POLL_SECONDS": str(WORKER_POLL_SECONDS),
        # The router's pool, configured (as `PUT /v1/pool` or the settings give it): without
        # one, the leader learns it from the log with a scan of every row of the router.
        "SHADOWEVAL_TIER_MODELS": json.dumps({router: TIER_MODELS}),
    }


def _sampled_batch(
    engine: Any, settings: Any, items: int, prefix: str, seed: int, router: str
) -> list[int]:
    """Ingest `items` decisions and mark them sampled as the planner would; their ids."""
    from sqlalchemy import text

    from shadoweval.bench.ingest import BENCH_START, make_decisions
    from shadoweval.bench.scale import _ingest_batches

    decisions = make_decisions(items, prefix, seed=seed)
    _ingest_batches(settings, engine, decisions)
    with engine.begin() as connection:
        ids = connection.execute(
            text(
                "UPDATE decision SET sampled = true, inclusion_probability = :pi,"
                " sampling_skip_reason = NULL"
                " WHERE router = :router AND ts >= :since AND ts < :until"
                " AND request_id = ANY(:request_ids) RETURNING id"
            ),
            {
                "pi": SAMPLED_INCLUSION_PROBABILITY,
                "router": router,
                # The batch's ts (make_decisions: from BENCH_START, ≤ 3 s late): one partition.
                "since": BENCH_START - timedelta(minutes=1),
                "until": BENCH_START + timedelta(days=1),
                "request_ids": [d["request_id"] for d in decisions],
            },
        ).scalars()
        decision_ids = sorted(int(i) for i in ids)
    if len(decision_ids) != items:
        raise RuntimeError(f"marked {len(decision_ids)} of {items} decisions sampled")
    return decision_ids


def _enqueue(engine: Any, settings: Any, decision_ids: list[int]) -> float:
    """The leader's enqueue job, called until every decision of the batch has its verdict
    row (and so its shadow run); seconds. Sampled decisions of earlier runs still without
    a verdict (oldest first) would be enqueued before the batch, as the job would."""
    from sqlalchemy import text

    from shadoweval.db import session_scope
    from shadoweval.providers.pricing import PricingTable
    from shadoweval.shadow import service as shadow_service

    pricing = PricingTable.from_settings(settings)

    def price_per_mtok(model: str) -> float | None:
        price = pricing.lookup(model)
        return None if price is None else price.input + price.output

    given = text("SELECT count(*) FROM verdict WHERE decision_id = ANY(:ids)")
    started = time.perf_counter()
    while True:
        with session_scope(engine) as session:
            result = shadow_service.enqueue_sampled_decisions(
                session=session, settings=settings, price_per_mtok=price_per_mtok
            )
        with engine.connect() as connection:
            if connection.execute(given, {"ids": decision_ids}).scalar_one() == len(decision_ids):
                return time.perf_counter() - started
        if not result.enqueued and not result.skipped:
            raise RuntimeError("enqueue found nothing to enqueue before the batch was")


def _batch_state(engine: Any, decision_ids: list[int]) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.connect() as connection:
        verdicts = connection.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE status = 'done'),"
                " count(*) FILTER (WHERE status IN ('done', 'error', 'skipped')),"
                " coalesce(sum(attempts), 0), max(finished_at)"
                " FROM verdict WHERE decision_id = ANY(:ids)"
            ),
            {"ids": decision_ids},
        ).one()
        runs = connection.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'),"
                " coalesce(sum(attempts), 0) FROM shadow_run WHERE decision_id = ANY(:ids)"
            ),
            {"ids": decision_ids},
        ).one()
    return {
        "verdicts": int(verdicts[0]),
        "verdicts_done": int(verdicts[1]),
        "verdicts_finished": int(verdicts[2]),
        "verdict_claims": int(verdicts[3]),
        "last_finished_at": verdicts[4],
        "shadow_runs": int(runs[0]),
        "shadow_runs_succeeded": int(runs[1]),
        "shadow_run_claims": int(runs[2]),
    }


def _wait_finished(engine: Any, decision_ids: list[int], timeout_seconds: float) -> None:
    from sqlalchemy import text

    deadline = time.monotonic() + timeout_seconds
    statement = text(
        "SELECT count(*) FROM verdict WHERE decision_id = ANY(:ids)"
        " AND status IN ('done', 'error', 'skipped')"
    )
    while True:
        with engine.connect() as connection:
            finished = connection.execute(statement, {"ids": decision_ids}).scalar_one()
        if finished == len(decision_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"workers finished {finished} of {len(decision_ids)} items in {timeout_seconds} s"
            )
        time.sleep(0.05)


class _WorkerProcesses:
    """`count` worker processes, started and connected once; each batch sends `go` to
    the first `workers` of them and `stop` once the batch is finished."""

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "shadoweval.bench.worker_throughput"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        self.ready = False

    def _wait_ready(self) -> None:
        """Each process says `ready` once imported and connected (called before the first
        batch's go, so their start-up overlaps the batch's preparation)."""
        if not self.ready:
            for process in self.processes:
                if self._line(process) != "ready":
                    raise RuntimeError("a bench worker did not start")
            self.ready = True

    @staticmethod
    def _line(process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        return process.stdout.readline().strip()

    @staticmethod
    def _send(process: subprocess.Popen[str], line: str) -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(line + "\n")
            process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def go(self, workers: int) -> datetime:
        """Start the first `workers` processes' lanes; the wall time they were told to."""
        from shadoweval.db import utcnow

        self._wait_ready()
        started = utcnow()
        for process in self.processes[:workers]:
            self._send(process, "go")
        return started

    def stop(self, workers: int) -> list[dict[str, Any]]:
        """Stop those lanes after their current job; each process's job counts."""
        for process in self.processes[:workers]:
            self._send(process, "stop")
        reports = []
        for process in self.processes[:workers]:
            line = self._line(process)
            reports.append(json.loads(line) if line else {})
        return reports

    def close(self) -> None:
        for process in self.processes:
            self._send(process, "exit")
        for process in self.processes:
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def measure_batch(
    *,
    engine: Any,
    settings: Any,
    processes: _WorkerProcesses,
    workers: int,
    items: int,
    prefix: str,
    seed: int,
    router: str,
) -> dict[str, Any]:
    """One fresh batch of `items` through `workers` worker processes; its figures."""
    decision_ids = _sampled_batch(engine, settings, items, prefix, seed, router)
    enqueue_seconds = _enqueue(engine, settings, decision_ids)
    go = processes.go(workers)
    try:
        _wait_finished(engine, decision_ids, timeout_seconds=max(120.0, items / 2))
    finally:
        reports = processes.stop(workers)
    state = _batch_state(engine, decision_ids)
    once = (
        state["verdicts"] == state["verdicts_done"] == state["verdict_claims"] == items
        and state["shadow_runs"] == state["shadow_runs_succeeded"] == state["shadow_run_claims"]
    )
    if not once:
        raise RuntimeError(f"the batch was not processed exactly once: {state}")
    seconds = (state["last_finished_at"] - go).total_seconds()
    failures = sum(
        job.get("failures", 0) for report in reports for job in report.get("jobs", {}).values()
    )
    # The worker processes' own CPU (PostgreSQL's is not in it): the figure that holds
    # across runs on a machine other processes load, where items/s follows their load.
    cpu_seconds = sum(report.get("cpu_seconds", 0.0) for report in reports)
    return {
        "workers": workers,
        "items": items,
        "worker_cpu_ms_per_item": round(cpu_seconds * 1000 / items, 1),
        "shadow_runs": state["shadow_runs"],
        "enqueue_seconds": round(enqueue_seconds, 2),
        "seconds": round(seconds, 2),
        "items_per_second": round(items / seconds, 1),
        "job_failures": failures,
        "load_average_1": round(os.getloadavg()[0], 2),
    }


def run_worker_throughput(
    *,
    engine: Any,
    settings: Any,
    database_url: str,
    data_dir: Path,
    items: int,
    rounds: int,
    tag: str,
    router: str,
) -> dict[str, Any]:
    """One worker, then two, on fresh equal batches, `rounds` times alternating; medians."""
    import numpy as np

    batch_settings = settings.model_copy(update={"tier_models": {router: TIER_MODELS}})
    batches: list[dict[str, Any]] = []
    processes = _WorkerProcesses(2, worker_env(database_url, data_dir, router))
    try:
        for number in range(rounds):
            for workers in (1, 2):
                batches.append(
                    measure_batch(
                        engine=engine,
                        settings=batch_settings,
                        processes=processes,
                        workers=workers,
                        items=items,
                        prefix=f"work{tag}-{number}-{workers}",
                        seed=1000 + 2 * number + workers,
                        router=router,
                    )
                )
    finally:
        processes.close()
    one, two = (
        float(np.median([b["items_per_second"] for b in batches if b["workers"] == n]))
        for n in (1, 2)
    )
    return {
        "items_per_batch": items,
        "rounds": rounds,
        "one_worker_items_per_second": round(one, 1),
        "two_workers_items_per_second": round(two, 1),
        "two_over_one": round(two / one, 3),
        "worker_cpu_ms_per_item_median": round(
            float(np.median([batch["worker_cpu_ms_per_item"] for batch in batches])), 1
        ),
        "enqueue_seconds_median": round(
            float(np.median([batch["enqueue_seconds"] for batch in batches])), 2
        ),
        "batches": batches,
    }


def _serve() -> None:
    """One worker process: connect, say `ready`, run the work lanes from each `go` to its
    `stop` (then report the batch's job counts), until anything else is read."""
    import asyncio

    from shadoweval.config import Settings
    from shadoweval.db import check_database_ready, create_db_engine
    from shadoweval.runtime.worker import build_runtime, start_work_lanes

    settings = Settings()
    engine = create_db_engine(
        settings, statement_timeout_seconds=settings.db_worker_statement_timeout_seconds
    )
    check_database_ready(engine)
    runtime, close_providers = build_runtime(settings, engine)

    async def main() -> None:
        print("ready", flush=True)
        while (await asyncio.to_thread(sys.stdin.readline)).strip() == "go":
            cpu_started = time.process_time()
            stop = asyncio.Event()
            lanes = start_work_lanes(runtime, stop)
            await asyncio.to_thread(sys.stdin.readline)  # "stop", or the end of stdin
            stop.set()
            await asyncio.gather(*lanes, return_exceptions=True)
            jobs = {
                name: {"runs": job.runs, "failures": job.failures, "last_error": job.last_error}
                for name, job in runtime.stats.items()
            }
            runtime.stats = {}  # each batch's counts on their own
            cpu_seconds = time.process_time() - cpu_started
            print(
                json.dumps({"worker": runtime.worker_id, "jobs": jobs, "cpu_seconds": cpu_seconds}),
                flush=True,
            )
        await close_providers()

    asyncio.run(main())
    engine.dispose()


if __name__ == "__main__":
    _serve()
