"""Schemathesis against the OpenAPI schema of every ingest operation: no 5xx, no logged crash."""

from __future__ import annotations

import logging
import os
import tempfile
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
from tests.conftest import BACKENDS, LiveApi, make_empty_database_url, serve

# Per mode, so twice this per operation. Schemathesis's body generation, not the requests,
# takes ~90 % of the time (0.2 s an OTLP trace at load 11): at 250, positive traces alone
# took ~5 min of CI at load 13–19. 100 per mode still sends every operation, in both
# modes, on both databases, hundreds of bodies (200 per operation on SQLite, 40 on
# PostgreSQL; feedback 80 and 16); SHADOWEVAL_FUZZ_EXAMPLES=250 gives the deeper run.
EXAMPLES_PER_MODE = int(os.environ.get("SHADOWEVAL_FUZZ_EXAMPLES", "100"))
# Feedback's schema is small (seven fields): fewer examples cover it, and keep CI's time.
EXAMPLES_PER_MODE_BY_PATH = {"/v1/feedback": max(1, EXAMPLES_PER_MODE * 2 // 5)}


# PostgreSQL refuses what SQLite stores (NUL in text and JSONB): a shorter run there too.
EXAMPLES_FACTOR_BY_BACKEND = {"sqlite": 1.0, "postgresql": 0.2}


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed_api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database_factory: object,
) -> Iterator[tuple[LiveApi, str, str]]:
    backend: str = request.param
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    app_settings = Settings(
        data_dir=data_dir,
        database_url=make_empty_database_url(backend, data_dir, postgres_database_factory),
        plan_refresh_seconds=0,
    )
    upgrade_database(app_settings)
    engine = create_db_engine(app_settings)
    with session_scope(engine) as session:
        key = auth_service.create_key(session=session, scopes=[Scope.INGEST]).key
    with serve(create_app(app_settings, engine)) as api:
        yield api, key, backend
    engine.dispose()


def ingest_operations() -> list[str]:
    with tempfile.TemporaryDirectory() as data_dir:  # the schema only; nothing is written
        app = create_app(Settings(data_dir=Path(data_dir)))
        paths = app.openapi()["paths"]
    return [
        path
        for path, operations in paths.items()
        if ("post" in operations and path in ("/v1/decisions", "/v1/traces", "/v1/feedback"))
        or path.startswith("/v1/integrations/")
    ]


@pytest.mark.parametrize("path", ingest_operations())
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(
    fuzzed_api: tuple[LiveApi, str, str],
    path: str,
    mode: GenerationMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, key, backend = fuzzed_api
    schema = schemathesis.openapi.from_dict(api.app.openapi())
    operation = schema[path]["POST"]
    statuses: list[int] = []
    examples = max(
        1,
        round(
            EXAMPLES_PER_MODE_BY_PATH.get(path, EXAMPLES_PER_MODE)
            * EXAMPLES_FACTOR_BY_BACKEND[backend]
        ),
    )

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
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
    assert len(statuses) >= examples // 2  # generation did run (duplicates are skipped)
