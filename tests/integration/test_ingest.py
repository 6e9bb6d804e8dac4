"""POST /v1/decisions: the decision-log (v1) contract, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.sampling import policy
from tests.conftest import Keys, LiveApi, decision, use_settings


@pytest.fixture
def client(live_api: LiveApi, keys: Keys) -> httpx.Client:
    return live_api.client(keys.ingest)


def count_decisions(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Decision)) or 0)


def stored(engine: Engine, request_id: str, router: str = "support-router") -> Decision:
    with Session(engine) as session:
        return session.scalars(
            select(Decision).where(Decision.request_id == request_id, Decision.router == router)  # type: ignore[arg-type]
        ).one()


def ndjson(items: list[dict[str, object]]) -> str:
    return "\n".join(json.dumps(item) for item in items) + "\n"


def test_single_decision_is_stored_with_defaults_and_extras(
    client: httpx.Client, engine: Engine
) -> None:
    item = decision("one", served_model=None, custom_field={"nested": [1, 2]}, team="a")
    item.pop("served_model")
    item["usage"] = {"input_tokens": 5, "output_tokens": 7, "reasoning_tokens": 3}

    response = client.post("/v1/decisions", json=item)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["stored"] == 1
    assert body["duplicates"] == 0
    assert body["invalid"] == 0
    assert body["results"][0]["status"] == "stored"
    row = stored(engine, "one")
    assert body["results"][0]["id"] == row.id
    assert row.served_model == "claude-haiku-4-5"  # defaults to chosen_model
    assert row.ts == datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert row.segment_value == "billing"
    assert row.input_tokens == 5
    assert row.output_tokens == 7
    # Unknown fields, top-level and inside usage, are kept, never dropped.
    assert row.extra == {
        "custom_field": {"nested": [1, 2]},
        "team": "a",
        "usage": {"reasoning_tokens": 3},
    }


def test_ts_defaults_to_receipt_time(client: httpx.Client, engine: Engine) -> None:
    item = decision("no-ts")
    item.pop("ts")
    before = datetime.now(UTC)
    assert client.post("/v1/decisions", json=item).status_code == 202
    row = stored(engine, "no-ts")
    assert before <= row.ts <= datetime.now(UTC)
    assert row.ts == row.received_at


def test_ts_with_offset_is_normalised_to_utc(client: httpx.Client, engine: Engine) -> None:
    item = decision("offset", ts="2026-11-27T14:30:00+02:00")
    assert client.post("/v1/decisions", json=item).status_code == 202
    assert stored(engine, "offset").ts == datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


def test_array_answers_per_item_in_order(client: httpx.Client, engine: Engine) -> None:
    items = [decision(f"a-{i}") for i in range(5)]
    response = client.post("/v1/decisions", json=items)
    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["request_id"] for r in results] == [f"a-{i}" for i in range(5)]
    assert count_decisions(engine) == 5


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/json"])
def test_ndjson_is_accepted_under_either_content_type(
    client: httpx.Client, engine: Engine, content_type: str
) -> None:
    body = ndjson([decision("n-1"), decision("n-2"), decision("n-3")])
    response = client.post("/v1/decisions", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 202, response.text
    assert response.json()["stored"] == 3
    assert count_decisions(engine) == 3


def test_ndjson_line_that_is_not_json_is_an_invalid_item(
    client: httpx.Client, engine: Engine
) -> None:
    body = json.dumps(decision("ok-1")) + "\n{broken\n" + json.dumps(decision("ok-2")) + "\n"
    response = client.post(
        "/v1/decisions", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(e["index"], e["type"]) for e in detail] == [(1, "json_invalid")]
    assert "line 2" in detail[0]["msg"]
    assert count_decisions(engine) == 2


def test_resend_is_idempotent(client: httpx.Client, engine: Engine) -> None:
    items = [decision(f"i-{i}") for i in range(3)]
    assert client.post("/v1/decisions", json=items).json()["stored"] == 3

    again = client.post("/v1/decisions", json=[*items, decision("i-new")])

    assert again.status_code == 202
    statuses = [r["status"] for r in again.json()["results"]]
    assert statuses == ["duplicate", "duplicate", "duplicate", "stored"]
    assert count_decisions(engine) == 4


def test_same_request_id_under_another_router_is_a_different_decision(
    client: httpx.Client, engine: Engine
) -> None:
    items = [decision("same"), decision("same", router="other-router")]
    assert client.post("/v1/decisions", json=items).json()["stored"] == 2
    assert count_decisions(engine) == 2


def test_repeat_inside_one_batch_is_a_duplicate(client: httpx.Client, engine: Engine) -> None:
    response = client.post("/v1/decisions", json=[decision("x"), decision("x")])
    assert [r["status"] for r in response.json()["results"]] == ["stored", "duplicate"]
    assert count_decisions(engine) == 1


def test_invalid_items_are_listed_and_valid_ones_still_stored(
    client: httpx.Client, engine: Engine
) -> None:
    items: list[object] = [
        decision("good-0"),
        {"router": "support-router", "tier": "cheap", "chosen_model": "m"},  # no request_id
        decision("good-2"),
        decision("bad-3", router_score=1.7, tier="has space"),
        "not an object",
        decision("bad-5", segment={"topic": 3}),
        decision("good-6"),
    ]
    response = client.post("/v1/decisions", json=items)

    assert response.status_code == 422
    body = response.json()
    assert (body["stored"], body["invalid"]) == (3, 4)
    errors = {(e["index"], tuple(e["loc"])) for e in body["detail"]}
    assert errors == {
        (1, ("request_id",)),
        (3, ("router_score",)),
        (3, ("tier",)),
        (4, ()),
        (5, ("segment", "topic")),
    }
    assert all(e["msg"] for e in body["detail"])
    assert [r["status"] for r in body["results"]] == [
        "stored",
        "invalid",
        "stored",
        "invalid",
        "invalid",
        "invalid",
        "stored",
    ]
    assert body["results"][3]["request_id"] == "bad-3"
    assert count_decisions(engine) == 3

    # Resending the whole batch is safe: nothing is stored twice.
    again = client.post("/v1/decisions", json=items).json()
    assert (again["stored"], again["duplicates"], again["invalid"]) == (0, 3, 4)
    assert count_decisions(engine) == 3


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"ts": "2026-11-27T12:00:00"}, ["ts"]),  # RFC 3339 needs an offset
        ({"ts": "yesterday"}, ["ts"]),
        ({"request_id": "x" * 201}, ["request_id"]),
        ({"request_id": ""}, ["request_id"]),
        ({"tier": ""}, ["tier"]),
        ({"cost_usd": -1}, ["cost_usd"]),
        ({"latency_ms": "fast"}, ["latency_ms"]),
        ({"router_score": -0.1}, ["router_score"]),
        ({"request": {"messages": []}}, ["request", "messages"]),
        ({"request": {"messages": [{"content": "hi"}]}}, ["request", "messages", 0, "role"]),
        ({"usage": {"input_tokens": -3}}, ["usage", "input_tokens"]),
        ({"candidates": [{"tier": "cheap"}]}, ["candidates", 0, "model"]),
        ({"features": {"n": [1, 2]}}, ["features", "n"]),
        ({"failover": "perhaps"}, ["failover"]),
    ],
)
def test_field_errors_name_the_field(
    client: httpx.Client, engine: Engine, fields: dict[str, object], loc: list[object]
) -> None:
    item = decision("f")
    item.update(fields)
    response = client.post("/v1/decisions", json=item)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc for e in detail), detail
    assert all(e["index"] == 0 for e in detail)
    assert count_decisions(engine) == 0


def test_nan_cost_is_rejected(client: httpx.Client) -> None:
    body = json.dumps(decision("nan")).replace('"cost_usd": 0.0001', '"cost_usd": NaN')
    response = client.post(
        "/v1/decisions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["cost_usd"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"", "application/json", 400, "empty_body"),
        (b"   \n ", "application/x-ndjson", 400, "empty_body"),
        (b"[]", "application/json", 400, "empty_body"),
        (b"{not json", "application/json", 400, "malformed_body"),
        (b"42", "application/json", 400, "malformed_body"),
        (b"\xff\xfe\x00garbage", "application/json", 400, "malformed_body"),
        (b'{"request_id": "x"}', "text/plain", 415, "unsupported_media_type"),
        (b"request_id=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_unreadable_bodies_get_a_clear_4xx(
    live_api: LiveApi,
    keys: Keys,
    engine: Engine,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    with live_api.client(keys.ingest) as client:
        response = client.post(
            "/v1/decisions", content=body, headers={"Content-Type": content_type}
        )
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["detail"]
    assert count_decisions(engine) == 0


def test_missing_content_type_is_415(live_api: LiveApi, keys: Keys) -> None:
    request = httpx.Request(
        "POST",
        f"{live_api.url}/v1/decisions",
        content=b"{}",
        headers={"Authorization": f"Bearer {keys.ingest}"},
    )
    with httpx.Client() as client:
        response = client.send(request)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_more_than_the_item_limit_is_413_naming_it(client: httpx.Client, engine: Engine) -> None:
    items = [
        {"request_id": f"x{i}", "router": "r", "tier": "cheap", "chosen_model": "m"}
        for i in range(1001)
    ]
    response = client.post("/v1/decisions", json=items)
    assert response.status_code == 413
    assert "1000 decisions" in response.json()["detail"]
    assert response.json()["limit_items"] == 1000
    assert count_decisions(engine) == 0


def test_exactly_the_item_limit_is_accepted(client: httpx.Client, engine: Engine) -> None:
    items = [
        {"request_id": f"x{i}", "router": "r", "tier": "cheap", "chosen_model": "m"}
        for i in range(1000)
    ]
    response = client.post("/v1/decisions", json=items)
    assert response.status_code == 202
    assert response.json()["stored"] == 1000
    assert count_decisions(engine) == 1000


def test_body_over_the_byte_limit_is_413_naming_it(client: httpx.Client, engine: Engine) -> None:
    item = decision("big", request={"messages": [{"role": "user", "content": "x" * 5_300_000}]})
    response = client.post("/v1/decisions", json=item)
    assert response.status_code == 413
    assert str(5 * 1024 * 1024) in response.json()["detail"]
    assert count_decisions(engine) == 0


def test_chunked_body_over_the_limit_is_413(client: httpx.Client, engine: Engine) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"request_id": "c", "router": "r", "tier": "cheap", "chosen_model": "m", "pad": "'
        for _ in range(60):
            yield b"y" * 100_000
        yield b'"}'

    response = client.post(
        "/v1/decisions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert count_decisions(engine) == 0


def test_gzip_bodies_are_accepted(client: httpx.Client, engine: Engine) -> None:
    body = gzip.compress(json.dumps([decision("g-1"), decision("g-2")]).encode())
    response = client.post(
        "/v1/decisions",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 202, response.text
    assert count_decisions(engine) == 2


def test_gzip_bomb_is_413_and_bad_gzip_is_400(client: httpx.Client) -> None:
    bomb = gzip.compress(b"[" + b" " * (6 * 1024 * 1024) + b"]")
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert client.post("/v1/decisions", content=bomb, headers=headers).status_code == 413
    assert client.post("/v1/decisions", content=b"not gzip", headers=headers).status_code == 400
    headers["Content-Encoding"] = "br"
    assert client.post("/v1/decisions", content=b"{}", headers=headers).status_code == 415


def test_answer_comes_after_commit(client: httpx.Client, engine: Engine) -> None:
    # A separate connection sees every row the moment the 202 arrives.
    response = client.post("/v1/decisions", json=[decision(f"c-{i}") for i in range(20)])
    assert response.status_code == 202
    assert count_decisions(engine) == 20


def test_sampling_is_the_deterministic_hash_against_pi(
    client: httpx.Client, engine: Engine
) -> None:
    items = [decision(f"s-{i}") for i in range(200)] + [
        decision(f"t-{i}", tier="strong", chosen_model="claude-sonnet-4-5") for i in range(200)
    ]
    results = client.post("/v1/decisions", json=items).json()["results"]
    for item, result in zip(items, results, strict=True):
        pi = 0.2 if item["tier"] == "cheap" else 0.05
        assert result["inclusion_probability"] == pi
        assert result["sampled"] == policy.is_sampled(
            str(item["router"]), str(item["request_id"]), pi
        )
    row = stored(engine, "s-0")
    assert row.inclusion_probability == 0.2
    assert row.sampled == policy.is_sampled("support-router", "s-0", 0.2)


@pytest.mark.parametrize(
    ("store_payloads", "expect"),
    [("sampled", "sampled_only"), ("all", "every"), ("none", "nothing")],
)
def test_payloads_are_kept_per_setting(
    live_api: LiveApi,
    keys: Keys,
    engine: Engine,
    store_payloads: str,
    expect: str,
) -> None:
    use_settings(live_api, store_payloads=store_payloads)
    items = [decision(f"p-{i}") for i in range(60)]
    with live_api.client(keys.ingest) as client:
        results = client.post("/v1/decisions", json=items).json()["results"]
    sampled_ids = {r["id"] for r in results if r["sampled"]}
    assert 0 < len(sampled_ids) < 60  # π = 0.2 over 60 fixed ids

    with Session(engine) as session:
        payload_ids = set(session.scalars(select(DecisionPayload.decision_id)))
        flagged = set(session.scalars(select(Decision.id).where(Decision.payload_stored)))  # type: ignore[arg-type]
        payload = session.get(DecisionPayload, min(sampled_ids))
    expected = {"sampled_only": sampled_ids, "every": {r["id"] for r in results}, "nothing": set()}
    assert payload_ids == expected[expect]
    assert flagged == payload_ids
    if expect != "nothing":
        assert payload is not None
        assert payload.request is not None
        assert payload.request["messages"][0]["content"].startswith("question p-")
        assert payload.response == {"text": payload.response["text"], "finish_reason": "stop"}


def test_concurrent_resends_store_each_decision_once(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    batch = [decision(f"cc-{i}") for i in range(50)]
    outcomes: list[dict[str, int]] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def resend() -> None:
        with live_api.client(keys.ingest) as client:
            start.wait()
            for _ in range(3):
                response = client.post("/v1/decisions", json=batch)
                with lock:
                    if response.status_code != 202:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    else:
                        body = response.json()
                        outcomes.append({"stored": body["stored"], "dup": body["duplicates"]})

    threads = [threading.Thread(target=resend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sum(o["stored"] for o in outcomes) == 50
    assert sum(o["dup"] for o in outcomes) == 50 * 8 * 3 - 50
    assert count_decisions(engine) == 50
