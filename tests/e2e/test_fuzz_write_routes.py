"""Schemathesis against every write route that is not ingest (keys, pool, alert rules,
gates, review labels, acknowledge and silence), on both databases: no 5xx, no logged crash.

The ingest routes have their own, longer run (test_fuzz_ingest.py); these bodies are small
admin and operate documents, so a dozen examples per mode find what is unbounded. PostgreSQL
gets a smoke run (its own failures are NUL and range errors, which the same examples reach);
SHADOWEVAL_FUZZ_WRITE_EXAMPLES sets both for a longer run.
"""

from __future__ import annotations

import logging
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from sqlalchemy import create_engine
from sqlmodel import Session

from shadoweval.app import create_app
from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from tests.conftest import LiveApi

_EXAMPLES = os.environ.get("SHADOWEVAL_FUZZ_WRITE_EXAMPLES")
EXAMPLES_PER_MODE = {
    "sqlite": int(_EXAMPLES or 12),
    "postgresql": int(_EXAMPLES or 5),
}
INGEST_PATHS = ("/v1/decisions", "/v1/traces", "/v1/feedback", "/v1/integrations/litellm")


def write_operations() -> list[tuple[str, str]]:
    # Building the document needs no database: an engine that never connects will do.
    app = create_app(Settings(database_url="sqlite://"), create_engine("sqlite://"))
    return [
        (method.upper(), path)
        for path, operations in sorted(app.openapi()["paths"].items())
        for method in operations
        if method in ("post", "put", "patch", "delete")
        and path.startswith("/v1")
        and path not in INGEST_PATHS
        and not (method == "delete" and path == "/v1/decisions")  # deletion: its own tests
    ]


def test_every_write_route_but_ingest_is_fuzzed() -> None:
    assert set(write_operations()) >= {
        ("POST", "/v1/keys"),
        ("POST", "/v1/keys/{prefix}/rotate"),
        ("DELETE", "/v1/keys/{prefix}"),
        ("PUT", "/v1/pool"),
        ("PUT", "/v1/alert-rules"),
        ("POST", "/v1/gates"),
        ("POST", "/v1/review/labels"),
        ("POST", "/v1/alerts/{alert_id}/acknowledge"),
        ("POST", "/v1/alerts/{alert_id}/silence"),
    }


@pytest.mark.parametrize(("method", "path"), write_operations())
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(
    live_api: LiveApi,
    session: Session,
    backend: str,
    method: str,
    path: str,
    mode: GenerationMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = auth_service.create_key(session=session, scopes=list(Scope), name="fuzz").key
    schema = schemathesis.openapi.from_dict(live_api.app.openapi())
    operation = schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE[backend],
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=live_api.url, headers={"Authorization": f"Bearer {key}"})
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.body, response.status_code, response.text[:500])

    with caplog.at_level(logging.ERROR):
        try:
            run()
        except Unsatisfiable:
            # An unconstrained string path parameter and no body: nothing to violate.
            if mode is GenerationMode.NEGATIVE:
                pytest.skip("the schema has no constraint a negative case could break")
            raise
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crashes == [], [r.getMessage() for r in crashes]
    assert statuses  # generation did run
