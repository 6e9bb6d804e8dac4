"""OTLP/HTTP JSON spans → decision log: routing spans only, gen_ai from child spans."""

from __future__ import annotations

import json
from typing import Any

from shadoweval.ingest.adapters.otlp import map_spans


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def export(*spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": list(spans)}]}]
    }


ROUTER_SPAN = {
    "traceId": "0af7651916cd43dd8448eb211c80319c",
    "spanId": "b7ad6b7169203331",
    "name": "route",
    "startTimeUnixNano": "1795824000000000000",
    "endTimeUnixNano": "1795824000850000000",
    "attributes": [
        attr("shadoweval.route.router", "support-router"),
        attr("shadoweval.route.tier", "cheap"),
        attr("shadoweval.route.score", 0.31),
        attr("shadoweval.route.threshold", 0.5),
        attr("shadoweval.route.segment.topic", "billing"),
        attr("shadoweval.route.feature.has_code", False),
        attr("deployment.environment", "prod"),
    ],
}
CHAT_SPAN = {
    "traceId": ROUTER_SPAN["traceId"],
    "spanId": "00f067aa0ba902b7",
    "parentSpanId": ROUTER_SPAN["spanId"],
    "name": "chat claude-haiku-4-5",
    "startTimeUnixNano": "1795824000010000000",
    "endTimeUnixNano": "1795824000840000000",
    "attributes": [
        attr("gen_ai.request.model", "claude-haiku-4-5"),
        attr("gen_ai.response.model", "claude-haiku-4-5-20251001"),
        attr("gen_ai.provider.name", "anthropic"),
        attr("gen_ai.usage.input_tokens", 412),
        attr("gen_ai.usage.output_tokens", 120),
        attr(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Why?"}]}]),
        ),
        attr(
            "gen_ai.output.messages",
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Because."}]}]),
        ),
    ],
}


def test_router_span_with_chat_child_becomes_one_decision() -> None:
    batch = map_spans(export(ROUTER_SPAN, CHAT_SPAN), default_router="otel")
    assert batch.not_routing == 1
    assert batch.rejected == []
    (decision,) = batch.decisions
    assert decision["request_id"] == f"{ROUTER_SPAN['traceId']}-{ROUTER_SPAN['spanId']}"
    assert decision["router"] == "support-router"
    assert (decision["tier"], decision["router_score"], decision["threshold"]) == (
        "cheap",
        0.31,
        0.5,
    )
    assert decision["chosen_model"] == "claude-haiku-4-5"
    assert decision["served_model"] == "claude-haiku-4-5-20251001"
    assert decision["segment"] == {"topic": "billing"}
    assert decision["features"] == {"has_code": False}
    assert decision["usage"] == {"input_tokens": 412, "output_tokens": 120}
    assert decision["request"] == {"messages": [{"role": "user", "content": "Why?"}]}
    assert decision["response"] == {"text": "Because."}
    assert decision["ts"] == "2026-11-28T00:00:00+00:00"
    assert abs(decision["latency_ms"] - 850.0) < 1e-6
    assert decision["otel"]["attributes"]["deployment.environment"] == "prod"
    assert decision["otel"]["attributes"]["gen_ai.provider.name"] == "anthropic"


def test_routing_span_without_a_model_is_rejected_with_a_reason() -> None:
    batch = map_spans(export(ROUTER_SPAN), default_router="otel")
    assert batch.decisions == []
    assert "gen_ai.request.model" in batch.rejected[0]


def test_ordinary_spans_are_ignored() -> None:
    batch = map_spans(export({**CHAT_SPAN, "parentSpanId": ""}), default_router="otel")
    assert (batch.decisions, batch.rejected, batch.not_routing) == ([], [], 1)
