"""The API document and its pages as a router developer meets them: offline docs, a valid
OpenAPI 3.1 document, the bearer scheme and auth errors on every guarded route, readable ids.

The app is built without its lifespan: none of this reads the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from sqlalchemy import create_engine

from shadoweval import openapi
from shadoweval.app import create_app
from shadoweval.auth.models import Scope
from shadoweval.config import Settings

ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'unused.db'}"
    return create_app(Settings(database_url=url), create_engine(url))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> TestClient:
    # Not entered as a context manager: the lifespan would refuse the unmigrated database.
    return TestClient(app)


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_app(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    # Nothing on the page reaches another origin: no CDN, no Google Fonts.
    assert not re.search(r"(https?:)?//[\w.-]+\.\w+/", html.text), html.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        assert not asset.startswith("//"), asset
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        expected = ASSET_TYPES[Path(asset).suffix]
        assert expected in answer.headers["content-type"], (asset, answer.headers)
        assert len(answer.content) > 1000
    # The page reads this app's own document.
    assert "'/openapi.json'" in html.text or '"/openapi.json"' in html.text


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_operation_ids_are_the_route_functions_names(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    by_route = {(path, method): op["operationId"] for path, method, op in operations(document)}
    assert by_route["/v1/decisions", "post"] == "post_decisions"
    assert by_route["/v1/alerts", "get"] == "list_alerts"
    assert by_route["/metrics", "get"] == "prometheus_metrics"
    for operation_id in ids:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", operation_id), operation_id
        assert "_v1_" not in operation_id, operation_id


def test_bearer_scheme_is_declared(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][openapi.SECURITY_SCHEME]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}


def test_every_guarded_route_documents_its_scope_and_auth_errors(
    app: FastAPI, document: dict[str, Any]
) -> None:
    guarded = 0
    for route in openapi.api_routes(app):
        scopes = openapi.route_scopes(route)
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            where = f"{method} {route.path_format}"
            if not openapi.needs_key(route):
                assert operation["security"] == [], where
                continue
            guarded += 1
            assert operation["security"] == [
                {openapi.SECURITY_SCHEME: [scope.value for scope in scopes]}
            ], where
            codes = ["401", "403"] if scopes else ["401"]
            for code in codes:
                body = operation["responses"][code]["content"]["application/json"]["schema"]
                assert body == {"$ref": f"#/components/schemas/{openapi.ERROR_SCHEMA}"}, where
            for scope in scopes:
                assert f"`{scope.value}`" in operation["description"], where
    assert guarded >= 40


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("post", "/v1/decisions", Scope.INGEST),  # the ingest route's own, cached check
        ("get", "/v1/decisions", Scope.READ),
        ("get", "/v1/keys", Scope.ADMIN),  # a router-level dependency
        ("post", "/v1/alerts/{alert_id}/acknowledge", Scope.OPERATE),  # a parameter's
    ],
)
def test_scope_is_derived_from_the_route_dependencies(
    document: dict[str, Any], method: str, path: str, scope: Scope
) -> None:
    operation = document["paths"][path][method]
    assert operation["security"] == [{openapi.SECURITY_SCHEME: [scope.value]}]


def test_derived_scopes_agree_with_the_hand_written_scope_matrix(
    document: dict[str, Any],
) -> None:
    """test_auth.py's matrix is checked against live refusals; the document must agree."""
    from tests.integration.test_auth import SCOPE_MATRIX

    for method, template, required, *_ in SCOPE_MATRIX:
        operation = document["paths"][template][method.lower()]
        assert operation["security"] == [{openapi.SECURITY_SCHEME: [required.value]}], template


def test_refusals_match_the_documented_error_body(
    client: TestClient, document: dict[str, Any]
) -> None:
    """The 401 the guard actually sends has the documented body's required fields."""
    answer = client.get("/v1/alerts")
    assert answer.status_code == 401
    error_schema = document["components"]["schemas"][openapi.ERROR_SCHEMA]
    assert set(error_schema["required"]) <= set(answer.json())


def test_operational_routes_say_what_they_answer(document: dict[str, Any]) -> None:
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    ready = document["paths"]["/readyz"]["get"]["responses"]
    assert {"200", "503"} <= set(ready)
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/Readiness")
    health = document["paths"]["/healthz"]["get"]
    assert health["security"] == []
    assert "application/json" in health["responses"]["200"]["content"]
