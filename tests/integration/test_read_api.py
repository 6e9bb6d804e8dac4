"""GET /v1/decisions: filters, keyset pagination, one decision with its payload."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Keys, LiveApi, decision, use_settings


@pytest.fixture
def reader(live_api: LiveApi, keys: Keys) -> httpx.Client:
    """A read-scope client over 30 stored decisions of mixed routers, tiers and segments."""
    items = []
    for i in range(30):
        items.append(
            decision(
                f"d-{i:02d}",
                router="router-a" if i % 3 else "router-b",
                tier="cheap" if i % 2 else "strong",
                segment={"topic": ["billing", "code", "chat"][i % 3]},
                # Pairs share a ts, so paging must break ties by id.
                ts=f"2026-11-27T10:{i // 2:02d}:00Z",
            )
        )
    with live_api.client(keys.ingest) as client:
        assert client.post("/v1/decisions", json=items).status_code == 202
    return live_api.client(keys.read)


def collect(client: httpx.Client, **params: object) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/decisions", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_pages_cover_everything_once_in_ts_order(reader: httpx.Client) -> None:
    items = collect(reader, limit=7)
    assert len(items) == 30
    assert [i["request_id"] for i in items] == [f"d-{i:02d}" for i in range(30)]


def test_descending_order(reader: httpx.Client) -> None:
    items = collect(reader, limit=4, order="desc")
    assert [i["request_id"] for i in items] == [f"d-{i:02d}" for i in reversed(range(30))]


def test_last_page_has_no_cursor(reader: httpx.Client) -> None:
    body = reader.get("/v1/decisions", params={"limit": 30}).json()
    assert len(body["items"]) == 30
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"router": "router-b"}, [i for i in range(30) if i % 3 == 0]),
        ({"tier": "cheap"}, [i for i in range(30) if i % 2]),
        ({"segment": "code"}, [i for i in range(30) if i % 3 == 1]),
        ({"since": "2026-11-27T10:05:00Z"}, list(range(10, 30))),
        ({"until": "2026-11-27T10:05:00Z"}, list(range(10))),
        (
            {"since": "2026-11-27T10:02:00Z", "until": "2026-11-27T10:04:00Z", "tier": "strong"},
            [4, 6],
        ),
    ],
)
def test_filters(reader: httpx.Client, params: dict[str, str], expected: list[int]) -> None:
    items = collect(reader, limit=5, **params)
    assert [i["request_id"] for i in items] == [f"d-{i:02d}" for i in expected]


def test_sampled_filter_splits_the_stream(reader: httpx.Client) -> None:
    sampled = collect(reader, sampled="true")
    unsampled = collect(reader, sampled="false")
    assert all(i["sampled"] for i in sampled)
    assert not any(i["sampled"] for i in unsampled)
    assert len(sampled) + len(unsampled) == 30


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"cursor": "garbage!"}, 400),
        ({"since": "2026-11-27T10:00:00"}, 422),  # naive time: ambiguous
        ({"limit": 0}, 422),
        ({"limit": 1001}, 422),
        ({"order": "sideways"}, 422),
        ({"sampled": "maybe"}, 422),
    ],
)
def test_bad_query_parameters_are_4xx(
    reader: httpx.Client, params: dict[str, object], status: int
) -> None:
    response = reader.get("/v1/decisions", params=params)
    assert response.status_code == status
    assert response.json()["detail"]


def test_cursor_of_one_order_is_refused_for_the_other(reader: httpx.Client) -> None:
    cursor = reader.get("/v1/decisions", params={"limit": 2}).json()["next_cursor"]
    response = reader.get("/v1/decisions", params={"cursor": cursor, "order": "desc"})
    assert response.status_code == 400
    assert "order" in response.json()["detail"]


def test_one_decision_with_payload(live_api: LiveApi, keys: Keys) -> None:
    use_settings(live_api, store_payloads="all")
    with live_api.client(keys.ingest) as client:
        result = client.post("/v1/decisions", json=decision("detail")).json()["results"][0]
    with live_api.client(keys.read) as client:
        body = client.get(f"/v1/decisions/{result['id']}").json()
        missing = client.get("/v1/decisions/987654")
    assert body["request"] == {"messages": [{"role": "user", "content": "question detail"}]}
    assert body["response"] == {"text": "answer detail", "finish_reason": "stop"}
    assert body["usage"] == {"input_tokens": 12, "output_tokens": 30, "cache_read_tokens": None}
    assert body["payload_stored"] is True
    assert missing.status_code == 404
