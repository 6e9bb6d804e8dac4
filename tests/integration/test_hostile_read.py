"""Hostile input on every read route: overflowing or naive datetimes, NUL and bytes that are
not UTF-8 in any parameter, forged cursors and ids past BIGINT answer 400/404/422 naming the
parameter, never a 5xx, on both databases (issue 15 §5, §12).

The routes and their parameters come from the OpenAPI document, so a new read route is in
the corpus the day it is added.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import create_engine
from sqlmodel import Session

from shadoweval.app import create_app
from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from tests.conftest import LiveApi

# Instants RFC 3339 allows that no UTC datetime holds, a naive one, and plain junk.
BAD_DATETIMES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-23:59",
    "2026-01-01T00:00:00",
    "2026-13-45T99:00:00Z",
]
# Percent-encoded as sent on the wire: NUL, a UTF-8-encoded lone surrogate (U+D800), a stray byte.
BAD_TEXT = ["a%00b", "s-%ED%A0%80", "%FF"]
BAD_ROW_IDS = [str(2**63), str(10**30), "-1", "0"]


def _cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# Listings ordered by (ts, id) read the cursor's ts too; the others only its id.
KEYSET_LISTINGS = {"/v1/decisions", "/v1/verdicts", "/v1/shadow-runs"}
BAD_KEYSET_CURSORS = [
    _cursor({"ts": "2026-01-01T00:00:00", "id": 1, "order": "asc"}),  # naive ts
    _cursor({"ts": "0001-01-01T00:00:00+01:00", "id": 1, "order": "asc"}),  # overflowing ts
    _cursor({"ts": "not a time", "id": 1, "order": "asc"}),
]
BAD_CURSORS = [
    _cursor({"ts": "2026-01-01T00:00:00+00:00", "id": 10**30, "order": "asc"}),
    _cursor({"ts": "2026-01-01T00:00:00+00:00", "id": -5, "order": "asc"}),
    _cursor({"ts": "2026-01-01T00:00:00+00:00", "id": "7", "order": "asc"}),
    _cursor({"id": 2**63}),
    _cursor({"id": 1.5}),
    _cursor("[" * 3000 + "]" * 3000),  # deeper than the JSON decoder's stack
    "!!!not-base64!!!",
    "e30",  # {}
]


@dataclass(frozen=True)
class Case:
    route: str  # the path template
    parameter: str
    url: str  # path and query, already percent-encoded

    @property
    def id(self) -> str:
        return f"{self.route}:{self.parameter}:{self.url.rsplit('=', 1)[-1][:24]}"


def _schema_value(param: dict[str, Any]) -> str:
    """A valid value for a required parameter, so the case fails on the hostile one only."""
    return "r" if param["name"] == "router" else "1"


def _read_operations() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    # Building the document needs no database: an engine that never connects will do.
    app = create_app(Settings(database_url="sqlite://"), create_engine("sqlite://"))
    paths = app.openapi()["paths"]
    for template, operations in sorted(paths.items()):
        if template.startswith("/v1") and "get" in operations:
            yield template, operations["get"].get("parameters", [])


def _types(param: dict[str, Any]) -> set[str]:
    schema = param["schema"]
    options = schema.get("anyOf", [schema])
    return {f"{o.get('type')}:{o.get('format', '')}" for o in options}


def build_cases() -> list[Case]:
    cases: list[Case] = []
    for template, params in _read_operations():
        path_params = {p["name"]: p for p in params if p["in"] == "path"}
        query = [p for p in params if p["in"] == "query"]
        required = {p["name"]: _schema_value(p) for p in query if p.get("required")}

        def url(
            path_values: dict[str, str],
            extra: dict[str, str],
            template: str = template,
            required: dict[str, str] = required,
        ) -> str:
            path = template
            for name in re.findall(r"\{(\w+)\}", template):
                path = path.replace("{" + name + "}", path_values.get(name, "1"))
            pairs = {**required, **extra}
            return path + ("?" + "&".join(f"{k}={v}" for k, v in pairs.items()) if pairs else "")

        for name, param in path_params.items():
            values = BAD_TEXT + (BAD_ROW_IDS if "integer:" in _types(param) else [])
            cases += [Case(template, name, url({name: v}, {})) for v in values]
        for param in query:
            name, types = param["name"], _types(param)
            values = list(BAD_TEXT)
            if "string:date-time" in types:
                values += [quote(v, safe="") for v in BAD_DATETIMES]
            if name == "cursor":
                values += BAD_CURSORS + (BAD_KEYSET_CURSORS if template in KEYSET_LISTINGS else [])
            if "integer:" in types and name.endswith("_id"):
                values += BAD_ROW_IDS
            cases += [Case(template, name, url({}, {name: v})) for v in values]
    return cases


CASES = build_cases()


@pytest.fixture
def client(live_api: LiveApi, session: Session) -> Iterator[httpx.Client]:
    key = auth_service.create_key(session=session, scopes=list(Scope), name="hostile").key
    with live_api.client(key) as client:
        yield client


def _named_locations(body: Any) -> list[list[Any]]:
    if isinstance(body.get("detail"), list):
        return [list(error["loc"]) for error in body["detail"]]
    return [body.get("loc") or [body.get("field")]]


def test_the_corpus_covers_every_read_route_and_kind() -> None:
    routes = {template for template, params in _read_operations() if params}
    assert routes == {case.route for case in CASES}
    for parameter in ("since", "until", "cursor", "router", "decision_id", "verdict_id"):
        assert any(case.parameter == parameter for case in CASES), parameter
    assert len(CASES) > 300


def _problem(response: httpx.Response, case: Case) -> str | None:
    """Why the answer to `case` is wrong, or None: a 400/404/422 that names the parameter."""
    if response.status_code not in (400, 404, 422):
        return f"{response.status_code} {response.text[:200]}"
    if response.status_code == 404:
        return None
    locations = _named_locations(response.json())
    if not any(case.parameter in location for location in locations):
        return f"does not name {case.parameter}: {response.text[:200]}"
    return None


def test_hostile_parameters_are_refused_naming_them(client: httpx.Client, backend: str) -> None:
    problems: dict[Case, str] = {}
    server_errors: list[Case] = []
    for case in CASES:
        try:
            response = client.get(case.url)
        except httpx.TransportError as error:  # a dropped connection is a server error too
            server_errors.append(case)
            problems[case] = f"{type(error).__name__}: {error}"
            continue
        if response.status_code >= 500:
            server_errors.append(case)
        problem = _problem(response, case)
        if problem:
            problems[case] = problem
    print(f"{backend}: {len(CASES)} cases, {len(server_errors)} answered ≥ 500:")
    print(sorted({(case.route, case.parameter) for case in server_errors}))
    assert {case.id: problem for case, problem in problems.items()} == {}


def test_training_export_refuses_a_bad_window_before_streaming(client: httpx.Client) -> None:
    # It used to fail inside the stream: the client saw a 200 and a dropped connection.
    response = client.get(
        "/v1/exports/training", params={"router": "r", "since": "0001-01-01T00:00:00+01:00"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "since"]


@pytest.mark.parametrize(
    ("router", "ascii_fallback", "encoded"),
    [
        (
            "a\"; filename*=UTF-8''evil.sh; x=\"",
            "a__ filename__UTF-8__evil.sh_ x__-training.jsonl",
            "a%22%3B%20filename%2A%3DUTF-8%27%27evil.sh%3B%20x%3D%22-training.jsonl",
        ),
        ("✓", "_-training.jsonl", "%E2%9C%93-training.jsonl"),
    ],
)
def test_export_filename_is_quoted_per_rfc_6266(
    client: httpx.Client, router: str, ascii_fallback: str, encoded: str
) -> None:
    response = client.get("/v1/exports/training", params={"router": router})
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert disposition == (f"attachment; filename=\"{ascii_fallback}\"; filename*=UTF-8''{encoded}")
