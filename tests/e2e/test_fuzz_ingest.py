"""Schemathesis against the OpenAPI schema of every ingest operation: no 5xx, no logged crash."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from shadoweval.app import create_app
from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from shadoweval.db import create_db_engine, session_scope, upgrade_database
from tests.conftest import LiveApi, serve

EXAMPLES_PER_MODE = int(
    os.environ.get("SHADOWEVAL_FUZZ_EXAMPLES", "250")
)  # per mode: 500 per operation


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApi, str]]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    app_settings = Settings(data_dir=data_dir, plan_refresh_seconds=0)
    upgrade_database(app_settings)
    engine = create_db_engine(app_settings)
    with session_scope(engine) as session:
        key = auth_service.create_key(session=session, scopes=[Scope.INGEST]).key
    with serve(create_app(app_settings, engine)) as api:
        yield api, key
    engine.dispose()


def ingest_operations() -> list[str]:
    app = create_app(Settings(database_url="sqlite://"))
    paths = app.openapi()["paths"]
    return [
        path
        for path, operations in paths.items()
        if ("post" in operations and path in ("/v1/decisions", "/v1/traces"))
        or path.startswith("/v1/integrations/")
    ]


@pytest.mark.parametrize("path", ingest_operations())
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(
    fuzzed_api: tuple[LiveApi, str],
    path: str,
    mode: GenerationMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, key = fuzzed_api
    schema = schemathesis.openapi.from_dict(api.app.openapi())
    operation = schema[path]["POST"]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=api.url, headers={"Authorization": f"Bearer {key}"})
        statuses.append(response.status_code)
        assert response.status_code < 500, (response.status_code, response.text[:500])

    with caplog.at_level(logging.ERROR):
        run()
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crashes == [], [r.getMessage() for r in crashes]
    assert len(statuses) >= EXAMPLES_PER_MODE // 2  # generation did run (duplicates are skipped)
