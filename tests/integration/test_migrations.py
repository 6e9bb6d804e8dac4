"""Alembic migrations on both databases; the API refuses an unmigrated database."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import shadoweval.models  # noqa: F401  (the whole schema on the metadata)
from shadoweval.app import create_app
from shadoweval.config import Settings
from shadoweval.db import (
    alembic_config,
    create_db_engine,
    current_revision,
    head_revision,
    upgrade_database,
)
from shadoweval.exceptions import DatabaseNotReady
from shadoweval.ingest.partitions import schema_comparison_filter
from tests.conftest import make_empty_database_url

TABLES = {
    "decision",
    "decision_payload",
    "api_key",
    "shadow_run",
    "verdict",
    "worker_heartbeat",
    "leader_lease",
    "sampling_stratum",
    "budget_day",
    "event",
    "verdict_window_snapshot",
    "traffic_window_snapshot",
    "sequential_state",
    "drift_report",
}


@pytest.fixture
def empty_settings(backend: str, tmp_path: Path, postgres_database_factory: object) -> Settings:
    url = make_empty_database_url(backend, tmp_path, postgres_database_factory)
    return Settings(data_dir=tmp_path, database_url=url)


def test_upgrade_from_empty_down_and_up_again(empty_settings: Settings) -> None:
    engine = create_db_engine(empty_settings)
    assert current_revision(engine) is None

    upgrade_database(empty_settings)
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES

    command.downgrade(alembic_config(empty_settings.resolved_database_url), "base")
    assert not TABLES & set(inspect(engine).get_table_names())

    upgrade_database(empty_settings)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrations_match_the_models(empty_settings: Settings) -> None:
    upgrade_database(empty_settings)
    engine = create_db_engine(empty_settings)
    with engine.connect() as connection:
        # PostgreSQL's partitioned decision log differs from the models on purpose (0023).
        include = schema_comparison_filter(connection)
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include}
        )
        differences = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    assert differences == []


def test_api_refuses_to_start_on_an_unmigrated_database(empty_settings: Settings) -> None:
    app = create_app(empty_settings)
    with pytest.raises(DatabaseNotReady, match="run `shadoweval db upgrade`"), TestClient(app):
        pass


def test_readyz_is_503_until_migrated(empty_settings: Settings) -> None:
    client = TestClient(create_app(empty_settings))  # no lifespan: the app serves anyway
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert "shadoweval db upgrade" in not_ready.json()["detail"]
    upgrade_database(empty_settings)
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1",
    )
    response = TestClient(create_app(settings)).get("/readyz")
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]


def test_database_ahead_of_the_code_is_served_with_a_warning(empty_settings: Settings) -> None:
    upgrade_database(empty_settings)
    engine = create_db_engine(empty_settings)
    client = TestClient(create_app(empty_settings, engine))
    # A rolling deploy ran a newer migration than this replica knows.
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'future_9999'"))
    ahead = client.get("/readyz")
    assert ahead.status_code == 200
    assert ahead.json()["revision"] == "future_9999"

    engine.dispose()
