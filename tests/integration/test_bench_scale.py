"""`shadoweval bench scale` at a tiny size: it loads, measures every figure at the three
checkpoints through the real API and ingest path, drops its database, and deletes exactly
one decision day. The targets are reported, not asserted (CI does not gate on them).

About 20 s on a loaded 2-core machine: it starts one `shadoweval api` process, as the
benchmark does, and the API's start-up is most of it."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text

from shadoweval.bench.scale import format_scale_report, run_scale_bench
from tests.conftest import POSTGRES_ADMIN_URL, _require_postgres


@pytest.mark.postgresql
def test_tiny_scale_run_reports_every_figure_and_leaves_nothing() -> None:
    _require_postgres()
    messages: list[str] = []
    figures = run_scale_bench(
        database_url=POSTGRES_ADMIN_URL,
        decisions=3000,
        ingest_decisions=500,
        single_posts=5,
        read_repeats=1,
        background_rate=20,
        progress=messages.append,
    )

    points = figures["checkpoints"]
    assert [p["checkpoint_decisions"] for p in points] == [0, 1500, 3000]
    assert [p["load"]["decisions"] for p in points[1:]] == [1500, 1500]
    background = 0
    for number, point in enumerate(points):
        assert point["batched_ingest_decisions_per_second"] > 0
        assert point["single_post"]["failures"] == 0
        reads = point["reads"]
        assert {"segments", "economics", "calibration", "dashboard_heaviest"} <= set(reads)
        assert all(reads[name]["failures"] == 0 for name in reads)
        traffic = point["background_traffic"]
        assert traffic["failed_posts"] == 0
        assert traffic["decisions_posted"] > 0  # traffic ran while posts and reads were timed
        background += traffic["decisions_posted"]
        # Bulk rows, plus 500 batched and 5 posted decisions per checkpoint so far, plus the
        # background traffic.
        expected = point["checkpoint_decisions"] + 505 * (number + 1) + background
        assert point["size"]["decision_rows"] == expected
    # One decision day of the 30 is deleted: about 1/30 of the bulk rows.
    assert 3000 / 30 / 2 < figures["drop_one_day"]["rows"] < 3000 / 30 * 2
    assert "one day" in format_scale_report(figures)
    assert messages[-1] == "dropping one day"

    # The benchmark's database is gone.
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM pg_database WHERE datname = :name"),
            {"name": f"shadoweval_bench_scale_{os.getpid()}"},  # as bench.ingest names it
        ).scalar_one()
    admin.dispose()
    assert left == 0
