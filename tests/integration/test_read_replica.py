"""SHADOWEVAL_DATABASE_READ_URL: the dashboard's read routes read the replica, writes and
reads of one's own writes stay on the primary, and /metrics shows the replica's lag.

The "replica" is a second database of the same backend (a standby cannot be started in a
test): a row only it holds proves which database a route read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.app import create_app
from shadoweval.auth.models import ApiKey
from shadoweval.config import Settings
from shadoweval.db import create_db_engine, upgrade_database
from shadoweval.deps import REPLICA_READ_ROUTES
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from tests.conftest import Keys, decision, make_empty_database_url


@pytest.fixture
def replica_settings(
    base_settings: Settings, tmp_path: Path, postgres_database_factory: object
) -> Settings:
    """The primary's settings with a second, migrated database of the same backend as the
    read URL."""
    backend = (
        "postgresql" if base_settings.resolved_database_url.startswith("postgres") else "sqlite"
    )
    url = make_empty_database_url(backend, tmp_path, postgres_database_factory)
    upgrade_database(base_settings.model_copy(update={"database_url": url}))
    return base_settings.model_copy(update={"database_read_url": url})


@pytest.fixture
def replica_engine(replica_settings: Settings) -> Iterator[Engine]:
    replica = replica_settings.read_replica_settings()
    assert replica is not None
    engine = create_db_engine(replica)
    yield engine
    engine.dispose()


def _count(engine: Engine, request_id: str) -> int:
    with Session(engine) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Decision).where(Decision.request_id == request_id)
            )
            or 0
        )


def test_read_routes_read_the_replica_and_writes_land_on_the_primary(
    engine: Engine, replica_engine: Engine, replica_settings: Settings, keys: Keys
) -> None:
    with Session(replica_engine) as session:  # a row only the replica holds
        ingest_service.ingest_decisions(
            session=session,
            settings=replica_settings,
            parsed=ParsedBody(items=[decision("only-on-replica")]),
        )
    app = create_app(replica_settings, engine, replica_engine)
    with TestClient(app) as client:
        ingest = {"Authorization": f"Bearer {keys.ingest}"}
        read = {"Authorization": f"Bearer {keys.read}"}
        posted = client.post("/v1/decisions", json=[decision("posted")], headers=ingest)
        assert posted.status_code == 202, posted.text

        # The write went to the primary only.
        assert _count(engine, "posted") == 1
        assert _count(replica_engine, "posted") == 0

        # A replica route (the dashboard's decision list) sees the replica's rows, and
        # authenticates on the primary: the replica holds no keys at all.
        with Session(replica_engine) as session:
            assert session.scalar(select(func.count()).select_from(ApiKey)) == 0
        listed = client.get("/v1/decisions", headers=read)
        assert listed.status_code == 200, listed.text
        assert [row["request_id"] for row in listed.json()["items"]] == ["only-on-replica"]

        # Analytics routes answer from the replica as well (keys checked on the primary).
        segments = client.get("/v1/segments", headers=read)
        assert segments.status_code == 200, segments.text

        # A read of one's own write (a decision fetched by id after its POST) is on the
        # primary: the posted decision is there, the replica's row is not.
        with Session(engine) as session:
            posted_id = session.scalar(select(Decision.id).where(Decision.request_id == "posted"))
        assert client.get(f"/v1/decisions/{posted_id}", headers=read).status_code == 200

        # The lag gauge is there, and 0 where the read database is no standby.
        metrics = client.get("/metrics")
        assert "shadoweval_replica_lag_seconds 0.0" in metrics.text


def test_without_a_read_url_every_read_is_on_the_primary(engine: Engine, keys: Keys) -> None:
    settings = Settings(
        database_url=str(engine.url.render_as_string(hide_password=False)),
        plan_refresh_seconds=0,
        sampling_mode="at_ingest",
    )
    app = create_app(settings, engine)
    assert app.state.read_engine is engine
    assert not app.dependency_overrides
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {keys.ingest}"}
        assert (
            client.post("/v1/decisions", json=[decision("p")], headers=headers).status_code == 202
        )
        listed = client.get("/v1/decisions", headers={"Authorization": f"Bearer {keys.read}"})
        assert [row["request_id"] for row in listed.json()["items"]] == ["p"]
        assert "shadoweval_replica_lag_seconds" not in client.get("/metrics").text


def test_replica_routes_are_read_routes_of_the_app(tmp_path: Path) -> None:
    """Every listed path is a GET route the app serves (a renamed route must not silently
    fall back to the primary unnoticed)."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'routes.db'}"))
    gets = {
        str(route.original_route.path)  # what `reads_from_replica` sees in scope["route"]
        for route in iter_route_contexts(app.routes)
        if "GET" in (route.methods or ())
    }
    assert sorted(REPLICA_READ_ROUTES - gets) == []
