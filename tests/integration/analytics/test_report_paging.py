"""GET /v1/events, /v1/segments and /v1/calibration page with cursors when asked
(`paged=true`, {items, next_cursor} like every other list), filter by router, and keep
answering the bare array by default for the clients written against it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.events.models import EventKind
from shadoweval.events.service import record_event
from tests.conftest import Keys, LiveApi
from tests.integration.test_dashboard_pages import _seed, _seeded

START = datetime(2026, 11, 27, 9, tzinfo=UTC)


def _pages(client: httpx.Client, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of `path`, following next_cursor."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(50):
        query = {**params, "paged": "true", **({"cursor": cursor} if cursor else {})}
        answer = client.get(path, params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("pagination did not end")


def test_events_page_newest_first_by_router_and_the_array_stays(
    session: Session, live_api: LiveApi, keys: Keys
) -> None:
    # Seven model changes over two routers; pairs share a ts, so paging breaks ties by id.
    for i in range(7):
        record_event(
            session,
            kind=EventKind.MODEL_CHANGE,
            dedup_key=f"e{i}",
            ts=START + timedelta(minutes=i // 2),
            router="router-a" if i % 3 else "router-b",
            details={"model": f"m{i}"},
        )
    session.commit()
    with live_api.client(keys.read) as client:
        array = client.get("/v1/events").json()
        pages = _pages(client, "/v1/events", limit=3)
        mine = _pages(client, "/v1/events", router="router-a", limit=2)
        windowed = client.get(
            "/v1/events",
            params={"since": "2026-11-27T09:01:00Z", "until": "2026-11-27T09:03:00Z"},
        ).json()
        bad = client.get("/v1/events", params={"paged": "true", "cursor": "junk"})

    models = [e["details"]["model"] for e in array]
    # Newest first in (ts, id): m6 alone at 09:03, then m5 before m4 at 09:02, ...
    assert models == ["m6", "m5", "m4", "m3", "m2", "m1", "m0"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e["details"]["model"] for p in pages for e in p] == models
    assert [e["details"]["model"] for p in mine for e in p] == ["m5", "m4", "m2", "m1"]
    assert {e["router"] for p in mine for e in p} == {"router-a"}
    assert [e["details"]["model"] for e in windowed] == ["m5", "m4", "m3", "m2"]
    assert bad.status_code == 400
    assert bad.json()["loc"] == ["query", "cursor"]


@pytest.mark.usefixtures("live_api")
def test_segments_and_calibration_page_in_report_order(
    engine: Engine, base_settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    extra = []
    for name, request_id in (("shipping", "s1"), ("legal", "l1")):
        row = _seeded(request_id, "cheap", 0.3, cheap_q=0.2, strong_q=0.9)
        row["segment"] = {"topic": name, "language": "en"}
        extra.append(row)
    other = {**_seeded("o1", "cheap", 0.3, cheap_q=0.8, strong_q=0.7), "router": "other-router"}
    _seed(engine, base_settings, [*extra, other])

    with live_api.client(keys.read) as client:
        array = client.get("/v1/segments", params={"router": "support-router"}).json()
        pages = _pages(client, "/v1/segments", router="support-router", limit=1)
        everything = _pages(client, "/v1/segments")
        calibration_array = client.get("/v1/calibration", params={"router": "support-router"})
        calibration_pages = _pages(client, "/v1/calibration", router="support-router", limit=1)
        bad = client.get("/v1/segments", params={"paged": "true", "cursor": "junk"})

    def key(row: dict[str, Any]) -> tuple[str, str, str]:
        return row["router"], row["segment"], row["direction"]

    # Four rows (three segments forward, billing reverse), riskiest first, one per page.
    assert len(array) == 4
    assert [len(p) for p in pages] == [1, 1, 1, 1]
    assert [key(r) for p in pages for r in p] == [key(r) for r in array]
    assert {r["router"] for r in array} == {"support-router"}
    # Without a router and limit: one page of every router's rows (100 per page by default).
    assert len(everything) == 1
    assert {r["router"] for r in everything[0]} == {"support-router", "other-router"}
    assert calibration_array.status_code == 200
    assert [r["judge_key"] for r in calibration_array.json()] == [
        r["judge_key"] for p in calibration_pages for r in p
    ]
    assert calibration_pages[0][0]["n"] == 6
    assert bad.status_code == 400


def test_the_document_types_the_pages_and_the_economics_answer(
    live_api: LiveApi, keys: Keys
) -> None:
    with live_api.client(keys.read) as client:
        document = client.get("/openapi.json").json()

    def answer(path: str) -> dict[str, Any]:
        schema: dict[str, Any] = document["paths"][path]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        return schema

    for path, page in (
        ("/v1/events", "EventPage"),
        ("/v1/segments", "SegmentQualityPage"),
        ("/v1/calibration", "CalibrationReportPage"),
    ):
        shapes = answer(path)["anyOf"]
        assert {"$ref": f"#/components/schemas/{page}"} in shapes
        assert any(s.get("type") == "array" for s in shapes)  # the deprecated default
        names = {p["name"] for p in document["paths"][path]["get"]["parameters"]}
        assert {"paged", "cursor", "limit", "router"} <= names
    assert answer("/v1/economics") == {"$ref": "#/components/schemas/EconomicsReport"}
    economics = document["components"]["schemas"]["EconomicsReport"]["properties"]
    assert "savings_per_request_ci95_usd" in economics
    assert "break_even" in economics
