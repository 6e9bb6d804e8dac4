"""`shadoweval bench shadow`: shadow runs and their two judge calls against a slow fake provider.

Each size runs in a fresh child process, so its peak memory is its own. The
fake provider runs in another process and answers every call after a fixed
latency; the ceiling is (calls in flight) ÷ latency. Every call goes through
the real path: the Anthropic SDK, the resilience layer, leased work items in
the database, the judge's parsing and labels.

`--mode batch` runs each size twice, each time against a fresh fake: realtime as
above, then in batch mode (Message Batches: one shadow batch, then one judge
batch, the fake ending each batch `batch_delay_ms` after its creation), and
reports the submit-and-collect throughput and the measured cost ratio
batch ÷ realtime for the same work.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHADOW_MODEL, CHEAP_MODEL, JUDGE_MODEL = "claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-5"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_child(
    *,
    runs: int,
    in_flight: int,
    fake_url: str,
    database_url: str | None,
    mode: str = "realtime",
) -> dict[str, Any]:
    """One measurement: ingest `runs` sampled decisions, drain them through the worker lanes."""
    from sqlalchemy import func, select
    from sqlmodel import Session

    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, session_scope, upgrade_database
    from shadoweval.ingest import service as ingest_service
    from shadoweval.ingest.parsing import ParsedBody
    from shadoweval.judge.models import OPEN_VERDICT_STATUSES, Verdict
    from shadoweval.providers.pricing import PricingTable
    from shadoweval.providers.registry import build_provider_registry
    from shadoweval.runtime.worker import WorkerRuntime, start_work_lanes
    from shadoweval.shadow import batch as batch_service
    from shadoweval.shadow import service as shadow_service
    from shadoweval.shadow.models import ProviderBatch, ShadowRun

    data_dir = Path(tempfile.mkdtemp(prefix="shadoweval-bench-"))
    lanes = 8
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        anthropic_api_key="bench-key",
        anthropic_base_url=fake_url,
        tier_models={"*": {"cheap": CHEAP_MODEL, "strong": SHADOW_MODEL}},
        judge_model=JUDGE_MODEL,
        store_payloads="all",
        sampling_rate_by_tier={"cheap": 1.0},
        provider_max_in_flight=in_flight,
        provider_requests_per_minute=1e9,
        provider_tokens_per_minute=1e12,
        provider_timeout_s=30,
        worker_lanes=lanes,
        # Enough claimed items that the provider's in-flight cap, not the lanes, is the bound.
        worker_batch_size=max(1, (in_flight + lanes - 1) // lanes),
        worker_poll_seconds=0.05,
        shadow_mode=mode,
        batch_max_items=50_000,
        batch_poll_interval_seconds=0.1,
    )
    upgrade_database(settings)
    engine = create_db_engine(settings)
    items = [
        {
            "request_id": f"bench-{i}",
            "router": "bench-router",
            "tier": "cheap",
            "chosen_model": CHEAP_MODEL,
            "segment": {"topic": f"t{i % 10}"},
            "request": {"messages": [{"role": "user", "content": f"Question number {i}?"}]},
            "response": {"text": f"Answer number {i}."},
        }
        for i in range(runs)
    ]
    with Session(engine) as session:
        for start in range(0, runs, 1000):
            ingest_service.ingest_decisions(
                session=session,
                settings=settings,
                parsed=ParsedBody(items=items[start : start + 1000]),
            )
    pricing = PricingTable.from_settings(settings)

    def price(model: str) -> float | None:
        found = pricing.lookup(model)
        return None if found is None else found.input + found.output

    while True:
        with session_scope(engine) as session:
            result = shadow_service.enqueue_sampled_decisions(
                session=session, settings=settings, price_per_mtok=price, limit=1000
            )
        if not result.enqueued and not result.skipped:
            break

    verdicts = Verdict.__table__  # type: ignore[attr-defined]

    def count_verdicts(*statuses: str) -> int:
        with engine.connect() as connection:
            query = select(func.count()).select_from(verdicts)
            return int(connection.scalar(query.where(verdicts.c.status.in_(statuses))) or 0)

    def open_count() -> int:
        return count_verdicts(*OPEN_VERDICT_STATUSES)

    async def drain() -> float:
        registry = build_provider_registry(settings)
        runtime = WorkerRuntime(
            engine=engine,
            settings=settings,
            provider_for_model=registry.for_model,
            price_per_mtok=price,
        )
        stop = asyncio.Event()
        started = time.perf_counter()
        tasks = start_work_lanes(runtime, stop)
        while await asyncio.to_thread(open_count) > 0:
            if mode == "batch":
                # What the submit_batches and poll_batches jobs do, back to back.
                await batch_service.submit_due_batches(
                    engine=engine,
                    settings=settings,
                    provider_for_model=registry.for_model,
                    owner="bench",
                    force=True,
                )
                await batch_service.poll_batches(
                    engine=engine,
                    settings=settings,
                    provider_for_model=registry.for_model,
                    owner="bench",
                )
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await registry.aclose()
        return elapsed

    rss_before = _peak_rss_mb()
    elapsed = asyncio.run(drain())
    done = count_verdicts("done")
    calls = runs * 3  # one shadow call and two judge calls per run
    with engine.connect() as connection:
        shadow_cost = connection.scalar(select(func.sum(ShadowRun.cost_usd)))
        judge_cost = connection.scalar(select(func.sum(Verdict.judge_cost_usd)))
        batches = connection.scalar(select(func.count()).select_from(ProviderBatch))
    return {
        "mode": mode,
        "cost_usd": round(float(shadow_cost or 0.0) + float(judge_cost or 0.0), 6),
        "batches": int(batches or 0),
        "runs": runs,
        "verdicts_done": done,
        "calls": calls,
        "seconds": round(elapsed, 2),
        "calls_per_second": round(calls / elapsed, 1),
        "peak_rss_mb_before_drain": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "database": engine.dialect.name,
    }


def _start_fake(latency_ms: float, batch_delay_ms: float) -> tuple[subprocess.Popen[str], str]:
    fake = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [
            sys.executable,
            "-m",
            "shadoweval.testing.fake_provider",
            "--latency-s",
            str(latency_ms / 1000),
            "--batch-delay-s",
            str(batch_delay_ms / 1000),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert fake.stdout is not None
    return fake, fake.stdout.readline().strip()


def _measure(
    *, runs: int, in_flight: int, fake_url: str, database_url: str | None, mode: str
) -> dict[str, Any]:
    child = subprocess.run(  # noqa: S603 (our own interpreter and module)
        [
            sys.executable,
            "-m",
            "shadoweval.bench.shadow",
            "--runs",
            str(runs),
            "--in-flight",
            str(in_flight),
            "--fake-url",
            fake_url,
            "--mode",
            mode,
            *(["--database-url", database_url] if database_url else []),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return figures


def run_bench(
    *,
    sizes: list[int],
    in_flight: int,
    latency_ms: float,
    database_url: str | None,
    mode: str = "realtime",
    batch_delay_ms: float = 1000.0,
) -> dict[str, Any]:
    ceiling = in_flight / (latency_ms / 1000)
    results = []
    modes = ["realtime", "batch"] if mode == "batch" else ["realtime"]
    for runs in sizes:
        row: dict[str, Any] = {}
        for measured in modes:
            print(f"… {runs} runs, {measured}", file=sys.stderr, flush=True)
            # A fresh fake per measurement: its prompt caches start cold every time.
            fake, fake_url = _start_fake(latency_ms, batch_delay_ms)
            try:
                figures = _measure(
                    runs=runs,
                    in_flight=in_flight,
                    fake_url=fake_url,
                    database_url=database_url,
                    mode=measured,
                )
            finally:
                fake.terminate()
                fake.wait(timeout=10)
            figures["ratio_to_ceiling"] = round(figures["calls_per_second"] / ceiling, 3)
            row[measured] = figures
        if mode == "batch":
            realtime, batch = row["realtime"], row["batch"]
            results.append(
                {
                    "runs": runs,
                    "realtime": realtime,
                    "batch": batch,
                    "cost_ratio_batch_to_realtime": round(
                        batch["cost_usd"] / realtime["cost_usd"], 4
                    )
                    if realtime["cost_usd"]
                    else None,
                }
            )
        else:
            results.append(row["realtime"])
    return {
        "benchmark": "shadow",
        "mode": mode,
        "in_flight": in_flight,
        "latency_ms": latency_ms,
        "batch_delay_ms": batch_delay_ms if mode == "batch" else None,
        "ceiling_calls_per_second": round(ceiling, 1),
        "results": results,
    }


def format_batch_report(figures: dict[str, Any]) -> list[str]:
    """Lines of `bench shadow --mode batch`: each size, realtime against batch."""
    lines = [
        f"batch mode: the fake ends each batch {figures['batch_delay_ms']:.0f} ms after creation; "
        "realtime at the ceiling above"
    ]
    for row in figures["results"]:
        for mode in ("realtime", "batch"):
            m = row[mode]
            lines.append(
                f"{row['runs']:>6} runs  {mode:<8}  {m['calls']:>6} calls  {m['seconds']:>7.1f} s  "
                f"{m['calls_per_second']:>7.1f} calls/s  {m['batches']:>3} batches  "
                f"cost {m['cost_usd']:.4f} USD  ({m['database']})"
            )
        lines.append(
            f"{row['runs']:>6} runs  cost ratio batch/realtime: "
            f"{row['cost_ratio_batch_to_realtime']}"
        )
    return lines


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="child process of `shadoweval bench shadow`")
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--in-flight", type=int, required=True)
    parser.add_argument("--fake-url", required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--mode", choices=["realtime", "batch"], default="realtime")
    args = parser.parse_args()
    figures = run_child(
        runs=args.runs,
        in_flight=args.in_flight,
        fake_url=args.fake_url,
        database_url=args.database_url,
        mode=args.mode,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
