"""/healthz, /readyz, /metrics and the OpenAPI document; a stalled or full database."""

from __future__ import annotations

import inspect
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SqlalchemyTimeoutError
from sqlmodel import Session

from shadoweval import exceptions
from shadoweval.app import create_app, status_for
from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from shadoweval.db import create_db_engine, database_error, upgrade_database
from tests.conftest import Keys, LiveApi, decision


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_healthz_and_readyz(live_api: LiveApi) -> None:
    with httpx.Client(base_url=live_api.url) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["revision"]


def test_metrics_count_ingest_outcomes(live_api: LiveApi, keys: Keys) -> None:
    with httpx.Client(base_url=live_api.url) as client:
        before = metric_values(client.get("/metrics").text)
    with live_api.client(keys.ingest) as client:
        client.post("/v1/decisions", json=[decision("m-1"), decision("m-2")])
        client.post("/v1/decisions", json=[decision("m-1"), {"router": "r"}])
        client.post("/v1/decisions", content=b"{", headers={"Content-Type": "application/json"})
    with httpx.Client(base_url=live_api.url) as client:
        after = metric_values(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("shadoweval_decisions_ingested_total") == 2
    assert delta("shadoweval_decisions_duplicate_total") == 1
    assert delta("shadoweval_decisions_rejected_total", reason="missing") == 1
    assert delta("shadoweval_decisions_rejected_total", reason="malformed_body") == 1
    assert (
        delta(
            "shadoweval_http_request_duration_seconds_count",
            method="POST",
            route="/v1/decisions",
            status="422",
        )
        == 1
    )


def test_metrics_can_require_a_read_key(
    base_settings: Settings, engine: Engine, keys: Keys
) -> None:
    app = create_app(base_settings.model_copy(update={"metrics_require_key": True}), engine)
    client = TestClient(app)
    assert client.get("/metrics").status_code == 401
    assert (
        client.get("/metrics", headers={"Authorization": f"Bearer {keys.ingest}"}).status_code
        == 403
    )
    assert (
        client.get("/metrics", headers={"Authorization": f"Bearer {keys.read}"}).status_code == 200
    )
    assert client.get("/healthz").status_code == 200


def test_openapi_documents_the_decision_schema(live_api: LiveApi) -> None:
    with httpx.Client(base_url=live_api.url) as client:
        document = client.get("/openapi.json").json()
    schema = document["components"]["schemas"]["Decision"]
    assert set(schema["required"]) == {"request_id", "router", "tier", "chosen_model"}
    assert {"segment", "features", "router_score", "usage", "request"} <= set(schema["properties"])
    body = document["paths"]["/v1/decisions"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["oneOf"][0] == {
        "$ref": "#/components/schemas/Decision"
    }
    assert "application/x-ndjson" in body
    # Every $ref in the document resolves.
    refs = set(_refs(document))
    assert all(r.split("/")[-1] in document["components"]["schemas"] for r in refs)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_each_request_is_timed_by_route_and_logged_with_its_key_prefix(
    base_settings: Settings, engine: Engine, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(base_settings, engine)
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="shadoweval.api"):
        headers = {"Authorization": f"Bearer {keys.ingest}"}
        assert (
            client.post("/v1/decisions", json=decision("timed"), headers=headers).status_code == 202
        )
        assert client.get("/v1/decisions/999999", headers=headers).status_code == 403
        metrics = metric_values(client.get("/metrics").text)
    lines = [r for r in caplog.records if r.getMessage().startswith(("POST", "GET /v1"))]
    assert [r.getMessage() for r in lines] == [
        "POST /v1/decisions 202",
        "GET /v1/decisions/999999 403",
    ]
    prefix = "_".join(keys.ingest.split("_")[:2])  # sek_<prefix>_<secret>
    assert [(r.key, r.duration_ms >= 0) for r in lines] == [(prefix, True)] * 2  # type: ignore[attr-defined]
    histogram = "shadoweval_http_request_duration_seconds_count"
    assert (
        metrics[(histogram, (("method", "POST"), ("route", "/v1/decisions"), ("status", "202")))]
        == 1
    )
    by_template = (("method", "GET"), ("route", "/v1/decisions/{decision_id}"), ("status", "403"))
    assert metrics[(histogram, by_template)] == 1


# --- a stalled or full database (issue 15) -----------------------------------------------


def test_healthz_answers_on_the_event_loop_without_the_database(tmp_path: Path) -> None:
    """Liveness must not wait for the database or a free worker thread."""
    unreachable = Settings(
        data_dir=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:9/none"
    )
    app = create_app(unreachable)  # no lifespan: the API never checked its database
    client = TestClient(app)
    assert client.get("/healthz").json()["status"] == "ok"
    route = next(r for r in app.routes if getattr(r, "path", None) == "/healthz")
    assert inspect.iscoroutinefunction(route.endpoint)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("error", "status", "code", "says"),
    [
        (sqlite3.OperationalError("database or disk is full"), 507, "storage_full", "disk is full"),
        (psycopg.errors.DiskFull("could not extend file"), 507, "storage_full", "disk is full"),
        (
            psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
            503,
            "database_stalled",
            "not answering within 5s",
        ),
        (
            psycopg.errors.ConnectionTimeout("connection timeout expired"),
            503,
            "database_stalled",
            "not answering",
        ),
        (sqlite3.OperationalError("database is locked"), 503, "overloaded", "retry shortly"),
    ],
)
def test_database_errors_say_whether_retrying_helps(
    error: Exception, status: int, code: str, says: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:9/none"
    )
    engine = create_db_engine(settings)  # never connected: the statement timeout is what counts
    wrapped = OperationalError("INSERT …", None, error)
    domain = database_error(wrapped, engine=engine)
    assert (status_for(domain), domain.code) == (status, code)
    assert says in domain.message
    if status == 507:
        assert "retry shortly" not in domain.message
    engine.dispose()


def test_pool_checkout_timeout_is_a_503_naming_the_stall() -> None:
    domain = database_error(SqlalchemyTimeoutError("QueuePool limit reached"))
    assert isinstance(domain, exceptions.DatabaseStalled)
    assert domain.retry_after_s >= 1


def test_a_full_sqlite_file_answers_507_on_ingest_and_readyz(tmp_path: Path) -> None:
    """A file that cannot grow (max_page_count stands in for a full disk) raises SQLITE_FULL:
    ingest says so with 507 instead of "busy, retry shortly" forever, and /readyz reports it."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'full.db'}",
        sampling_mode="at_ingest",
        plan_refresh_seconds=0,
    )
    upgrade_database(settings)
    engine = create_db_engine(settings)
    with Session(engine) as session:
        key = auth_service.create_key(session=session, scopes=[Scope.INGEST], name="full").key
    with engine.connect() as connection:
        pages = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())
    engine.dispose()

    @event.listens_for(engine, "connect")
    def _cap_file(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count={pages + 4}")

    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings, engine)) as client:
        assert client.get("/readyz").status_code == 200
        statuses = []
        for batch in range(40):
            items = [decision(f"full-{batch}-{i}", note="x" * 2000) for i in range(20)]
            response = client.post("/v1/decisions", json=items, headers=headers)
            statuses.append(response.status_code)
            if response.status_code != 202:
                break
        assert statuses[-1] == 507, statuses
        body = response.json()
        assert body["code"] == "storage_full"
        assert "disk is full" in body["detail"]
        assert "retry shortly" not in body["detail"]
        assert "retry-after" not in response.headers
        ready = client.get("/readyz")
        assert ready.status_code == 507
        assert ready.json()["code"] == "storage_full"
    engine.dispose()
