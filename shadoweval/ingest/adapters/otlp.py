"""Pure mapping of OTLP/HTTP JSON spans onto the decision log (v1).

A span is a routing decision when it carries `shadoweval.route.tier`. The GenAI
semantic conventions have no routing attributes, so routing lives in the
`shadoweval.route.*` namespace; model, provider and token counts use the
standard `gen_ai.*` names, taken from the routing span or, when absent there,
from its direct child spans (the usual shape: a router span around a chat span).

Mapping (the README lists it too):
- request_id: `shadoweval.route.request_id`, else `<traceId>-<spanId>`;
- router, router_version, tier, router_score, threshold, score_semantics:
  `shadoweval.route.{router,router_version,tier,score,threshold,score_semantics}`;
- segment labels and features: `shadoweval.route.segment.<key>`, `….feature.<name>`;
- fallback, failover, escalated_from, session_id, cost_usd, router_cost_usd:
  `shadoweval.route.<same name>`;
- chosen and served model: `gen_ai.request.model`, `gen_ai.response.model`;
- usage: `gen_ai.usage.input_tokens`, `….output_tokens`, `….cache_read.input_tokens`;
- request and response (opt-in content): `gen_ai.input.messages`,
  `gen_ai.system_instructions`, `gen_ai.output.messages`;
- ts and latency: `startTimeUnixNano`, and `endTimeUnixNano` minus it.

Everything else on the routing span is kept under `extra.otel`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROUTE = "shadoweval.route."


@dataclass
class OtlpBatch:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    not_routing: int = 0  # spans without routing attributes (ordinary traces): ignored
    rejected: list[str] = field(default_factory=list)  # why a routing span could not map


def _value(value: Any) -> Any:
    """An OTLP AnyValue as a Python value; a malformed one is None (the attribute is kept
    empty, the span is not lost)."""
    if not isinstance(value, dict):
        return None
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:  # int64 travels as a string in OTLP JSON
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return None  # not an integer: the attribute is dropped, not the request
    if "arrayValue" in value:
        return [_value(v) for v in _values(value["arrayValue"])]
    if "kvlistValue" in value:
        return {
            kv["key"]: _value(kv.get("value"))
            for kv in _values(value["kvlistValue"])
            if isinstance(kv, dict) and isinstance(kv.get("key"), str)
        }
    return None


def _values(container: Any) -> list[Any]:
    """`{"values": [...]}` of an array or kvlist value; a bare list is taken as its values."""
    if isinstance(container, list):
        return container
    values = container.get("values") if isinstance(container, dict) else None
    return values if isinstance(values, list) else []


class OtlpShapeError(ValueError):
    """The body is JSON but not an ExportTraceServiceRequest."""


def _items(container: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpShapeError(f"`{key}` must be an array, got {type(value).__name__}")
    return [item for item in value if isinstance(item, dict)]


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    values = span.get("attributes")
    if not isinstance(values, list):
        return {}
    return {
        kv["key"]: _value(kv.get("value"))
        for kv in values
        if isinstance(kv, dict) and isinstance(kv.get("key"), str)
    }


class _OutOfRange(ValueError):
    pass


def _nanos_to_datetime(nanos: Any) -> datetime | None:
    """A span time; None when absent or not a number, _OutOfRange when no datetime holds it."""
    try:
        seconds = int(nanos) / 1e9
    except (TypeError, ValueError, OverflowError):
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as error:
        raise _OutOfRange(f"{nanos} nanoseconds is out of range") from error


def _json_or_none(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def _output_text(messages: Any) -> str | None:
    """Text of the first output message (GenAI `gen_ai.output.messages` shape)."""
    if not isinstance(messages, list) or not messages:
        return None
    parts = messages[0].get("parts") if isinstance(messages[0], dict) else None
    if isinstance(parts, list):
        texts = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(t for t in texts if isinstance(t, str)) or None
    content = messages[0].get("content") if isinstance(messages[0], dict) else None
    return content if isinstance(content, str) else None


def _input_messages(messages: Any) -> list[dict[str, Any]] | None:
    """GenAI input messages (`role` + `parts`) as chat messages (`role` + `content`)."""
    if not isinstance(messages, list):
        return None
    out = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        parts = message.get("parts")
        if isinstance(parts, list):
            text = "".join(
                p["content"]
                for p in parts
                if isinstance(p, dict)
                and p.get("type") == "text"
                and isinstance(p.get("content"), str)
            )
            out.append({"role": message.get("role", "user"), "content": text})
        elif "content" in message:
            out.append({"role": message.get("role", "user"), "content": message["content"]})
    return out or None


def map_spans(body: dict[str, Any], *, default_router: str) -> OtlpBatch:
    """The routing decisions of an ExportTraceServiceRequest (JSON encoding)."""
    batch = OtlpBatch()
    spans: list[dict[str, Any]] = []
    for resource_spans in _items(body, "resourceSpans"):
        for scope_spans in _items(resource_spans, "scopeSpans"):
            spans.extend(_items(scope_spans, "spans"))
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parentSpanId")
        if isinstance(parent, str) and parent:
            children.setdefault(parent, []).append(span)
    for span in spans:
        try:
            attrs = attributes(span)
            if f"{ROUTE}tier" not in attrs:
                batch.not_routing += 1
                continue
            for child in children.get(str(span.get("spanId", "")), []):
                for key, value in attributes(child).items():
                    if key.startswith("gen_ai.") and key not in attrs:
                        attrs[key] = value
            decision = _decision(span, attrs, default_router)
        except _OutOfRange as error:
            decision = f"span {span.get('spanId', '')}: {error}"
        except (RecursionError, ValueError, TypeError, AttributeError) as error:
            # A shape the readers above did not foresee costs its span, not the request.
            reason = "nests too deeply" if isinstance(error, RecursionError) else error
            decision = f"span {span.get('spanId', '')}: cannot be read: {reason}"
        if isinstance(decision, str):
            batch.rejected.append(decision)
        else:
            batch.decisions.append(decision)
    return batch


def _decision(
    span: dict[str, Any], attrs: dict[str, Any], default_router: str
) -> dict[str, Any] | str:
    route = {k[len(ROUTE) :]: v for k, v in attrs.items() if k.startswith(ROUTE)}
    chosen = route.get("chosen_model") or attrs.get("gen_ai.request.model")
    span_id = span.get("spanId", "")
    if not chosen:
        return f"span {span_id}: no gen_ai.request.model (or shadoweval.route.chosen_model)"
    start = _nanos_to_datetime(span.get("startTimeUnixNano"))
    end = _nanos_to_datetime(span.get("endTimeUnixNano"))
    decision: dict[str, Any] = {
        "request_id": str(route.get("request_id") or f"{span.get('traceId', '')}-{span_id}"),
        "router": str(route.get("router") or default_router),
        "tier": route["tier"],
        "chosen_model": chosen,
        "segment": {
            k[len("segment.") :]: str(v) for k, v in route.items() if k.startswith("segment.")
        },
        "features": {k[len("feature.") :]: v for k, v in route.items() if k.startswith("feature.")},
    }
    optional = {
        "router_version": route.get("router_version"),
        "router_score": route.get("score"),
        "threshold": route.get("threshold"),
        "score_semantics": route.get("score_semantics"),
        "fallback": route.get("fallback"),
        "failover": route.get("failover"),
        "escalated_from": route.get("escalated_from"),
        "session_id": route.get("session_id") or attrs.get("gen_ai.conversation.id"),
        "cost_usd": route.get("cost_usd"),
        "router_cost_usd": route.get("router_cost_usd"),
        "served_model": attrs.get("gen_ai.response.model"),
        "ts": start.isoformat() if start else None,
        "latency_ms": (end - start).total_seconds() * 1000 if start and end else None,
    }
    decision.update({k: v for k, v in optional.items() if v is not None})
    usage = {
        "input_tokens": attrs.get("gen_ai.usage.input_tokens"),
        "output_tokens": attrs.get("gen_ai.usage.output_tokens"),
        "cache_read_tokens": attrs.get("gen_ai.usage.cache_read.input_tokens"),
    }
    if any(v is not None for v in usage.values()):
        decision["usage"] = {k: v for k, v in usage.items() if v is not None}
    messages = _input_messages(_json_or_none(attrs.get("gen_ai.input.messages")))
    if messages:
        request: dict[str, Any] = {"messages": messages}
        system = _json_or_none(attrs.get("gen_ai.system_instructions"))
        if isinstance(system, list):
            system = "".join(
                p["content"]
                for p in system
                if isinstance(p, dict) and isinstance(p.get("content"), str)
            )
        if isinstance(system, str) and system:
            request["system"] = system
        decision["request"] = request
    text = _output_text(_json_or_none(attrs.get("gen_ai.output.messages")))
    if text is not None:
        decision["response"] = {"text": text}
    known = {f"{ROUTE}{k}" for k in route} | {
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
    }
    decision["otel"] = {
        "trace_id": span.get("traceId"),
        "span_id": span_id,
        "attributes": {k: v for k, v in attrs.items() if k not in known},
    }
    return decision
