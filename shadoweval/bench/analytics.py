"""`shadoweval bench analytics`: snapshot aggregation of 1,000,000 decisions and 50,000 verdicts.

From empty snapshot tables, time (1) rebuilding the hourly traffic snapshots from the
decision log, (2) folding every verdict into the hour/day snapshots, and (3) computing
every per-segment figure (`/v1/segments`) and the calibration (`/v1/calibration`).
Beside it, in the same run, a straightforward pandas computation of the same numbers
from the same tables (read + groupby), and a check that both agree.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

SEGMENTS = 20
DAYS = 7
START = datetime(2026, 11, 1, tzinfo=UTC)
BULK_STATEMENT_TIMEOUT_SECONDS = 3600.0


def _ts_text(seconds: np.ndarray[Any, Any], dialect: str) -> list[str]:
    """Offsets from START as the text each database stores a UtcDateTime as, vectorised."""
    base = np.datetime64(START.replace(tzinfo=None), "us")
    stamps = np.datetime_as_string(base + (seconds * 1e6).astype("timedelta64[us]"), unit="us")
    suffix = "+00" if dialect == "postgresql" else ""
    return [text.replace("T", " ") + suffix for text in stamps.tolist()]


def _load(engine: Any, decisions: int, verdicts: int, seed: int) -> dict[str, Any]:
    """Bulk-load synthetic decisions and finished verdicts (not timed)."""
    from shadoweval.bench.bulk_verdicts import VERDICT_COLUMNS, verdict_row
    from shadoweval.bench.ingest import _bulk_load

    rng = np.random.default_rng(seed)
    dialect = engine.dialect.name
    shares = np.linspace(30, 1, SEGMENTS)
    shares /= shares.sum()
    segment = rng.choice(SEGMENTS, size=decisions, p=shares)
    strong = rng.random(decisions) < 0.25
    seconds = np.sort(rng.uniform(0, DAYS * 86400, decisions))
    ts = _ts_text(seconds, dialect)
    score = rng.beta(2, 5, decisions)
    cost = np.where(strong, 0.006, 0.002) * rng.uniform(0.5, 1.5, decisions)
    latency = np.where(strong, 1500.0, 400.0) * rng.uniform(0.5, 2, decisions)
    sampled_idx = np.sort(rng.choice(np.flatnonzero(~strong), size=verdicts, replace=False))
    pi = np.full(decisions, 0.1)
    sampled = np.zeros(decisions, dtype=bool)
    sampled[sampled_idx] = True
    harm = (rng.random(decisions) < np.clip(score * 0.6, 0, 1)).astype(int)

    decision_rows: list[tuple[Any, ...]] = [
        (
            "bench",
            f"d{i}",
            ts[i],
            ts[i],
            "strong" if strong[i] else "cheap",
            "claude-sonnet-4-6" if strong[i] else "claude-haiku-4-5",
            "claude-sonnet-4-6" if strong[i] else "claude-haiku-4-5",
            False,
            False,
            "[]",
            float(score[i]),
            "p_strong_needed",
            "{}",
            f"s{segment[i]:02d}",
            "{}",
            float(cost[i]),
            float(latency[i]),
            "{}",
            True,
            True,
            float(pi[i]),
            bool(sampled[i]),
            False,
        )
        for i in range(decisions)
    ]
    columns = (
        "router, request_id, ts, received_at, tier, chosen_model, served_model, failover, "
        "fallback, candidates, router_score, score_semantics, segment, segment_value, features, "
        "cost_usd, latency_ms, extra, has_request, has_response, inclusion_probability, sampled, "
        "payload_stored"
    )
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        _bulk_load(cursor, dialect, "decision", columns, decision_rows)
        raw.commit()
        cursor.execute("SELECT id, request_id FROM decision")
        ids = {request_id: decision_id for decision_id, request_id in cursor.fetchall()}
        verdict_rows = [
            verdict_row(
                decision_id=ids[f"d{i}"],
                router="bench",
                request_id=f"d{i}",
                ts=ts[i],
                segment_value=f"s{segment[i]:02d}",
                router_score=float(score[i]),
                harm=bool(harm[i]),
                inclusion_probability=float(pi[i]),
            )
            for i in sampled_idx.tolist()
        ]
        _bulk_load(cursor, dialect, "verdict", VERDICT_COLUMNS, verdict_rows)
        raw.commit()
        if dialect == "postgresql":
            cursor.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()
    return {"decisions": decisions, "verdicts": verdicts}


def _pandas(engine: Any) -> dict[str, Any]:
    """The same figures with a plain pandas read + groupby."""
    import pandas as pd  # type: ignore[import-untyped]

    from shadoweval.stats.calibration import brier_score
    from shadoweval.stats.rates import hajek_rate

    with engine.connect() as connection:
        decisions = pd.read_sql_query(
            "SELECT router, segment_value, tier, ts FROM decision", connection
        )
        verdicts = pd.read_sql_query(
            "SELECT segment_value, strong_needed, inclusion_probability, router_score FROM verdict "
            "WHERE status = 'done'",
            connection,
        )
    traffic = decisions.groupby(["router", "segment_value", "tier"]).size()
    rates = {
        segment: hajek_rate(
            group["strong_needed"].to_numpy(), group["inclusion_probability"].to_numpy()
        )
        for segment, group in verdicts.groupby("segment_value")
    }
    brier = brier_score(
        verdicts["router_score"].to_numpy(),
        verdicts["strong_needed"].to_numpy(),
        1.0 / verdicts["inclusion_probability"].to_numpy(),
    )
    return {"traffic": traffic, "rates": rates, "brier": brier}


def run_analytics_bench(
    *,
    decisions: int = 1_000_000,
    verdicts: int = 50_000,
    database_url: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    from sqlmodel import Session

    from shadoweval.analytics import calibration_service, service, snapshots
    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, upgrade_database

    data_dir = Path(tempfile.mkdtemp(prefix="shadoweval-bench-analytics-"))
    settings = Settings(data_dir=data_dir, database_url=database_url)
    upgrade_database(settings)
    # A million rows COPY past the API's 5 s statement limit; the aggregation is the
    # worker's job, which runs under its own, longer limit.
    engine = create_db_engine(settings, statement_timeout_seconds=BULK_STATEMENT_TIMEOUT_SECONDS)
    with engine.begin() as connection:
        for table in (
            "verdict_window_snapshot",
            "traffic_window_snapshot",
            "sequential_state",
            "verdict",
            "decision_payload",
            "decision",
        ):
            connection.exec_driver_sql(f"DELETE FROM {table}")  # noqa: S608 (fixed names)
    started = time.perf_counter()
    _load(engine, decisions, verdicts, seed)
    load_seconds = time.perf_counter() - started

    started = time.perf_counter()
    traffic_rows = snapshots.rebuild_traffic_snapshots(engine)
    folded = 0
    while batch := snapshots.aggregate_finished_verdicts(engine, limit=100_000):
        folded += batch
    with Session(engine) as session:
        quality = service.segment_quality(session=session, settings=settings)
        calibration = calibration_service.calibration_reports(session=session)
    ours = time.perf_counter() - started

    started = time.perf_counter()
    baseline = _pandas(engine)
    pandas_seconds = time.perf_counter() - started
    engine.dispose()
    shutil.rmtree(data_dir, ignore_errors=True)  # the SQLite file: ~400 MB at 1 M decisions

    # Agreement: traffic per stratum, harm rate and interval per segment (the finite-
    # population Hájek rate, which is what pandas computes here), Brier score.
    traffic_total = int(baseline["traffic"].sum())
    worst_rate_gap = max(
        abs(rate.estimate - baseline["rates"][q.segment].estimate)
        + abs((rate.ci_low or 0) - baseline["rates"][q.segment].ci_low)
        + abs((rate.ci_high or 0) - baseline["rates"][q.segment].ci_high)
        for q in quality
        if (rate := q.rate_finite_population).estimate is not None
    )
    brier_gap = abs(calibration[0].brier["brier"] - baseline["brier"])
    agree = traffic_total == decisions and worst_rate_gap < 1e-9 and brier_gap < 1e-9
    return {
        "benchmark": "analytics",
        "database": engine.dialect.name,
        "decisions": decisions,
        "verdicts": verdicts,
        "load_seconds_not_timed": round(load_seconds, 1),
        "snapshot_rows_traffic": traffic_rows,
        "verdicts_folded": folded,
        "segments": len(quality),
        "shadoweval_seconds": round(ours, 3),
        "pandas_seconds": round(pandas_seconds, 3),
        "ratio_pandas_over_shadoweval": round(pandas_seconds / ours, 2) if ours else math.nan,
        "agree": agree,
        "worst_rate_and_interval_gap": worst_rate_gap,
        "brier_gap": brier_gap,
        "target_seconds": 2.0,
    }
