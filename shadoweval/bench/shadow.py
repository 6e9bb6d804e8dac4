"""`shadoweval bench shadow`: shadow runs and their two judge calls against a slow fake provider.

Each size runs in a fresh child process, so its peak memory is its own. The
fake provider runs in another process and answers every call after a fixed
latency; the ceiling is (calls in flight) ÷ latency. Every call goes through
the real path: the Anthropic SDK, the resilience layer, leased work items in
the database, the judge's parsing and labels.
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
    *, runs: int, in_flight: int, fake_url: str, database_url: str | None
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
    from shadoweval.shadow import service as shadow_service

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
    return {
        "runs": runs,
        "verdicts_done": done,
        "calls": calls,
        "seconds": round(elapsed, 2),
        "calls_per_second": round(calls / elapsed, 1),
        "peak_rss_mb_before_drain": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "database": engine.dialect.name,
    }


def run_bench(
    *, sizes: list[int], in_flight: int, latency_ms: float, database_url: str | None
) -> dict[str, Any]:
    fake = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [
            sys.executable,
            "-m",
            "shadoweval.testing.fake_provider",
            "--latency-s",
            str(latency_ms / 1000),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert fake.stdout is not None
        fake_url = fake.stdout.readline().strip()
        ceiling = in_flight / (latency_ms / 1000)
        results = []
        for runs in sizes:
            print(f"… {runs} runs", file=sys.stderr, flush=True)
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
                    *(["--database-url", database_url] if database_url else []),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            figures["ratio_to_ceiling"] = round(figures["calls_per_second"] / ceiling, 3)
            results.append(figures)
        return {
            "benchmark": "shadow",
            "mode": "realtime",
            "in_flight": in_flight,
            "latency_ms": latency_ms,
            "ceiling_calls_per_second": round(ceiling, 1),
            "results": results,
        }
    finally:
        fake.terminate()
        fake.wait(timeout=10)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="child process of `shadoweval bench shadow`")
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--in-flight", type=int, required=True)
    parser.add_argument("--fake-url", required=True)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    figures = run_child(
        runs=args.runs,
        in_flight=args.in_flight,
        fake_url=args.fake_url,
        database_url=args.database_url,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
