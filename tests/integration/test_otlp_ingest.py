"""POST /v1/traces over the live API, on both databases."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.ingest.models import Decision
from tests.conftest import Keys, LiveApi
from tests.unit.test_otlp_adapter import CHAT_SPAN, ROUTER_SPAN, attr, export


def test_routing_spans_are_stored_and_bad_ones_reported(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    bad = {
        **ROUTER_SPAN,
        "spanId": "1111111111111111",
        "attributes": [attr("shadoweval.route.tier", "cheap")],
    }
    with live_api.client(keys.ingest) as client:
        response = client.post("/v1/traces", json=export(ROUTER_SPAN, CHAT_SPAN, bad))
        again = client.post("/v1/traces", json=export(ROUTER_SPAN, CHAT_SPAN))
        protobuf = client.post(
            "/v1/traces", content=b"\x0a\x00", headers={"Content-Type": "application/x-protobuf"}
        )
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == 1
    assert "gen_ai.request.model" in partial["errorMessage"]
    assert again.json() == {"partialSuccess": {}}  # a resend stores nothing twice
    assert protobuf.status_code == 415
    with Session(engine) as session:
        (stored,) = session.scalars(select(Decision)).all()
    assert (stored.router, stored.tier, stored.chosen_model) == (
        "support-router",
        "cheap",
        "claude-haiku-4-5",
    )
    assert stored.extra["otel"]["span_id"] == ROUTER_SPAN["spanId"]


def test_traces_need_the_ingest_scope(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.read) as client:
        assert client.post("/v1/traces", json=export()).status_code == 403
