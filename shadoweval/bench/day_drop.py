"""Retention by partition, measured: dropping one decision day against deleting it.

`python -m shadoweval.bench.day_drop --database-url postgresql://… --decisions 300000`
loads `bench scale`'s bulk rows (30 decision days) into a fresh PostgreSQL database whose
day partitions exist (with their idempotency keys, as ingest writes them), then times on
the oldest day: a DELETE of its decisions and keys (rolled back), and
`retention.drop_expired_days` dropping the same day (open-work check, payloads and session
turns, DETACH + DROP, then the keys in batches). Not in CI.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import text

from shadoweval.bench.ingest import _drop_databases, _fresh_database
from shadoweval.bench.scale import (
    BULK_STATEMENT_TIMEOUT_SECONDS,
    DAYS,
    LOAD_START,
    ROUTER,
    _bulk_load,
)


def run_day_drop_bench(*, database_url: str, decisions: int, seed: int = 0) -> dict[str, Any]:
    from shadoweval import retention
    from shadoweval.clock import deployment_now
    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, upgrade_database
    from shadoweval.ingest import partitions

    url, data_dir = _fresh_database(database_url, "daydrop")
    settings = Settings(database_url=url, data_dir=data_dir)
    upgrade_database(settings)
    engine = create_db_engine(settings, statement_timeout_seconds=BULK_STATEMENT_TIMEOUT_SECONDS)
    try:
        with engine.begin() as connection:
            for offset in range(DAYS + 1):
                partitions.create_day(connection, LOAD_START.date() + timedelta(days=offset))
        load = _bulk_load(engine, 0, decisions, np.random.default_rng(seed))
        with engine.begin() as connection:
            # The clock knows routers by their counted traffic; the bulk load counts none.
            connection.execute(
                text(
                    "INSERT INTO traffic_delta (router, segment_value, tier, window_start, "
                    "decisions, sampled, budget_refused, with_payload, failover, fallback, "
                    "escalated, cost_usd, router_cost_usd) "
                    "VALUES (:router, 'all', 'cheap', :start, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
                ),
                {"router": ROUTER, "start": LOAD_START},
            )
        day = LOAD_START.date()
        name = partitions.partition_name(day)
        start = partitions.day_start(day)
        bounds = {"start": start, "end": start + timedelta(days=1)}
        with engine.connect() as connection:
            rows = connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()  # noqa: S608 (our partition)
            started = time.perf_counter()
            connection.execute(
                text("DELETE FROM decision WHERE ts >= :start AND ts < :end"), bounds
            )
            connection.execute(
                text("DELETE FROM decision_key WHERE ts >= :start AND ts < :end"), bounds
            )
            deleted = time.perf_counter() - started
            connection.rollback()
            now = deployment_now(connection, skew_seconds=settings.decision_clock_skew_seconds)
        assert now is not None
        # Just past the oldest day's end: that day, and only it, is expired.
        retention_days = (now - bounds["end"]).total_seconds() / 86400 - 1e-6
        started = time.perf_counter()
        drop = retention.drop_expired_days(
            engine,
            retention_days=retention_days,
            skew_seconds=settings.decision_clock_skew_seconds,
        )
        dropped = time.perf_counter() - started
    finally:
        engine.dispose()
        _drop_databases(database_url, [url])
    return {
        "benchmark": "day_drop",
        "decisions": decisions,
        "load": load,
        "day": day.isoformat(),
        "rows": int(rows),
        "delete_seconds": round(deleted, 3),
        "drop_expired_days_seconds": round(dropped, 3),
        "drop_seconds": round(drop.drop_seconds, 3),
        "key_delete_seconds": round(drop.key_seconds, 3),
        "dropped": drop.dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL server")
    parser.add_argument("--decisions", type=int, default=300_000)
    arguments = parser.parse_args()
    print(
        json.dumps(
            run_day_drop_bench(database_url=arguments.database_url, decisions=arguments.decisions)
        )
    )


if __name__ == "__main__":
    main()
