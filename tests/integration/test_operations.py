"""/healthz, /readyz, /metrics and the OpenAPI document."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from shadoweval.app import create_app
from shadoweval.config import Settings
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
