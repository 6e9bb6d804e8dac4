"""API keys: hashed storage, scopes on every endpoint, revocation, rotation, expiry."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shadoweval.auth import service as auth_service
from shadoweval.auth.models import ApiKey, Scope
from shadoweval.db import utcnow
from tests.conftest import Keys, LiveApi, decision, use_settings

# Every /v1 route, the scope it needs, and a call that passes auth when the scope is held.
# (method, path template, required scope, path used, json body, status when allowed)
SCOPE_MATRIX = [
    ("POST", "/v1/decisions", Scope.INGEST, "/v1/decisions", decision("m"), 202),
    (
        "POST",
        "/v1/integrations/litellm",
        Scope.INGEST,
        "/v1/integrations/litellm",
        {"litellm_call_id": "m", "model": "gpt-4o-mini", "model_group": "cheap"},
        202,
    ),
    ("GET", "/v1/decisions", Scope.READ, "/v1/decisions", None, 200),
    ("DELETE", "/v1/decisions", Scope.ADMIN, "/v1/decisions?router=nobody", None, 200),
    ("POST", "/v1/traces", Scope.INGEST, "/v1/traces", {"resourceSpans": []}, 200),
    ("GET", "/v1/decisions/{decision_id}", Scope.READ, "/v1/decisions/999999", None, 404),
    ("GET", "/v1/verdicts", Scope.READ, "/v1/verdicts", None, 200),
    ("GET", "/v1/verdicts/{verdict_id}", Scope.READ, "/v1/verdicts/999999", None, 404),
    ("GET", "/v1/shadow-runs", Scope.READ, "/v1/shadow-runs", None, 200),
    ("GET", "/v1/spend", Scope.READ, "/v1/spend", None, 200),
    ("GET", "/v1/judge/quality", Scope.READ, "/v1/judge/quality", None, 200),
    ("GET", "/v1/judge/agreement", Scope.READ, "/v1/judge/agreement", None, 200),
    ("GET", "/v1/judge/timeline", Scope.READ, "/v1/judge/timeline", None, 200),
    ("GET", "/v1/judge/pairs", Scope.READ, "/v1/judge/pairs", None, 200),
    (
        "POST",
        "/v1/feedback",
        Scope.INGEST,
        "/v1/feedback",
        {"router": "r", "request_id": "m", "kind": "thumbs", "value": "up"},
        202,
    ),
    ("GET", "/v1/review/queue", Scope.OPERATE, "/v1/review/queue", None, 200),
    (
        "POST",
        "/v1/review/labels",
        Scope.OPERATE,
        "/v1/review/labels",
        {"token": "unknown", "choice": "A"},
        404,
    ),
    ("GET", "/v1/segments", Scope.READ, "/v1/segments", None, 200),
    ("GET", "/v1/calibration", Scope.READ, "/v1/calibration", None, 200),
    ("GET", "/v1/calibration/windows", Scope.READ, "/v1/calibration/windows", None, 200),
    ("GET", "/v1/economics", Scope.READ, "/v1/economics?router=r", None, 200),
    ("GET", "/v1/sessions", Scope.READ, "/v1/sessions?router=r", None, 200),
    ("GET", "/v1/thresholds", Scope.READ, "/v1/thresholds?router=r", None, 404),
    (
        "GET",
        "/v1/segments/{segment}/estimates",
        Scope.READ,
        "/v1/segments/billing/estimates?router=r",
        None,
        404,
    ),
    ("GET", "/v1/sampling", Scope.READ, "/v1/sampling", None, 200),
    ("GET", "/v1/sampling/periods", Scope.READ, "/v1/sampling/periods", None, 200),
    ("GET", "/v1/budget", Scope.READ, "/v1/budget", None, 200),
    ("GET", "/v1/events", Scope.READ, "/v1/events", None, 200),
    ("GET", "/v1/drift", Scope.READ, "/v1/drift", None, 200),
    ("GET", "/v1/alert-deliveries", Scope.READ, "/v1/alert-deliveries", None, 200),
    (
        "GET",
        "/v1/alert-deliveries/{delivery_id}/attempts",
        Scope.READ,
        "/v1/alert-deliveries/999999/attempts",
        None,
        404,
    ),
    ("GET", "/v1/alerts", Scope.READ, "/v1/alerts", None, 200),
    ("GET", "/v1/alerts/{alert_id}", Scope.READ, "/v1/alerts/999999", None, 404),
    (
        "POST",
        "/v1/alerts/{alert_id}/acknowledge",
        Scope.OPERATE,
        "/v1/alerts/999999/acknowledge",
        None,
        404,
    ),
    (
        "POST",
        "/v1/alerts/{alert_id}/silence",
        Scope.OPERATE,
        "/v1/alerts/999999/silence",
        {"minutes": 30},
        404,
    ),
    ("GET", "/v1/alert-rules", Scope.ADMIN, "/v1/alert-rules", None, 200),
    ("PUT", "/v1/alert-rules", Scope.ADMIN, "/v1/alert-rules", {"rules": []}, 200),
    (
        "GET",
        "/v1/drift/{report_id}/report.html",
        Scope.READ,
        "/v1/drift/999/report.html",
        None,
        404,
    ),
    ("GET", "/v1/pool", Scope.READ, "/v1/pool", None, 200),
    (
        "PUT",
        "/v1/pool",
        Scope.ADMIN,
        "/v1/pool",
        {"router": "scope-test", "tiers": {"cheap": ["m"]}},
        200,
    ),
    ("GET", "/v1/exports/training", Scope.READ, "/v1/exports/training?router=r", None, 200),
    ("GET", "/v1/gates", Scope.READ, "/v1/gates", None, 200),
    ("GET", "/v1/gates/{gate_id}", Scope.READ, "/v1/gates/999999", None, 404),
    (
        "POST",
        "/v1/gates",
        Scope.OPERATE,
        "/v1/gates",
        {"router": "nobody", "candidate": "a", "replace": "b", "sample": 1, "max_drop": 0.1},
        400,
    ),
    ("GET", "/v1/keys", Scope.ADMIN, "/v1/keys", None, 200),
    ("POST", "/v1/keys", Scope.ADMIN, "/v1/keys", {"scopes": ["read"]}, 201),
    ("DELETE", "/v1/keys/{prefix}", Scope.ADMIN, "/v1/keys/sek_00000000", None, 404),
    (
        "POST",
        "/v1/keys/{prefix}/rotate",
        Scope.ADMIN,
        "/v1/keys/sek_00000000/rotate",
        {},
        404,
    ),
]
OPEN_PATHS = ["/healthz", "/readyz", "/metrics"]


def test_matrix_covers_every_v1_route(live_api: LiveApi) -> None:
    # The OpenAPI document lists every mounted route, including those of included routers.
    routes = {
        (method.upper(), path)
        for path, operations in live_api.app.openapi()["paths"].items()
        if path.startswith("/v1")
        for method in operations
    }
    assert routes == {(method, template) for method, template, *_ in SCOPE_MATRIX}


@pytest.mark.parametrize("scope", list(Scope))
@pytest.mark.parametrize(
    ("method", "template", "required", "path", "body", "allowed_status"),
    SCOPE_MATRIX,
    ids=[f"{m} {t}" for m, t, *_ in SCOPE_MATRIX],
)
def test_scope_matrix(
    live_api: LiveApi,
    keys: Keys,
    scope: Scope,
    method: str,
    template: str,
    required: Scope,
    path: str,
    body: object,
    allowed_status: int,
) -> None:
    with live_api.client(keys.for_scope(scope)) as client:
        response = client.request(method, path, json=body)
    if scope == required:
        assert response.status_code == allowed_status, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["required_scope"] == required.value


@pytest.mark.parametrize(("method", "template", "required", "path", "body", "_s"), SCOPE_MATRIX)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-key", "Bearer sek_deadbeef_wrongsecret"],
)
def test_every_v1_route_needs_a_valid_key(
    live_api: LiveApi,
    keys: Keys,
    method: str,
    template: str,
    required: Scope,
    path: str,
    body: object,
    _s: int,
    authorization: str | None,
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=live_api.url) as client:
        response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"]


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_operational_endpoints_are_open_by_default(live_api: LiveApi, path: str) -> None:
    with httpx.Client(base_url=live_api.url) as client:
        assert client.get(path).status_code == 200


def test_key_with_several_scopes_gets_each(live_api: LiveApi, session: Session) -> None:
    key = auth_service.create_key(session=session, scopes=[Scope.INGEST, Scope.READ]).key
    with live_api.client(key) as client:
        assert client.post("/v1/decisions", json=decision("multi")).status_code == 202
        assert client.get("/v1/decisions").status_code == 200
        assert client.get("/v1/keys").status_code == 403


def test_keys_are_stored_hashed(engine: Engine, session: Session) -> None:
    created = auth_service.create_key(session=session, scopes=[Scope.READ], name="hash check")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_key")).fetchall()
    assert rows
    for row in rows:
        assert all(created.key not in str(value) for value in row)
    stored = session.exec(select(ApiKey).where(ApiKey.prefix == created.prefix)).one()
    assert stored.key_hash != created.key
    assert len(stored.key_hash) == 64


def test_admin_api_creates_lists_revokes(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as admin:
        created = admin.post("/v1/keys", json={"scopes": ["read"], "name": "dash"})
        assert created.status_code == 201
        new_key, prefix = created.json()["key"], created.json()["prefix"]
        assert new_key.startswith(prefix + "_")

        listed = admin.get("/v1/keys").json()
        entry = next(k for k in listed if k["prefix"] == prefix)
        assert entry["name"] == "dash"
        assert entry["scopes"] == ["read"]
        assert entry["active"]
        assert all("key" not in k and "key_hash" not in k for k in listed)

        with live_api.client(new_key) as reader:
            assert reader.get("/v1/decisions").status_code == 200
            assert admin.delete(f"/v1/keys/{prefix}").status_code == 200
            revoked = reader.get("/v1/decisions")
        assert revoked.status_code == 401
        assert "revoked" in revoked.json()["detail"]
        assert prefix not in {k["prefix"] for k in admin.get("/v1/keys").json()}
        everything = admin.get("/v1/keys", params={"include_inactive": True}).json()
        assert not next(k for k in everything if k["prefix"] == prefix)["active"]


def test_key_without_scopes_or_with_unknown_scope_is_refused(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as admin:
        assert admin.post("/v1/keys", json={"scopes": []}).status_code == 422
        bad = admin.post("/v1/keys", json={"scopes": ["superuser"]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][:2] == ["body", "scopes"]


def test_rotation_without_grace_revokes_the_old_key(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as admin:
        old = admin.post("/v1/keys", json={"scopes": ["read"], "name": "r"}).json()
        new = admin.post(f"/v1/keys/{old['prefix']}/rotate", json={}).json()
    assert new["rotated_from"] == old["prefix"]
    assert new["scopes"] == ["read"]
    assert new["name"] == "r"
    with live_api.client(old["key"]) as client:
        assert client.get("/v1/decisions").status_code == 401
    with live_api.client(new["key"]) as client:
        assert client.get("/v1/decisions").status_code == 200


def test_rotation_with_grace_keeps_both_keys_working(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as admin:
        old = admin.post("/v1/keys", json={"scopes": ["read"]}).json()
        new = admin.post(f"/v1/keys/{old['prefix']}/rotate", json={"grace_hours": 2}).json()
        listed = {k["prefix"]: k for k in admin.get("/v1/keys").json()}
    assert listed[old["prefix"]]["expires_at"] is not None
    for key in (old["key"], new["key"]):
        with live_api.client(key) as client:
            assert client.get("/v1/decisions").status_code == 200


def test_expired_key_is_refused(live_api: LiveApi, session: Session) -> None:
    created = auth_service.create_key(session=session, scopes=[Scope.READ])
    row = session.exec(select(ApiKey).where(ApiKey.prefix == created.prefix)).one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.add(row)
    session.commit()
    with live_api.client(created.key) as client:
        response = client.get("/v1/decisions")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


# --- hostile input on the admin and operate routes (issue 15 §7, §8) ----------------------

BODY_ROUTES = [
    (method, path)
    for method, _, required, path, body, _ in SCOPE_MATRIX
    if body is not None and required in (Scope.ADMIN, Scope.OPERATE)
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer sek_deadbeef_wrongsecret"])
def test_invalid_json_without_a_valid_key_is_a_401_not_a_422(
    live_api: LiveApi, method: str, path: str, authorization: str | None
) -> None:
    # The key is checked before the body is read, so nothing about the body leaks out.
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    with httpx.Client(base_url=live_api.url) as client:
        response = client.request(method, path, content=b'{"not json', headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_body_over_the_limit_is_refused_while_reading(live_api: LiveApi, keys: Keys) -> None:
    use_settings(live_api, api_max_body_bytes=1024)
    pool = {"router": "big", "tiers": {"cheap": [f"model-{i}" for i in range(200)]}}
    chunks = [b'{"router": "big", "tiers": {"cheap": ['] + [b'"m",'] * 400 + [b'"m"]}}']
    with live_api.client(keys.admin) as admin:
        declared = admin.put("/v1/pool", json=pool)
        # No Content-Length: the limit holds on the bytes as they arrive.
        streamed = admin.put(
            "/v1/pool", content=iter(chunks), headers={"Content-Type": "application/json"}
        )
        small = admin.put("/v1/pool", json={"router": "small", "tiers": {"cheap": ["m"]}})
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"
        assert response.json()["limit_bytes"] == 1024
    assert small.status_code == 200, small.text


def test_ingest_keys_keep_the_ingest_body_limit(live_api: LiveApi, keys: Keys) -> None:
    use_settings(live_api, api_max_body_bytes=1024, ingest_max_bytes=4096)
    batch = [decision(f"limit-{i}") for i in range(3)]  # ~2 KB: over the API limit only
    with live_api.client(keys.ingest) as client:
        assert client.post("/v1/decisions", json=batch).status_code == 202
        too_big = client.post("/v1/decisions", json=[decision(f"x-{i}") for i in range(10)])
    assert too_big.status_code == 413
    assert too_big.json()["limit_bytes"] == 4096


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/keys", "expires_in_days", "1e300"),
        ("/v1/keys", "expires_in_days", "Infinity"),
        ("/v1/keys", "expires_in_days", "NaN"),
        ("/v1/keys", "expires_in_days", "-1"),
        ("/v1/keys/{prefix}/rotate", "grace_hours", "1e300"),
        ("/v1/keys/{prefix}/rotate", "grace_hours", "Infinity"),
        ("/v1/keys/{prefix}/rotate", "grace_hours", "-1"),
    ],
)
def test_key_durations_are_bounded(
    live_api: LiveApi, keys: Keys, session: Session, path: str, field: str, value: str
) -> None:
    old = auth_service.create_key(session=session, scopes=[Scope.READ], name="bounded")
    body = f'{{"scopes": ["read"], "{field}": {value}}}'.encode()
    with live_api.client(keys.admin) as admin:
        response = admin.post(
            path.format(prefix=old.prefix),
            content=body,
            headers={"Content-Type": "application/json"},
        )
        listed = admin.get("/v1/keys", params={"include_inactive": True}).json()
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]
    # Nothing was created, and the key to rotate still works.
    assert sorted(k["name"] for k in listed) == sorted(
        ["bounded", *(f"test {scope}" for scope in Scope)]
    )
    assert next(k for k in listed if k["prefix"] == old.prefix)["active"]


def test_a_key_name_with_control_characters_is_refused(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as admin:
        response = admin.post("/v1/keys", json={"scopes": ["read"], "name": "a\u0000b"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


def test_rotation_that_fails_to_commit_leaves_no_new_key(
    engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = auth_service.create_key(session=session, scopes=[Scope.READ], name="rotated")
    commit = Session.commit

    def failing_commit(self: Session) -> None:
        # Fail the write that ends the old key, wherever it comes in the rotation.
        if any(isinstance(row, ApiKey) and row.prefix == old.prefix for row in self.dirty):
            raise RuntimeError("the database went away")
        commit(self)

    monkeypatch.setattr(Session, "commit", failing_commit)
    with pytest.raises(RuntimeError):
        auth_service.rotate_key(session=session, prefix=old.prefix)
    monkeypatch.undo()
    with Session(engine) as fresh:
        rows = fresh.exec(select(ApiKey).where(ApiKey.name == "rotated")).all()
    assert [(row.prefix, row.revoked_at) for row in rows] == [(old.prefix, None)]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(("text", "reason"), [("a\u0000b", "NUL"), ("s-\ud800", "lone surrogate")])
def test_unstorable_strings_in_admin_and_operate_bodies_are_a_422_naming_them(
    live_api: LiveApi, keys: Keys, method: str, path: str, text: str, reason: str
) -> None:
    # PostgreSQL cannot store either; the same answer on SQLite keeps the API one API.
    required, body = next((r, b) for m, _, r, p, b, _ in SCOPE_MATRIX if (m, p) == (method, path))
    assert isinstance(body, dict)
    with live_api.client(keys.for_scope(required)) as client:
        response = client.request(
            method,
            path,
            # ASCII JSON: a lone surrogate travels as its escape, as any JSON client sends it.
            content=json.dumps({**body, "note": {"deep": [text]}}).encode(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "note", "deep", 0]
    assert reason in error["msg"]


def test_a_surrogate_pair_is_text_not_a_lone_surrogate(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as admin:
        response = admin.post("/v1/keys", json={"scopes": ["read"], "name": "ok \U0001f600"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "ok \U0001f600"
