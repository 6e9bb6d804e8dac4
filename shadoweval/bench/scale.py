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
  real path every route uses) in batches of 500, at the head of the stream, alternating
  with the same ingest into an empty database on the same server (made for the run, it
  holds only these batches; empty, loaded, empty, loaded: `ingest_rounds` each, medians):
  `ingest_ratio_to_empty_same_time` is the issue's "≥ 80 % of the empty-table figure"
  measured under one machine load, where the ratio of the first and last checkpoints
  compares different times;
- single posts: p50/p99 of one decision per POST /v1/decisions on a `shadoweval api`
  process (sequential, so the figure is latency, not queueing);
- reads: p50/p99 of GET /v1/segments, /v1/economics, /v1/calibration and the dashboard's
  other reads (the heaviest one named) over the last 7 decision days, on that process
  with its default 5 s statement limit (a read past it is a 503, counted);
- size: decision table and index bytes (summed over the day partitions) per million rows.
Posts and reads are timed while a router's traffic keeps arriving: `background_rate`
decisions/s (100 by default, the issue's busy router) posted in batches to the same API.
After the last checkpoint: worker throughput, one worker process against two, on fresh
equal batches of sampled decisions (`bench.worker_throughput`), and, on a fresh database,
removing the oldest decision day: DETACH + DROP of its day partition (migration 0023)
beside a DELETE of a copy of the same rows with the same indexes.

`reuse_database` measures a database an earlier run kept (`keep_database`) without
creating or loading it: one checkpoint at the decisions it holds; the rows a run adds
carry the run's own tag, so it can be repeated.
The machine's load average is recorded with each checkpoint: on a shared machine the
figures move with it.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import text

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
SLOW_READ_SECONDS = 20.0
READ_TIMEOUT_SECONDS = 180.0

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
    # Ids drawn from the log's own sequence up front, as ingest draws a claimed key's id:
    # the verdicts need them, and looking the rows up afterwards by request id has no index
    # on a partitioned log (the key lives in decision_key), so it scanned the whole log per chunk.
    cursor.execute("SELECT nextval('decision_id_seq') FROM generate_series(1, %s)", (count,))
    ids = [row[0] for row in cursor.fetchall()]
    cursor.execute("SELECT to_regclass('decision_key') IS NOT NULL")
    keyed = bool(cursor.fetchone()[0])
    with cursor.copy(f"COPY decision (id, {DECISION_COLUMNS}) FROM STDIN") as copy:
        for i in range(count):
            model = "claude-sonnet-4-6" if strong[i] else "claude-haiku-4-5"
            copy.write_row(
                (
                    ids[i],
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
    if keyed:  # every stored decision's idempotency key, as ingest claims it
        with cursor.copy(
            "COPY decision_key (router, request_id, decision_id, ts) FROM STDIN"
        ) as copy:
            for i in range(count):
                copy.write_row((ROUTER, f"bulk-{first + i}", ids[i], ts[i]))
    judged = [i for i in range(0, count, VERDICT_EVERY) if not strong[i]]
    harm = rng.random(count) < np.clip(score * 0.6, 0, 1)
    with cursor.copy(f"COPY verdict ({VERDICT_COLUMNS}) FROM STDIN") as copy:
        for i in judged:
            copy.write_row(
                verdict_row(
                    decision_id=ids[i],
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


def _has_decision_key(cursor: Any) -> bool:
    cursor.execute("SELECT to_regclass('decision_key') IS NOT NULL")
    return bool(cursor.fetchone()[0])


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
        cursor.execute(
            "VACUUM (ANALYZE) decision, verdict"
            + (", decision_key" if _has_decision_key(cursor) else "")
        )
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
    """p50/p99/max in ms of `repeats` calls (one warm-up first), and the failures. A call past
    the client's timeout counts as a failure at the timeout; a route whose warm-up took over
    SLOW_READ_SECONDS is timed once more only (at that size the figure is the order)."""

    def one() -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            failed = call().status_code >= 400
        except httpx.TimeoutException:
            failed = True
        return (time.perf_counter() - started) * 1000, failed

    warm_up_ms, _ = one()
    timed = [one() for _ in range(1 if warm_up_ms > SLOW_READ_SECONDS * 1000 else repeats)]
    latencies = [ms for ms, _ in timed]
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
    return {
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(max(latencies), 1),
        "calls": len(timed),
        "failures": sum(failed for _, failed in timed),
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
        # bigint: a sum is numeric (a Decimal, which a float cannot multiply).
        rows, table, indexes = connection.exec_driver_sql(
            "SELECT (SELECT count(*) FROM decision), sum(pg_table_size(relid))::bigint,"
            " sum(pg_indexes_size(relid))::bigint FROM pg_partition_tree('decision')"
        ).one()
        # The dedup table grows with the log (one key per decision): part of its cost.
        key_bytes = connection.exec_driver_sql(
            "SELECT coalesce(pg_total_relation_size(to_regclass('decision_key')), 0)"
        ).scalar_one()
    per_million = 1e6 / rows if rows >= 100_000 else None  # below, fixed costs dominate
    return {
        "decision_key_bytes": int(key_bytes),
        "decision_key_bytes_per_million": round(int(key_bytes) * per_million)
        if per_million
        else None,
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
        # The oldest loaded day still there (a reused database may have lost earlier ones).
        days = [d for _, d in partitions.day_partitions(connection)] if partitioned else []
    if partitioned:
        return _drop_one_partition(engine, min(d for d in days if d >= LOAD_START.date()))
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
    """The oldest day removed the way retention removes it (`retention.drop_expired_days`:
    the open-work check, its payloads and session turns, DETACH + DROP in one transaction,
    then its idempotency keys in batches), beside a DELETE of the same decisions and keys
    (rolled back)."""
    from shadoweval import retention
    from shadoweval.clock import deployment_now
    from shadoweval.ingest import partitions

    name = partitions.partition_name(day)
    start = partitions.day_start(day)
    bounds = {"start": start, "end": start + timedelta(days=1)}
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()  # noqa: S608 (our partition)
        started = time.perf_counter()
        connection.execute(text("DELETE FROM decision WHERE ts >= :start AND ts < :end"), bounds)
        connection.execute(
            text("DELETE FROM decision_key WHERE ts >= :start AND ts < :end"), bounds
        )
        deleted = time.perf_counter() - started
        connection.rollback()
        latest = connection.execute(text("SELECT max(ts) FROM decision")).scalar_one()
        # The watermark as retention reads it, not bounded by today's wall clock (the
        # bench's stream may run ahead of it).
        now = deployment_now(connection, skew_seconds=0.0, wall_now=latest)
    assert now is not None
    # A retention just past the oldest loaded day's end: that day is expired, no later one.
    retention_days = (now - bounds["end"]).total_seconds() / 86400 - 1e-6
    started = time.perf_counter()
    drop = retention.drop_expired_days(
        engine, retention_days=retention_days, skew_seconds=0.0, wall_now=latest
    )
    total = time.perf_counter() - started
    # (An empty partition made ahead of the load, older than the day, goes with it.)
    if name not in drop.dropped:
        raise RuntimeError(f"retention dropped {drop.dropped}, waiting {drop.waiting}: not {name}")
    return {
        "day": day.isoformat(),
        "rows": int(rows),
        "delete_seconds": round(deleted, 3),
        "drop_table_seconds": round(drop.drop_seconds, 3),
        "key_delete_seconds": round(drop.key_seconds, 3),
        "drop_expired_days_seconds": round(total, 3),
        "partitioned": True,
    }


def _server_database_url(database_url: str, name: str) -> str:
    """The URL of database `name` on the server `database_url` points at."""
    from sqlalchemy.engine import make_url

    from shadoweval.config import Settings

    resolved = Settings(database_url=database_url).resolved_database_url
    return make_url(resolved).set(database=name).render_as_string(hide_password=False)


def _migrate_empty(settings: Any, engine: Any) -> None:
    """The same-time ingest baseline's database, as the loaded one is before its load."""
    from shadoweval.db import upgrade_database

    upgrade_database(settings)
    _create_day_partitions(engine)


def _ingest_beside_empty(
    loaded: tuple[Any, Any], empty: tuple[Any, Any], count: int, rounds: int, prefix: str
) -> dict[str, Any]:
    """Batched ingest into the empty database and the loaded one, alternating (empty,
    loaded, empty, loaded, …): both medians and their ratio, measured under the same load."""
    figures: dict[str, list[float]] = {"empty": [], "loaded": []}
    for number in range(rounds):
        for name, (settings, engine) in (("empty", empty), ("loaded", loaded)):
            batch = make_decisions(count, f"{prefix}-{name}{number}", seed=number)
            figures[name].append(_ingest_batches(settings, engine, batch))
    empty_rate, loaded_rate = (float(np.median(figures[name])) for name in ("empty", "loaded"))
    return {
        "loaded_decisions_per_second": round(loaded_rate),
        "empty_decisions_per_second": round(empty_rate),
        "ratio": round(loaded_rate / empty_rate, 3),
        "rounds": [
            [round(x) for x in pair]
            for pair in zip(figures["empty"], figures["loaded"], strict=True)
        ],
    }


def _count_decisions(engine: Any) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM decision").scalar_one())


def run_scale_bench(
    *,
    database_url: str,
    decisions: int = 20_000_000,
    ingest_decisions: int = 10_000,
    ingest_rounds: int = 2,
    single_posts: int = 300,
    read_repeats: int = 10,
    background_rate: float = 100.0,
    worker_items: int = 500,
    worker_rounds: int = 2,
    keep_database: bool = False,
    reuse_database: str | None = None,
    drop_day: bool | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _message: None,
) -> dict[str, Any]:
    """`reuse_database` (a database on the same server, loaded by an earlier run kept with
    `keep_database`) skips creating and loading: one checkpoint at the decisions it holds.
    It is never dropped, and its oldest day is dropped only with `drop_day=True` (by
    default the day drop runs on a fresh database only)."""
    from shadoweval.auth import service as auth_service
    from shadoweval.auth.models import Scope
    from shadoweval.bench.worker_throughput import run_worker_throughput
    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, session_scope, upgrade_database

    if not database_url.startswith("postgres"):
        raise ValueError("bench scale measures PostgreSQL: pass --database-url postgresql://…")
    reusing = reuse_database is not None
    if reuse_database is not None:
        url, data_dir = (
            _server_database_url(database_url, reuse_database),
            Path(tempfile.mkdtemp(prefix="shadoweval-bench-scale-")),
        )
    else:
        url, data_dir = _fresh_database(database_url, "scale")
    drop_day = not reusing if drop_day is None else drop_day
    # The rows this run adds carry its own tag: a reused database keeps earlier runs' rows.
    tag = uuid.uuid4().hex[:6]
    settings = Settings(database_url=url, data_dir=data_dir)
    upgrade_database(settings)
    engine = create_db_engine(settings, statement_timeout_seconds=BULK_STATEMENT_TIMEOUT_SECONDS)
    empty_url, empty_dir = _fresh_database(database_url, "scale_empty")
    empty_settings = Settings(database_url=empty_url, data_dir=empty_dir)
    empty_engine = create_db_engine(empty_settings)
    rng = np.random.default_rng(seed)
    results: list[dict[str, Any]] = []
    drop: dict[str, Any] | None = None
    workers: dict[str, Any] | None = None
    try:
        _create_day_partitions(engine)
        with session_scope(engine) as session:
            key = auth_service.create_key(session=session, scopes=[Scope.INGEST, Scope.READ]).key
        api = _ApiReplicas(url, data_dir, 1)  # it boots while the empty database is migrated
        try:
            _migrate_empty(empty_settings, empty_engine)
        except BaseException:
            api.__exit__()
            raise
        if reusing:
            progress(f"counting the decisions of {reuse_database}")
            loaded = decisions = _count_decisions(engine)
            checkpoints = [loaded]
        else:
            loaded, checkpoints = 0, [0, decisions // 2, decisions]
        with api as (api_url,):
            client = httpx.Client(
                base_url=api_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=READ_TIMEOUT_SECONDS,
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
                ingest = _ingest_beside_empty(
                    (settings, engine),
                    (empty_settings, empty_engine),
                    ingest_decisions,
                    ingest_rounds,
                    f"batched{tag}-{number}",
                )
                figures["batched_ingest_decisions_per_second"] = ingest[
                    "loaded_decisions_per_second"
                ]
                figures["batched_ingest_empty_same_time_decisions_per_second"] = ingest[
                    "empty_decisions_per_second"
                ]
                figures["ingest_ratio_to_empty_same_time"] = ingest["ratio"]
                figures["ingest_rounds_empty_loaded"] = ingest["rounds"]
                posts = make_decisions(single_posts, f"single{tag}-{number}", seed=100 + number)
                since = (BENCH_START - READ_WINDOW).isoformat()
                with _BackgroundTraffic(
                    api_url, key, background_rate, f"bg{tag}-{number}"
                ) as traffic:
                    figures["single_post"] = _timed_posts(client, posts)
                    figures["reads"] = _reads(client, since, read_repeats)
                figures["background_traffic"] = traffic.figures()
                figures["size"] = _sizes(engine)
                results.append(figures)
            client.close()
        if worker_items > 0:
            progress(f"worker throughput: one worker, then two, {worker_items} items each")
            workers = run_worker_throughput(
                engine=engine,
                settings=settings,
                database_url=url,
                data_dir=data_dir,
                items=worker_items,
                rounds=worker_rounds,
                tag=tag,
                router=ROUTER,
            )
        if drop_day:
            progress("dropping one day")
            drop = _drop_one_day(engine)
    finally:
        engine.dispose()
        empty_engine.dispose()
        dropped = [empty_url] if reusing or keep_database else [url, empty_url]
        _drop_databases(database_url, dropped)
        shutil.rmtree(Path(data_dir), ignore_errors=True)
        shutil.rmtree(Path(empty_dir), ignore_errors=True)
    empty, full = results[0], results[-1]
    return {
        "benchmark": "scale",
        "database": "postgresql",
        "decisions": decisions,
        "reused_database": reuse_database,
        "days": DAYS,
        "background_rate": background_rate,
        "cpus": os.cpu_count(),
        "checkpoints": results,
        "drop_one_day": drop,
        "worker_throughput": workers,
        # Across checkpoints, so across times and loads; the same-time ratio is per checkpoint.
        "batched_ingest_full_over_empty": None
        if reusing
        else round(
            full["batched_ingest_decisions_per_second"]
            / empty["batched_ingest_decisions_per_second"],
            3,
        ),
        "ingest_ratio_to_empty_same_time_at_full": full["ingest_ratio_to_empty_same_time"],
        "targets": {
            "batched_ingest_full_over_empty": 0.8,
            "ingest_ratio_to_empty_same_time_at_full": 0.8,
            "read_p99_ms_at_full": 500,
            "drop_one_day_seconds": 1.0,
        },
        "database_kept": url if keep_database or reusing else None,
    }


def _timed_posts(client: httpx.Client, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """One decision per POST, one after another."""
    pending = iter(decisions)
    return _timed(
        lambda: client.post("/v1/decisions", json=[next(pending)]), repeats=len(decisions) - 1
    )


def format_scale_report(figures: dict[str, Any]) -> str:
    reused = figures.get("reused_database")
    lines = [
        f"scale on {figures['database']}"
        + (f" (reused database {reused})" if reused else "")
        + f", {figures['cpus']} cpus (posts and reads timed under "
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
            f"/s ({point['ingest_ratio_to_empty_same_time']} × an empty database's "
            f"{point['batched_ingest_empty_same_time_decisions_per_second']}/s at the same time), "
            f"single post p99 {point['single_post']['p99_ms']} ms; p99 segments "
            f"{reads['segments']['p99_ms']} ms, economics {reads['economics']['p99_ms']} ms, "
            f"calibration {reads['calibration']['p99_ms']} ms, dashboard heaviest "
            f"({reads['dashboard_heaviest']['query']}) {reads['dashboard_heaviest']['p99_ms']} ms"
            + (
                f"; {size['table_bytes_per_million'] / 1e6:.0f} MB table + "
                f"{size['index_bytes_per_million'] / 1e6:.0f} MB indexes per million "
                f"(+ {size['decision_key_bytes_per_million'] / 1e6:.0f} MB of decision_key)"
                if size["table_bytes_per_million"]
                else ""
            )
        )
    workers = figures.get("worker_throughput")
    if workers:
        lines.append(
            f"  workers ({workers['items_per_batch']} items a batch, median of "
            f"{workers['rounds']}): one {workers['one_worker_items_per_second']} items/s, two "
            f"{workers['two_workers_items_per_second']} items/s ({workers['two_over_one']} ×), "
            f"{workers['worker_cpu_ms_per_item_median']} worker CPU ms per item; the leader's "
            f"enqueue of a batch {workers['enqueue_seconds_median']} s"
        )
    drop = figures["drop_one_day"]
    if drop:
        lines.append(
            f"  one day ({drop['rows']} rows): DELETE {drop['delete_seconds']} s, "
            + (
                f"retention's drop {drop['drop_table_seconds']} s (DETACH + DROP with its "
                f"payloads), then its keys {drop['key_delete_seconds']} s"
                if drop.get("partitioned")
                else f"DROP TABLE of the same rows {drop['drop_table_seconds']} s"
            )
        )
    across = figures["batched_ingest_full_over_empty"]
    lines.append(
        f"  ingest at full / empty database at the same time "
        f"{figures['ingest_ratio_to_empty_same_time_at_full']}"
        + (f"; at full / at the first checkpoint {across}" if across is not None else "")
    )
    return "\n".join(lines)
