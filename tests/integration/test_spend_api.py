"""GET /v1/spend: paged like the other reports, filtered by router and segment."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import Engine

from shadoweval.config import Settings
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import Keys, LiveApi, decision
from tests.integration.pipeline.conftest import drain, ingest, pipeline_settings


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as server:
        yield server


@pytest.fixture
def spend_client(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, live_api: LiveApi, keys: Keys
) -> httpx.Client:
    """Judged pairs on three days: billing on each, code on the first and last."""
    fake.reset()
    settings = pipeline_settings(base_settings, fake)
    code = {"topic": "code"}
    ingest(
        engine,
        settings,
        [
            decision("b-1", ts="2026-11-25T10:00:00Z"),
            decision("c-1", ts="2026-11-25T11:00:00Z", segment=code),
            decision("b-2", ts="2026-11-26T10:00:00Z"),
            decision("b-3", ts="2026-11-27T10:00:00Z"),
            decision("c-3", ts="2026-11-27T11:00:00Z", segment=code),
        ],
    )
    drain(engine, settings)
    return live_api.client(keys.read)


def test_paged_spend_walks_the_days_the_bare_array_lists(spend_client: httpx.Client) -> None:
    bare = spend_client.get("/v1/spend").json()
    assert [d["day"] for d in bare] == ["2026-11-25", "2026-11-26", "2026-11-27"]
    pages, cursor = [], None
    while True:
        params: dict[str, object] = {"paged": True, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = spend_client.get("/v1/spend", params=params).json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 1]
    assert [day for page in pages for day in page] == bare
    refused = spend_client.get("/v1/spend", params={"paged": True, "cursor": "not-a-cursor"})
    assert refused.status_code == 400


def test_spend_of_one_segment(spend_client: httpx.Client) -> None:
    everyone = spend_client.get("/v1/spend", params={"paged": True}).json()["items"]
    code = spend_client.get("/v1/spend", params={"paged": True, "segment": "code"}).json()
    assert code["next_cursor"] is None
    assert [(d["day"], d["shadow_runs"], d["verdicts"]) for d in code["items"]] == [
        ("2026-11-25", 1, 1),
        ("2026-11-27", 1, 1),
    ]
    billing = spend_client.get(
        "/v1/spend", params={"segment": "billing", "router": "support-router"}
    ).json()
    assert [(d["shadow_runs"], d["verdicts"]) for d in billing] == [(1, 1)] * 3
    # The two segments split each day's spend between them.
    by_day = {d["day"]: d["total_usd"] for d in billing}
    for day in code["items"]:
        by_day[day["day"]] += day["total_usd"]
    assert by_day == pytest.approx({d["day"]: d["total_usd"] for d in everyone})
    assert all(d["total_usd"] > 0 for d in code["items"])


def test_the_document_types_both_answers(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.read) as client:
        operation = client.get("/openapi.json").json()["paths"]["/v1/spend"]["get"]
    shapes = operation["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/SpendPage"} in shapes
    assert any(shape.get("type") == "array" for shape in shapes)  # the deprecated default
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"paged", "cursor", "limit", "router", "segment", "since", "until"} <= names
