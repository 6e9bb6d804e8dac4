"""Shared fixtures: databases on SQLite and PostgreSQL, a live API, API keys.

Every database-backed test runs on both backends. PostgreSQL comes from
SHADOWEVAL_TEST_POSTGRES_URL (default: the local server, database `test`); each
test run creates a database of its own there and drops it at the end. Where
PostgreSQL is unreachable its tests skip with the reason, unless CI=true, where
they fail: CI must never pass without having run them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel

from shadoweval import models as _all_tables  # noqa: F401  (fills SQLModel.metadata)
from shadoweval.app import create_app
from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from shadoweval.db import create_db_engine, upgrade_database

POSTGRES_ADMIN_URL = os.environ.get(
    "SHADOWEVAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Every table but Alembic's own, children first so DELETE respects foreign keys on SQLite.
TABLES = tuple(
    table.name
    for table in reversed(SQLModel.metadata.sorted_tables)
    if table.name != "alembic_version"
)


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means "unavailable"
        return f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc.__class__.__name__}: {exc}"
    return None


def _require_postgres() -> None:
    reason = _postgres_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true requires PostgreSQL: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database_factory() -> Iterator[object]:
    """Creates fresh PostgreSQL databases for this run; drops them all at the end."""
    created: list[str] = []
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def create() -> str:
        _require_postgres()
        name = f"shadoweval_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield create
    if created:
        with admin.connect() as connection:
            for name in created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_empty_database_url(backend: str, tmp_path: Path, postgres_factory: object) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'{uuid.uuid4().hex[:8]}.db'}"
    return postgres_factory()  # type: ignore[operator,no-any-return]


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI tests configure logging onto CliRunner's stream, which closes after the call."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def base_settings(
    backend: str, tmp_path_factory: pytest.TempPathFactory, postgres_database_factory: object
) -> Settings:
    """Settings of a migrated database of this backend, shared by the session's tests."""
    data_dir = tmp_path_factory.mktemp(f"data-{backend}")
    url = make_empty_database_url(backend, data_dir, postgres_database_factory)
    # The plan cache reloads on every ingest, so one test's strata never leak into the next.
    # Most tests post a few decisions and expect them sampled at once: they sample at
    # ingest; the hourly planner (the default) has its own tests (tests/integration/sampling).
    settings = Settings(
        data_dir=data_dir, database_url=url, plan_refresh_seconds=0, sampling_mode="at_ingest"
    )
    upgrade_database(settings)
    return settings


@pytest.fixture(scope="session")
def shared_engine(base_settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(base_settings)
    yield engine
    engine.dispose()


def _empty_tables(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # decision_key: PostgreSQL's dedup table (migration 0023), not on the metadata.
            tables = ", ".join((*TABLES, "decision_key"))
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def engine(shared_engine: Engine) -> Iterator[Engine]:
    """The backend's engine, with every table emptied after the test."""
    yield shared_engine
    _empty_tables(shared_engine)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveApi:
    app: FastAPI
    url: str

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def serve(app: FastAPI) -> Iterator[LiveApi]:
    """Run `app` under uvicorn on a free local port for the duration of the block."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test API server did not start")
        time.sleep(0.02)
    try:
        yield LiveApi(app=app, url=f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def shared_live_api(base_settings: Settings, shared_engine: Engine) -> Iterator[LiveApi]:
    """The real app under uvicorn on a local port, over real HTTP."""
    with serve(create_app(base_settings, shared_engine)) as api:
        yield api


@pytest.fixture
def live_api(shared_live_api: LiveApi, engine: Engine) -> Iterator[LiveApi]:
    """The live API with tables emptied after the test; settings changes are undone too."""
    # (pytest's monkeypatch cannot undo attributes of Starlette's State: it deletes them.)
    original = shared_live_api.app.state.settings
    yield shared_live_api
    shared_live_api.app.state.settings = original


def use_settings(api: LiveApi, **changes: object) -> Settings:
    """Run the live API with some settings changed for this test only (needs `live_api`)."""
    changed: Settings = api.app.state.settings.model_copy(update=changes)
    api.app.state.settings = changed
    return changed


@dataclass
class Keys:
    ingest: str
    read: str
    operate: str
    admin: str

    def for_scope(self, scope: Scope) -> str:
        return str(getattr(self, scope.value))


@pytest.fixture
def keys(session: Session) -> Keys:
    """One key per scope."""
    made = {
        scope: auth_service.create_key(session=session, scopes=[scope], name=f"test {scope}").key
        for scope in Scope
    }
    return Keys(
        ingest=made[Scope.INGEST],
        read=made[Scope.READ],
        operate=made[Scope.OPERATE],
        admin=made[Scope.ADMIN],
    )


def decision(request_id: str = "r-1", **fields: object) -> dict[str, object]:
    """A valid decision-log item; pass fields to change or add."""
    item: dict[str, object] = {
        "request_id": request_id,
        "router": "support-router",
        "tier": "cheap",
        "chosen_model": "claude-haiku-4-5",
        "ts": "2026-11-27T12:00:00Z",
        "router_score": 0.3,
        "threshold": 0.5,
        "segment": {"topic": "billing", "language": "en"},
        "request": {"messages": [{"role": "user", "content": f"question {request_id}"}]},
        "response": {"text": f"answer {request_id}", "finish_reason": "stop"},
        "usage": {"input_tokens": 12, "output_tokens": 30},
        "cost_usd": 0.0001,
        "latency_ms": 420.0,
    }
    item.update(fields)
    return item
