"""`shadoweval bench ingest`: decisions/s through the HTTP API, beside two ceilings.

The API runs as its own processes on a fresh database: one replica first, then
`api_processes` replicas (as deploy/ runs them behind a proxy; here the load generator
spreads its connections over them). A load generator in this process posts realistic
decisions (payloads kept for the 20 % sampled) in batches of 500 over several
connections, then single decisions at a fixed offered rate to measure latency. In the
same run, two ceilings for the same rows into the same kind of database: the same
parse-validate-insert path called in-process without HTTP (one process, as one
replica), and a raw `executemany` of the decision rows alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

TOPICS = ["billing", "code", "chat", "legal", "travel", "health", "shopping", "math"]


# The decisions' clock: a router logs each decision as it is made, so `ts` runs forward
# (500 decisions/s of traffic), each up to 3 s late as clients batch and flush.
BENCH_START = datetime(2026, 11, 27, tzinfo=UTC)


def make_decisions(n: int, prefix: str, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    lateness_ms = rng.integers(0, 3000, size=n)
    words = [
        "the",
        "a",
        "router",
        "cheap",
        "strong",
        "model",
        "answer",
        "question",
        "billing",
        "refund",
        "code",
        "python",
    ]
    out = []
    for i in range(n):
        strong = rng.random() < 0.3
        prompt = " ".join(rng.choice(words, size=int(rng.integers(20, 120))))
        out.append(
            {
                "request_id": f"{prefix}-{i}",
                "router": "bench-router",
                "ts": (BENCH_START + timedelta(milliseconds=2 * i - int(lateness_ms[i])))
                .isoformat()
                .replace("+00:00", "Z"),
                "tier": "strong" if strong else "cheap",
                "chosen_model": "claude-sonnet-4-6" if strong else "claude-haiku-4-5",
                "router_score": float(rng.random()),
                "threshold": 0.5,
                "segment": {"topic": TOPICS[i % len(TOPICS)], "language": "en"},
                "features": {"input_tokens": int(rng.integers(10, 2000)), "has_code": bool(i % 3)},
                "request": {"messages": [{"role": "user", "content": prompt}]},
                "response": {"text": prompt[::-1], "finish_reason": "stop"},
                "usage": {"input_tokens": len(prompt) // 4, "output_tokens": 120},
                "cost_usd": 0.002,
                "latency_ms": float(rng.integers(200, 2000)),
            }
        )
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "SHADOWEVAL_DATABASE_URL": database_url,
        "SHADOWEVAL_DATA_DIR": str(data_dir),
        "SHADOWEVAL_SAMPLING_RATE_BY_TIER": json.dumps({"cheap": 0.2, "strong": 0.2}),
        "SHADOWEVAL_DAILY_SHADOW_BUDGET_USD": "1000000000",
        "SHADOWEVAL_LOG_LEVEL": "WARNING",
        "SHADOWEVAL_INGEST_MAX_CONCURRENT": "8",
    }


def _fresh_database(database_url: str | None, name: str) -> tuple[str, Path]:
    from sqlalchemy import create_engine, text

    data_dir = Path(tempfile.mkdtemp(prefix=f"shadoweval-bench-{name}-"))
    if database_url is None:
        return f"sqlite:///{data_dir / 'bench.db'}", data_dir
    from shadoweval.config import Settings

    url = Settings(database_url=database_url).resolved_database_url
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    database = f"shadoweval_bench_{name}_{os.getpid()}"
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    engine.dispose()
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False), data_dir


def _drop_databases(server_url: str, urls: list[str]) -> None:
    """Remove the databases this benchmark created on a PostgreSQL server."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from shadoweval.config import Settings

    engine = create_engine(
        Settings(database_url=server_url).resolved_database_url, isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        for url in urls:
            name = make_url(url).database
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _bulk_load(
    cursor: Any, dialect: str, table: str, columns: str, rows: Sequence[Sequence[Any]]
) -> None:
    """`rows` into `table` (`columns`, comma-separated) through the raw DB-API cursor: COPY on
    PostgreSQL, one executemany elsewhere. The caller commits."""
    if dialect == "postgresql":
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" * len(columns.split(",")))
        statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 (constants)
        cursor.executemany(statement, rows)


def _prepare(database_url: str, data_dir: Path) -> str:
    """Migrate and return an ingest key."""
    from shadoweval.auth import service as auth_service
    from shadoweval.auth.models import Scope
    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, session_scope, upgrade_database

    settings = Settings(database_url=database_url, data_dir=data_dir)
    upgrade_database(settings)
    engine = create_db_engine(settings)
    with session_scope(engine) as session:
        key = auth_service.create_key(session=session, scopes=[Scope.INGEST]).key
    engine.dispose()
    return key


def _batched(urls: list[str], key: str, decisions: list[dict[str, Any]], connections: int) -> float:
    bodies = [
        "\n".join(json.dumps(d) for d in decisions[i : i + 500])
        for i in range(0, len(decisions), 500)
    ]
    queue = list(reversed(bodies))
    lock = threading.Lock()
    failures: list[int] = []

    def worker(url: str) -> None:
        with httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"},
            timeout=120,
        ) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                while True:
                    response = client.post("/v1/decisions", content=body)
                    if response.status_code == 503:
                        time.sleep(float(response.headers.get("retry-after", "1")))
                        continue
                    if response.status_code != 202:
                        failures.append(response.status_code)
                    break

    threads = [
        threading.Thread(target=worker, args=(urls[i % len(urls)],)) for i in range(connections)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"batched posts failed: {failures[:5]}")
    return len(decisions) / elapsed


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for the load generator.

    httpx's async client spent ~1 ms of CPU per request on this machine, so at 200 req/s
    the generator, not the server, set the latency it measured; this costs a few µs.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def _single_posts(
    urls: list[str], key: str, decisions: list[dict[str, Any]], rate: float
) -> tuple[list[float], int, float]:
    """Open-loop: send at a fixed offered rate, measure each request's latency.

    Each request takes an idle keep-alive connection or opens one (as a router fleet
    would), so a slow answer never delays the next request's start; requests take the
    replicas in turn.
    """
    latencies: list[float] = []
    failures: list[int] = []
    pools: dict[tuple[str, int], list[_Connection]] = {}

    def request_bytes(decision: dict[str, Any], host: str, port: int) -> bytes:
        body = json.dumps(decision).encode()
        head = (
            f"POST /v1/decisions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(request: bytes, host: str, port: int) -> bool:
        # A kept-alive connection the server closed while idle (uvicorn: after 5 s) is
        # retried on a new one, as HTTP clients do; a fresh connection is not.
        idle = pools.setdefault((host, port), [])
        while idle:
            connection = idle.pop()
            try:
                status = await connection.post(request)
            except (ConnectionResetError, asyncio.IncompleteReadError):
                connection.writer.close()
                continue
            idle.append(connection)
            return status == 202
        connection = _Connection(*await asyncio.open_connection(host, port))
        status = await connection.post(request)
        idle.append(connection)
        return status == 202

    async def one(request: bytes, host: str, port: int) -> None:
        started = time.perf_counter()
        try:
            ok = await asyncio.wait_for(send(request, host, port), timeout=10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            ok = False
        # Failures count at the time they took: an overloaded server shows in the tail.
        latencies.append((time.perf_counter() - started) * 1000)
        if not ok:
            failures.append(1)

    targets = [
        (host, int(port)) for host, port in (u.removeprefix("http://").split(":") for u in urls)
    ]
    requests = [
        (request_bytes(d, *targets[i % len(targets)]), *targets[i % len(targets)])
        for i, d in enumerate(decisions)
    ]
    start = time.perf_counter()
    tasks = []
    for i, (request, host, port) in enumerate(requests):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, host, port)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for idle in pools.values():
        for connection in idle:
            connection.writer.close()
    return latencies, len(failures), elapsed


def _in_process(
    database_url: str, data_dir: Path, decisions: list[dict[str, Any]]
) -> tuple[float, float]:
    """The same parse → validate → insert path, without HTTP: decisions/s, and CPU µs per
    decision (this thread does all of it, so on a shared machine the CPU figure holds
    where the rate follows the other processes' load; PostgreSQL's own work is not in it)."""
    from sqlmodel import Session

    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine
    from shadoweval.ingest import service
    from shadoweval.ingest.parsing import parse_items
    from shadoweval.runtime import collector
    from shadoweval.sampling.service import SamplingPlan

    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        sampling_rate_by_tier={"cheap": 0.2, "strong": 0.2},
        daily_shadow_budget_usd=1e9,
    )
    engine = create_db_engine(settings)
    plan = SamplingPlan()
    bodies = [
        "\n".join(json.dumps(d) for d in decisions[i : i + 500]).encode()
        for i in range(0, len(decisions), 500)
    ]
    collector.tune_for_serving()  # as `shadoweval api` does
    started, cpu_started = time.perf_counter(), time.process_time()
    for body in bodies:
        parsed = parse_items(body, "application/x-ndjson", max_items=1000, defer_decoding=True)
        with Session(engine) as session:
            service.ingest_decisions(session=session, settings=settings, parsed=parsed, plan=plan)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    engine.dispose()
    return len(decisions) / elapsed, cpu * 1e6 / len(decisions)


def _naive_utc_text(ts: str) -> str:
    """`ts` as the decision table stores it on SQLite (naive UTC with microseconds)."""
    return datetime.fromisoformat(ts).replace(tzinfo=None).isoformat(" ", "microseconds")


def _raw_executemany(database_url: str, decisions: list[dict[str, Any]]) -> tuple[float, float]:
    """The decision rows alone, one executemany per 500, no validation, no payloads: rows/s
    and CPU µs per row (of this process; on PostgreSQL the server's work is not in it)."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    rows = [
        (
            d["router"],
            d["request_id"],
            _naive_utc_text(d["ts"]),
            _naive_utc_text(d["ts"]),
            d["tier"],
            d["chosen_model"],
            d["chosen_model"],
            False,
            False,
            "[]",
            d["router_score"],
            "p_strong_needed",
            json.dumps(d["segment"]),
            d["segment"]["topic"],
            json.dumps(d["features"]),
            "{}",
            True,
            True,
            0.2,
            False,
            False,
            False,
        )
        for d in decisions
    ]
    columns = (
        "router, request_id, ts, received_at, tier, chosen_model, served_model, failover, "
        "fallback, candidates, router_score, score_semantics, segment, segment_value, features, "
        "extra, has_request, has_response, inclusion_probability, sampled, payload_stored, "
        "payload_redacted"
    )
    marker = "%s" if engine.dialect.name == "postgresql" else "?"
    statement = f"INSERT INTO decision ({columns}) VALUES ({', '.join([marker] * 22)})"  # noqa: S608
    raw = engine.raw_connection()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        cursor = raw.cursor()
        for i in range(0, len(rows), 500):
            cursor.executemany(statement, rows[i : i + 500])
            raw.commit()
    finally:
        raw.close()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    engine.dispose()
    return len(rows) / elapsed, cpu * 1e6 / len(rows)


class _ApiReplicas:
    """`count` API processes (`shadoweval api`) on one database, each on its own port."""

    def __init__(self, database_url: str, data_dir: Path, count: int) -> None:
        env = {**os.environ, **_settings_env(database_url, data_dir)}
        ports = [_free_port() for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{port}" for port in ports]
        self.servers = [
            subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-m", "shadoweval", "api", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in ports
        ]

    def __enter__(self) -> list[str]:
        deadline = time.monotonic() + 30
        for url in self.urls:
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"the API at {url} did not start")
                time.sleep(0.1)
        return self.urls

    def __exit__(self, *_exc: object) -> None:
        for server in self.servers:
            server.send_signal(signal.SIGTERM)
        for server in self.servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def run_ingest_bench(
    *,
    decisions: int = 50_000,
    single_posts: int = 2_000,
    rate: float = 200.0,
    connections: int = 4,
    api_processes: int = 2,
    database_url: str | None = None,
) -> dict[str, Any]:
    created: list[tuple[str, Path]] = []

    def fresh(name: str) -> tuple[str, Path, str]:
        url, data_dir = _fresh_database(database_url, name)
        created.append((url, data_dir))
        return url, data_dir, _prepare(url, data_dir)

    one_url, one_dir, one_key = fresh("one")
    with _ApiReplicas(one_url, one_dir, 1) as urls:
        batched_one = _batched(urls, one_key, make_decisions(decisions, "one"), connections)
    api_url, api_dir, key = fresh("api")
    with _ApiReplicas(api_url, api_dir, api_processes) as urls:
        rows = make_decisions(decisions, "batched")
        batched = _batched(urls, key, rows, connections)
        latencies, single_failures, single_seconds = asyncio.run(
            _single_posts(urls, key, make_decisions(single_posts, "single", seed=1), rate)
        )

    process_url, process_dir, _ = fresh("process")
    in_process, in_process_cpu_us = _in_process(
        process_url, process_dir, make_decisions(decisions, "inproc")
    )
    raw_url, _, _ = fresh("raw")
    raw, raw_cpu_us = _raw_executemany(raw_url, make_decisions(decisions, "raw"))
    if database_url is not None:
        _drop_databases(database_url, [url for url, _ in created])
    for _, data_dir in created:
        shutil.rmtree(data_dir, ignore_errors=True)
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
    dialect = "postgresql" if database_url else "sqlite"
    return {
        "benchmark": "ingest",
        "database": dialect,
        "decisions": decisions,
        "connections": connections,
        "api_processes": api_processes,
        "batched_decisions_per_second": round(batched),
        "batched_one_process_decisions_per_second": round(batched_one),
        "in_process_decisions_per_second": round(in_process),
        "raw_executemany_rows_per_second": round(raw),
        # One API process against the same path in one process without HTTP.
        "http_over_in_process": round(batched_one / in_process, 3),
        "in_process_over_raw": round(in_process / raw, 3),
        # CPU time of the bench's own process per decision (per row for raw): the figures
        # to compare across runs on a machine other processes load.
        "in_process_cpu_us_per_decision": round(in_process_cpu_us, 1),
        "raw_executemany_cpu_us_per_row": round(raw_cpu_us, 1),
        "single_post_rate_per_second": rate,
        "single_post_p50_ms": round(p50, 2),
        "single_post_p99_ms": round(p99, 2),
        "single_post_failures": single_failures,
        "single_post_achieved_rate_per_second": round(single_posts / single_seconds, 1),
        "targets": {
            "batched_decisions_per_second": 20_000 if dialect == "sqlite" else 10_000,
            "http_over_in_process": 0.5,
            "single_post_p99_ms": 15,
        },
    }
