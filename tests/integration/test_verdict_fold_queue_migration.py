"""Migration 0024 on a populated database, both ways: the verdicts the aggregator has not
folded yet (`aggregated_at` NULL) become the fold queue, and go back to NULL on downgrade;
the triggers queue a verdict that finishes after the upgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from shadoweval.config import Settings
from shadoweval.db import alembic_config, create_db_engine, upgrade_database
from shadoweval.judge.models import VerdictStatus
from tests.conftest import make_empty_database_url
from tests.integration.test_sql_aggregation import _finish, _verdicts

BEFORE = "0023_decision_partitions"


def _queued(engine: Engine) -> set[int]:
    with engine.connect() as connection:
        return set(connection.scalars(text("SELECT verdict_id FROM verdict_fold_queue")))


def _unaggregated(engine: Engine) -> set[int]:
    with engine.connect() as connection:
        return set(connection.scalars(text("SELECT id FROM verdict WHERE aggregated_at IS NULL")))


def test_unfolded_verdicts_become_the_queue_and_come_back(
    backend: str, tmp_path: Path, postgres_database_factory: object
) -> None:
    url = make_empty_database_url(backend, tmp_path, postgres_database_factory)
    settings = Settings(data_dir=tmp_path, database_url=url)
    engine = create_db_engine(settings)
    upgrade_database(settings, BEFORE)
    folded, done, failed, running = _verdicts(
        engine,
        [VerdictStatus.DONE, VerdictStatus.DONE, VerdictStatus.ERROR, VerdictStatus.RUNNING],
    )
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE verdict SET aggregated_at = CURRENT_TIMESTAMP WHERE id = :id"),
            {"id": folded},
        )

    upgrade_database(settings)

    assert _queued(engine) == {done, failed}
    assert "aggregated_at" not in {c["name"] for c in inspect(engine).get_columns("verdict")}
    _finish(engine, running, status=VerdictStatus.SKIPPED, skip_reason="no_payload")
    assert _queued(engine) == {done, failed, running}

    command.downgrade(alembic_config(url), BEFORE)

    assert _unaggregated(engine) == {done, failed, running}
    assert "verdict_fold_queue" not in inspect(engine).get_table_names()

    upgrade_database(settings)

    assert _queued(engine) == {done, failed, running}
    engine.dispose()
