"""`shadoweval bench scale` at a tiny size: it loads, measures every figure at the three
checkpoints through the real API and ingest path (beside an empty database at the same
time), runs one worker process then two on equal batches, drops its databases, and
deletes exactly one decision day; then a second run measures the kept database without
loading it. The targets are reported, not asserted (CI does not gate on them).

About 30 s on a loaded 2-core machine: it starts two `shadoweval api` processes and three
worker processes, as the benchmark does, and their start-up is most of it."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

from shadoweval.bench.scale import format_scale_report, run_scale_bench
from tests.conftest import POSTGRES_ADMIN_URL, _require_postgres


def _databases(names: list[str]) -> int:
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.connect() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM pg_database WHERE datname = ANY(:names)"),
            {"names": names},
        ).scalar_one()
    admin.dispose()
    return int(found)


@pytest.mark.postgresql
def test_tiny_scale_run_reports_every_figure_and_a_rerun_reuses_its_database() -> None:
    _require_postgres()
    messages: list[str] = []
    figures = run_scale_bench(
        database_url=POSTGRES_ADMIN_URL,
        decisions=3000,
        ingest_decisions=500,
        ingest_rounds=1,
        single_posts=5,
        read_repeats=1,
        background_rate=20,
        worker_items=10,
        worker_rounds=1,
        keep_database=True,
        progress=messages.append,
    )
    kept = figures["database_kept"]
    database = kept.rsplit("/", 1)[-1]
    try:
        points = figures["checkpoints"]
        assert [p["checkpoint_decisions"] for p in points] == [0, 1500, 3000]
        assert [p["load"]["decisions"] for p in points[1:]] == [1500, 1500]
        background = 0
        for number, point in enumerate(points):
            assert point["batched_ingest_decisions_per_second"] > 0
            assert point["batched_ingest_empty_same_time_decisions_per_second"] > 0
            assert point["ingest_ratio_to_empty_same_time"] > 0
            assert len(point["ingest_rounds_empty_loaded"]) == 1  # [empty, loaded]
            assert point["single_post"]["failures"] == 0
            reads = point["reads"]
            assert {"segments", "economics", "calibration", "dashboard_heaviest"} <= set(reads)
            assert all(reads[name]["failures"] == 0 for name in reads)
            traffic = point["background_traffic"]
            assert traffic["failed_posts"] == 0
            assert traffic["decisions_posted"] > 0  # traffic ran while posts and reads were timed
            background += traffic["decisions_posted"]
            # Bulk rows, plus 500 batched (the empty database's went there) and 5 posted
            # decisions per checkpoint so far, plus the background traffic.
            expected = point["checkpoint_decisions"] + 505 * (number + 1) + background
            assert point["size"]["decision_rows"] == expected
        assert (
            figures["ingest_ratio_to_empty_same_time_at_full"]
            == (points[-1]["ingest_ratio_to_empty_same_time"])
        )

        # One worker, then two, each on its own 10 items, each processed exactly once
        # (the bench raises otherwise).
        workers = figures["worker_throughput"]
        assert [(b["workers"], b["items"], b["shadow_runs"]) for b in workers["batches"]] == [
            (1, 10, 10),
            (2, 10, 10),
        ]
        assert all(b["job_failures"] == 0 for b in workers["batches"])
        assert all(b["worker_cpu_ms_per_item"] > 0 for b in workers["batches"])
        assert workers["one_worker_items_per_second"] > 0
        assert workers["two_workers_items_per_second"] > 0

        # One decision day of the 30 is deleted: about 1/30 of the bulk rows.
        drop = figures["drop_one_day"]
        assert 3000 / 30 / 2 < drop["rows"] < 3000 / 30 * 2
        assert drop["partitioned"]  # removed by retention's own drop, keys after
        assert drop["key_delete_seconds"] >= 0
        report = format_scale_report(figures)
        assert "one day" in report
        assert "workers" in report
        assert messages[-1] == "dropping one day"
        # The empty database of the same-time baseline is gone; the loaded one is kept.
        assert _databases([f"shadoweval_bench_scale_empty_{os.getpid()}"]) == 0
        assert _databases([database]) == 1
        # Every bulk-loaded decision holds its idempotency key, as ingested ones do: a
        # re-post of a loaded request id is a duplicate, and the key table's bytes count.
        loaded = create_engine(kept)
        with loaded.connect() as connection:
            keys, logged = connection.execute(
                text("SELECT (SELECT count(*) FROM decision_key), (SELECT count(*) FROM decision)")
            ).one()
        loaded.dispose()
        assert keys == logged
        assert points[-1]["size"]["decision_key_bytes"] > 0

        # A second run measures the kept database as it is: no load, no day dropped.
        again = run_scale_bench(
            database_url=POSTGRES_ADMIN_URL,
            reuse_database=database,
            ingest_decisions=500,
            ingest_rounds=1,
            single_posts=5,
            read_repeats=1,
            background_rate=20,
            worker_items=0,
        )
        held = points[-1]["size"]["decision_rows"] + 2 * 10 - drop["rows"]
        (point,) = again["checkpoints"]
        assert point["checkpoint_decisions"] == again["decisions"] == held
        assert "load" not in point
        background = point["background_traffic"]["decisions_posted"]
        assert point["size"]["decision_rows"] == held + 500 + 5 + background
        assert again["drop_one_day"] is None
        assert again["worker_throughput"] is None
        assert again["batched_ingest_full_over_empty"] is None
        assert "reused database" in format_scale_report(again)
        assert _databases([database]) == 1  # a reused database is never dropped
    finally:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    assert _databases([database, f"shadoweval_bench_scale_empty_{os.getpid()}"]) == 0
