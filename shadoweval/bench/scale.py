"""`shadoweval bench scale`: the decision log at tens of millions of rows on PostgreSQL.

Bulk-loads `decisions` synthetic decisions (COPY; load time reported) spread over 30
decision days ending where the live traffic starts (`bench.ingest.BENCH_START`), in equal
steps to the checkpoints 0, N/2 and N (0, 10 and 20 M by default). Each step spans all
30 days, so a fixed window holds twice the rows at N as at N/2. Every 200th decision
carries a finished verdict (0.5 %, a sampling rate a busy router affords), so the
segment and calibration reads have labels to fold; the snapshots are rebuilt from the
log after each step, as the aggregator keeps them.

At each checkpoint, against the same database:
- batched ingest: decisions/s of `ingest.service.ingest_decisions` (prepare → store, the
  real path every route uses) in batches of 500, at the head of the stream;
- single posts: p50/p99 of one decision per POST /v1/decisions on a `shadoweval api`
  process (sequential, so the figure is latency, not queueing);
- reads: p50/p99 of GET /v1/segments, /v1/economics, /v1/calibration and the dashboard's
  other reads (the heaviest one named) over the last 7 decision days, on that process
  with its default 5 s statement limit (a read past it is a 503, counted);
- size: decision table and index bytes (pg_table_size, pg_indexes_size) per million rows.
Posts and reads are timed while a router's traffic keeps arriving: `background_rate`
decisions/s (100 by default, the issue's busy router) posted in batches to the same API.
At the last checkpoint: a DELETE of one day's decisions beside a DROP TABLE of a table
holding the same rows (what dropping a day partition costs; the log is not partitioned).
The machine's load average is recorded with each checkpoint: on a shared machine the
figures move with it.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from shadoweval.bench.bulk_verdicts import VERDICT_COLUMNS, verdict_row
from shadoweval.bench.ingest import (
    BENCH_START,
    TOPICS,
    _ApiReplicas,
    _drop_databases,
    _fresh_database,
    make_decisions,
)

DAYS = 30
ROUTER = "bench-router"  # the router `make_decisions` logs as: reads see one stream
LOAD_START = BENCH_START - timedelta(days=DAYS)
VERDICT_EVERY = 200
COPY_CHUNK = 250_000
READ_WINDOW = timedelta(days=7)
BULK_STATEMENT_TIMEOUT_SECONDS = 6 * 3600.0

DECISION_COLUMNS = (
    "router, request_id, ts, received_at, tier, chosen_model, served_model, failover, "
    "fallback, candidates, router_score, score_semantics, threshold, segment, segment_value, "
    "features, input_tokens, output_tokens, cost_usd, latency_ms, session_id, extra, "
    "has_request, has_response, inclusion_probability, sampled, payload_stored"
)


def _ts_texts(seconds: np.ndarray[Any, Any]) -> list[str]:
    """Offsets from LOAD_START as timestamptz text, vectorised."""
    base = np.datetime64(LOAD_START.replace(tzinfo=None), "us")
    stamps = base + (seconds * 1e6).astype("timedelta64[us]")
    return [f"{text}+00" for text in np.datetime_as_string(stamps, unit="us").tolist()]


def _copy_chunk(cursor: Any, first: int, count: int, rng: np.random.Generator) -> int:
    """COPY decisions first … first+count−1 (ts sorted within the chunk over all 30 days),
    then their verdicts; returns the verdicts written. The caller commits."""
    seconds = np.sort(rng.uniform(0, DAYS * 86400, count))
    ts = _ts_texts(seconds)
    strong = rng.random(count) < 0.25
    topic = rng.choice(len(TOPICS), size=count, p=np.linspace(8, 1, len(TOPICS)) / 36)
    score = rng.beta(2, 5, count)
    input_tokens = rng.integers(50, 4000, count)
    cost = np.where(strong, 0.006, 0.002) * rng.uniform(0.5, 1.5, count)
    latency = np.where(strong, 1500.0, 400.0) * rng.uniform(0.5, 2, count)
    in_session = rng.random(count) < 0.3
    segments = [f'{{"topic": "{name}", "language": "en"}}' for name in TOPICS]
    with cursor.copy(f"COPY decision ({DECISION_COLUMNS}) FROM STDIN") as copy:
        for i in range(count):
            model = "claude-sonnet-4-6" if strong[i] else "claude-haiku-4-5"
            copy.write_row(
                (
                    ROUTER,
                    f"bulk-{first + i}",
                    ts[i],
                    ts[i],
                    "strong" if strong[i] else "cheap",
                    model,
                    model,
                    False,
                    False,
                    "[]",
                    float(score[i]),
                    "p_strong_needed",
                    0.5,
                    segments[topic[i]],
                    TOPICS[topic[i]],
                    "{}",
                    int(input_tokens[i]),
                    120,
                    float(cost[i]),
                    float(latency[i]),
                    f"sess-{(first + i) // 5}" if in_session[i] else None,
                    "{}",
                    False,
                    False,
                    0.005,
                    i % VERDICT_EVERY == 0 and not strong[i],
                    False,
                )
            )
    judged = [i for i in range(0, count, VERDICT_EVERY) if not strong[i]]
    cursor.execute(
        "SELECT request_id, id FROM decision WHERE router = %s AND request_id = ANY(%s)",
        (ROUTER, [f"bulk-{first + i}" for i in judged]),
    )
    ids = dict(cursor.fetchall())
    harm = rng.random(count) < np.clip(score * 0.6, 0, 1)
    with cursor.copy(f"COPY verdict ({VERDICT_COLUMNS}) FROM STDIN") as copy:
        for i in judged:
            copy.write_row(
                verdict_row(
                    decision_id=ids[f"bulk-{first + i}"],
                    router=ROUTER,
                    request_id=f"bulk-{first + i}",
                    ts=ts[i],
                    segment_value=TOPICS[topic[i]],
                    router_score=float(score[i]),
                    harm=bool(harm[i]),
                    inclusion_probability=0.005,
                )
            )
    return len(judged)


def _bulk_load(engine: Any, first: int, count: int, rng: np.random.Generator) -> dict[str, Any]:
    """COPY `count` decisions in chunks, then VACUUM (ANALYZE) the loaded tables; timed.

    The vacuum is what autovacuum would do to the fresh rows soon after (insert-triggered
    vacuum, the visibility map, hint bits); run here, it is measured on its own instead of
    slowing whichever checkpoint measurement it happens to overlap.
    """
    started = time.perf_counter()
    verdicts = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for offset in range(0, count, COPY_CHUNK):
            verdicts += _copy_chunk(cursor, first + offset, min(COPY_CHUNK, count - offset), rng)
            raw.commit()
        copied = time.perf_counter() - started
        raw.driver_connection.autocommit = True  # VACUUM runs outside a transaction
        vacuum_started = time.perf_counter()
        cursor.execute("VACUUM (ANALYZE) decision, verdict")
        vacuumed = time.perf_counter() - vacuum_started
        raw.driver_connection.autocommit = False
    finally:
        raw.close()
    return {
        "decisions": count,
        "verdicts": verdicts,
        "copy_seconds": round(copied, 1),
        "copy_decisions_per_second": round(count / copied) if copied else None,
        "vacuum_analyze_seconds": round(vacuumed, 1),
    }


def _rebuild_snapshots(engine: Any) -> float:
    """The snapshots the aggregator keeps, rebuilt from the log (as after a backfill)."""
    from shadoweval.analytics import snapshots

    started = time.perf_counter()
    snapshots.rebuild_traffic_snapshots(engine)
    while snapshots.aggregate_finished_verdicts(engine, limit=100_000):
        pass
    return round(time.perf_counter() - started, 1)


def _ingest_batches(settings: Any, engine: Any, decisions: list[dict[str, Any]]) -> float:
    """Decisions/s through ingest.service.ingest_decisions in batches of 500."""
    from sqlmodel import Session

    from shadoweval.ingest.parsing import ParsedBody
    from shadoweval.ingest.service import ingest_decisions

    started = time.perf_counter()
    stored = 0
    for start in range(0, len(decisions), 500):
        with Session(engine, expire_on_commit=False) as session:
            outcome = ingest_decisions(
                session=session,
                settings=settings,
                parsed=ParsedBody(items=decisions[start : start + 500], suspect=False),
            )
        stored += outcome.count("stored")
    elapsed = time.perf_counter() - started
    if stored != len(decisions):
        raise RuntimeError(f"ingest stored {stored} of {len(decisions)} decisions")
    return len(decisions) / elapsed


def _timed(call: Callable[[], httpx.Response], repeats: int) -> dict[str, Any]:
    """p50/p99/max in ms of `repeats` calls (one warm-up first), and the failures."""
    call()
    latencies, failures = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        answer = call()
        latencies.append((time.perf_counter() - started) * 1000)
        failures += answer.status_code >= 400
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
    return {
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(latencies), 1),
        "failures": failures,
    }


def _reads(client: httpx.Client, since: str, repeats: int) -> dict[str, Any]:
    """The named routes and the dashboard's other reads, with the dashboard's parameters."""
    window: dict[str, str | int] = {"router": ROUTER, "since": since}
    named: dict[str, tuple[str, dict[str, str | int]]] = {
        "segments": ("/v1/segments", window),
        "economics": ("/v1/economics", window),
        "calibration": ("/v1/calibration", window),
    }
    dashboard: dict[str, tuple[str, dict[str, str | int]]] = {
        "segments_expected": ("/v1/segments", {**window, "expected": "true"}),
        "sessions": ("/v1/sessions", window),
        "spend": ("/v1/spend", window),
        "thresholds": ("/v1/thresholds", {"router": ROUTER}),
        "judge_quality": ("/v1/judge/quality", {"since": since}),
        "decisions_latest_200": ("/v1/decisions", {"order": "desc", "limit": 200}),
    }
    figures: dict[str, Any] = {}
    for name, (path, params) in {**named, **dashboard}.items():
        figures[name] = _timed(functools.partial(client.get, path, params=params), repeats)
    heaviest = max(dashboard, key=lambda name: figures[name]["p99_ms"])
    figures["dashboard_heaviest"] = {"query": heaviest, **figures[heaviest]}
    return figures


class _BackgroundTraffic:
    """A router's traffic during the measurements: batches of decisions posted to the API
    every 0.5 s at `rate` decisions/s from a thread of its own (it mostly waits on HTTP)."""

    INTERVAL_SECONDS = 0.5

    def __init__(self, api_url: str, key: str, rate: float, prefix: str) -> None:
        self.client = httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        self.batch = max(1, round(rate * self.INTERVAL_SECONDS)) if rate > 0 else 0
        self.prefix = prefix
        self.posted = self.failures = 0
        self.started = self.seconds = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-traffic", daemon=True)

    def _run(self) -> None:
        number = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            items = make_decisions(self.batch, f"{self.prefix}-{number}", seed=number)
            answer = self.client.post("/v1/decisions", json=items)
            if answer.status_code == 202:
                self.posted += len(items)
            else:
                self.failures += 1
            number += 1
            next_at += self.INTERVAL_SECONDS
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> _BackgroundTraffic:
        self.started = time.perf_counter()
        if self.batch:
            self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        if self.batch:
            self.thread.join(timeout=120)
        self.client.close()
        self.seconds = time.perf_counter() - self.started

    def figures(self) -> dict[str, Any]:
        return {
            "decisions_posted": self.posted,
            "failed_posts": self.failures,
            "achieved_decisions_per_second": round(self.posted / self.seconds, 1)
            if self.seconds
            else 0.0,
        }


def _sizes(engine: Any) -> dict[str, Any]:
    """Bytes of the decision table and its indexes, per million rows it holds (the bulk
    rows and those ingested at the checkpoints)."""
    with engine.connect() as connection:
        # Summed over the partitions (a partitioned parent has no storage of its own); a
        # plain table is its own one-row tree.
        rows, table, indexes = connection.exec_driver_sql(
            "SELECT (SELECT count(*) FROM decision), sum(pg_table_size(relid)),"
            " sum(pg_indexes_size(relid)) FROM pg_partition_tree('decision')"
        ).one()
    per_million = 1e6 / rows if rows >= 100_000 else None  # below, fixed costs dominate
    return {
        "decision_rows": int(rows),
        "decision_table_bytes": int(table),
        "decision_index_bytes": int(indexes),
        "table_bytes_per_million": round(table * per_million) if per_million else None,
        "index_bytes_per_million": round(indexes * per_million) if per_million else None,
    }


def _create_day_partitions(engine: Any) -> None:
    """The day partitions of the loaded window and of the bench's own posts: the migration
    creates only the current week's, and COPY would otherwise fill the default partition."""
    from shadoweval.ingest import partitions

    with engine.begin() as connection:
        if not partitions.is_partitioned(connection):
            return
        day, last = LOAD_START.date() - timedelta(days=1), (BENCH_START + timedelta(days=2)).date()
        while day <= last:
            partitions.create_day(connection, day)
            day += timedelta(days=1)


def _drop_one_day(engine: Any) -> dict[str, Any]:
    """Removing the oldest day: DELETE of its decisions beside dropping it whole. With day
    partitions the drop is the real one (DETACH then DROP of the day's partition) and the
    DELETE runs on a copy of the same rows with the same indexes; on a plain table the
    DELETE is the real one and the drop is of such a copy (what a detached day costs)."""
    from shadoweval.ingest import partitions

    with engine.connect() as connection:
        partitioned = partitions.is_partitioned(connection)
    if partitioned:
        return _drop_one_partition(engine, LOAD_START.date())
    day = LOAD_START.date().isoformat()
    bounds = (
        f"ts >= '{day}T00:00:00+00' AND ts < '{day}T00:00:00+00'::timestamptz + interval '1 day'"
    )
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE bench_day AS SELECT * FROM decision WHERE {bounds}"  # noqa: S608 (constants)
        )
        connection.exec_driver_sql("CREATE INDEX ON bench_day (ts, id)")
        connection.exec_driver_sql("CREATE INDEX ON bench_day (router, ts)")
        connection.exec_driver_sql("CREATE INDEX ON bench_day (segment_value, ts)")
        connection.exec_driver_sql("CREATE UNIQUE INDEX ON bench_day (router, request_id)")
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE bench_day")
    dropped = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as connection:
        rows = connection.exec_driver_sql(f"DELETE FROM decision WHERE {bounds}").rowcount  # noqa: S608 (constants)
    deleted = time.perf_counter() - started
    return {
        "day": day,
        "rows": rows,
        "delete_seconds": round(deleted, 3),
        "drop_table_seconds": round(dropped, 3),
    }


def _drop_one_partition(engine: Any, day: date) -> dict[str, Any]:
    from shadoweval.ingest import partitions

    name = partitions.partition_name(day)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE bench_day AS SELECT * FROM {name}")  # noqa: S608 (a partition name)
        connection.exec_driver_sql("CREATE INDEX ON bench_day (ts, id)")
        connection.exec_driver_sql("CREATE INDEX ON bench_day (router, ts)")
        connection.exec_driver_sql("CREATE INDEX ON bench_day (segment_value, ts)")
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER TABLE decision DETACH PARTITION {name}")
        connection.exec_driver_sql(f"DROP TABLE {name}")
    dropped = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as connection:
        rows = connection.exec_driver_sql("DELETE FROM bench_day").rowcount
        connection.exec_driver_sql("DROP TABLE bench_day")
    deleted = time.perf_counter() - started
    return {
        "day": day.isoformat(),
        "rows": rows,
        "delete_seconds": round(deleted, 3),
        "drop_table_seconds": round(dropped, 3),
        "partitioned": True,
    }


def run_scale_bench(
    *,
    database_url: str,
    decisions: int = 20_000_000,
    ingest_decisions: int = 10_000,
    single_posts: int = 300,
    read_repeats: int = 10,
    background_rate: float = 100.0,
    keep_database: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _message: None,
) -> dict[str, Any]:
    from shadoweval.auth import service as auth_service
    from shadoweval.auth.models import Scope
    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, session_scope, upgrade_database

    if not database_url.startswith("postgres"):
        raise ValueError("bench scale measures PostgreSQL: pass --database-url postgresql://…")
    url, data_dir = _fresh_database(database_url, "scale")
    settings = Settings(database_url=url, data_dir=data_dir)
    upgrade_database(settings)
    engine = create_db_engine(settings, statement_timeout_seconds=BULK_STATEMENT_TIMEOUT_SECONDS)
    _create_day_partitions(engine)
    with session_scope(engine) as session:
        key = auth_service.create_key(session=session, scopes=[Scope.INGEST, Scope.READ]).key
    rng = np.random.default_rng(seed)
    checkpoints = [0, decisions // 2, decisions]
    loaded = 0
    results: list[dict[str, Any]] = []
    try:
        with _ApiReplicas(url, data_dir, 1) as (api_url,):
            client = httpx.Client(
                base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            for number, target in enumerate(checkpoints):
                figures: dict[str, Any] = {"checkpoint_decisions": target}
                if target > loaded:
                    progress(f"loading {target - loaded} decisions (to {target})")
                    figures["load"] = _bulk_load(engine, loaded, target - loaded, rng)
                    loaded = target
                    figures["snapshot_rebuild_seconds"] = _rebuild_snapshots(engine)
                progress(f"measuring at {target} decisions")
                figures["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
                head = make_decisions(ingest_decisions, f"batched{number}", seed=number)
                figures["batched_ingest_decisions_per_second"] = round(
                    _ingest_batches(settings, engine, head)
                )
                posts = make_decisions(single_posts, f"single{number}", seed=100 + number)
                since = (BENCH_START - READ_WINDOW).isoformat()
                with _BackgroundTraffic(api_url, key, background_rate, f"bg{number}") as traffic:
                    figures["single_post"] = _timed_posts(client, posts)
                    figures["reads"] = _reads(client, since, read_repeats)
                figures["background_traffic"] = traffic.figures()
                figures["size"] = _sizes(engine)
                results.append(figures)
            progress("dropping one day")
            drop = _drop_one_day(engine)
            client.close()
    finally:
        engine.dispose()
        if not keep_database:
            _drop_databases(database_url, [url])
        shutil.rmtree(Path(data_dir), ignore_errors=True)
    empty, full = results[0], results[-1]
    return {
        "benchmark": "scale",
        "database": "postgresql",
        "decisions": decisions,
        "days": DAYS,
        "background_rate": background_rate,
        "cpus": os.cpu_count(),
        "checkpoints": results,
        "drop_one_day": drop,
        "batched_ingest_full_over_empty": round(
            full["batched_ingest_decisions_per_second"]
            / empty["batched_ingest_decisions_per_second"],
            3,
        ),
        "targets": {
            "batched_ingest_full_over_empty": 0.8,
            "read_p99_ms_at_full": 500,
            "drop_one_day_seconds": 1.0,
        },
        "database_kept": url if keep_database else None,
    }


def _timed_posts(client: httpx.Client, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """One decision per POST, one after another."""
    pending = iter(decisions)
    return _timed(
        lambda: client.post("/v1/decisions", json=[next(pending)]), repeats=len(decisions) - 1
    )


def format_scale_report(figures: dict[str, Any]) -> str:
    lines = [
        f"scale on {figures['database']}, {figures['cpus']} cpus (posts and reads timed under "
        f"{figures['background_rate']} decisions/s of traffic):"
    ]
    for point in figures["checkpoints"]:
        reads = point["reads"]
        load = point.get("load")
        loaded = (
            f" (loaded in {load['copy_seconds']} s, {load['copy_decisions_per_second']}/s, "
            f"vacuum {load['vacuum_analyze_seconds']} s)"
            if load
            else ""
        )
        size = point["size"]
        lines.append(
            f"  {point['checkpoint_decisions']:>11,} decisions{loaded}, load avg "
            f"{point['load_average_1_5_15']}: ingest {point['batched_ingest_decisions_per_second']}"
            f"/s, single post p99 {point['single_post']['p99_ms']} ms; p99 segments "
            f"{reads['segments']['p99_ms']} ms, economics {reads['economics']['p99_ms']} ms, "
            f"calibration {reads['calibration']['p99_ms']} ms, dashboard heaviest "
            f"({reads['dashboard_heaviest']['query']}) {reads['dashboard_heaviest']['p99_ms']} ms"
            + (
                f"; {size['table_bytes_per_million'] / 1e6:.0f} MB table + "
                f"{size['index_bytes_per_million'] / 1e6:.0f} MB indexes per million"
                if size["table_bytes_per_million"]
                else ""
            )
        )
    drop = figures["drop_one_day"]
    lines.append(
        f"  one day ({drop['rows']} rows): DELETE {drop['delete_seconds']} s, "
        f"DROP TABLE of the same rows {drop['drop_table_seconds']} s; ingest at full / empty "
        f"{figures['batched_ingest_full_over_empty']}"
    )
    return "\n".join(lines)
