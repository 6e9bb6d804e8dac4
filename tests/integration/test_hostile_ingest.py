"""Hostile input on every ingest write route, on both databases: never a 5xx, never a lost item.

The regression corpus of issue 15 §1–6: NUL characters, lone surrogates, NaN and ±Infinity,
integers and times out of range, deep nesting and malformed OTLP shapes, each generated
into every field where it can go (storable.py states the rule). Each case posts a mixed
batch — valid items around one hostile item — and requires: an answer below 500; the
valid items stored and readable back; the hostile item's entry naming its index and
field path. Bodies are written as JSON text by hand where Python's encoder would refuse
them (lone surrogates, 1e400).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.feedback.models import Feedback
from shadoweval.ingest.models import Decision
from shadoweval.ingest.storable import MAX_ITEM_DEPTH, printable
from tests.conftest import Keys, LiveApi, decision, use_settings
from tests.unit.test_litellm_adapter import GROUP_TIERS, by_scenario, captured
from tests.unit.test_otlp_adapter import ROUTER_SPAN, attr, export

NUL, SURROGATE = "a\u0000b", "s-\ud800"
# Written into the JSON text in place of their quoted placeholders.
RAW_NUMBERS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity", "1e400": "1e400"}


def to_json(value: Any) -> bytes:
    """JSON text of `value`, lone surrogates escaped, raw numbers put in place."""
    text = json.dumps(value)  # ensure_ascii: a lone surrogate becomes \\ud800
    for placeholder, raw in RAW_NUMBERS.items():
        text = text.replace(json.dumps(f"@{placeholder}@"), raw)
    return text.encode()


def raw(number: str) -> str:
    return f"@{number}@"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"x": [value]}
    return value


def nested_kvlist(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


@dataclass(frozen=True)
class Case:
    name: str
    field: tuple[str | int, ...]  # where the hostile value goes
    value: Any


# --- the generators --------------------------------------------------------------------------

STRING_FIELDS: list[tuple[str | int, ...]] = [
    ("request_id",),
    ("router",),
    ("router_version",),
    ("tier",),
    ("chosen_model",),
    ("served_model",),
    ("score_semantics",),
    ("session_id",),
    ("segment", "topic"),
    ("features", "lang"),
    ("note",),  # an unknown field, kept in `extra`
    ("labels", "deep", 0),  # inside an unknown field
    ("candidates", 0, "model"),
    ("request", "messages", 0, "content"),
    ("request", "system"),
    ("request", "params", "stop"),
    ("response", "text"),
]
NUMBER_FIELDS: list[tuple[str | int, ...]] = [
    ("router_score",),
    ("threshold",),
    ("cost_usd",),
    ("latency_ms",),
    ("features", "score"),
    ("note",),
    ("labels", "deep", 0),
    ("request", "params", "temperature"),
    ("usage", "input_tokens"),
]


def decision_cases() -> list[Case]:
    cases = [Case(f"nul@{'.'.join(map(str, f))}", f, NUL) for f in STRING_FIELDS]
    cases += [Case(f"surrogate@{'.'.join(map(str, f))}", f, SURROGATE) for f in STRING_FIELDS]
    cases += [Case("nul in a field name", ("features", "k\u0000"), 1)]
    cases += [Case("surrogate in a field name", ("segment", "\ud800"), "x")]
    cases += [
        Case(f"{number}@{'.'.join(map(str, f))}", f, raw(number))
        for number in RAW_NUMBERS
        for f in NUMBER_FIELDS
    ]
    # Integer columns have their bounds; anywhere else a number must fit a double.
    cases += [
        Case(f"overflow@{'.'.join(map(str, f))}", f, 10**30)
        for f in [("usage", "input_tokens"), ("usage", "output_tokens"), ("router_score",)]
    ]
    cases += [Case(f"10**400@{'.'.join(map(str, f))}", f, 10**400) for f in NUMBER_FIELDS]
    cases += [
        Case(f"ts {ts}", ("ts",), ts)
        for ts in [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59",
            10**20,
            -(10**15),
            raw("NaN"),
        ]
    ]
    cases += [
        Case("deep unknown field", ("note",), nested(MAX_ITEM_DEPTH + 5)),
        Case("very deep unknown field", ("note",), nested(400)),
        Case("deep payload params", ("request", "params", "tool"), nested(MAX_ITEM_DEPTH)),
    ]
    return cases


def with_value(item: dict[str, Any], field: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(item)
    out.setdefault("candidates", [{"model": "claude-haiku-4-5"}])
    out.setdefault("labels", {"deep": ["x"]})
    out["request"].setdefault("params", {})
    target: Any = out
    for step in field[:-1]:
        target = target.setdefault(step, {}) if isinstance(step, str) else target[step]
    target[field[-1]] = value
    return out


# --- fixtures and checks -----------------------------------------------------------------------


@pytest.fixture
def client(live_api: LiveApi, keys: Keys) -> Iterator[httpx.Client]:
    use_settings(live_api, litellm_group_tiers=GROUP_TIERS)
    with live_api.client(keys.ingest) as ingest:
        ingest.headers["Content-Type"] = "application/json"
        yield ingest


def stored_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return {d.request_id for d in session.scalars(select(Decision))}


def readable(live_api: LiveApi, keys: Keys) -> list[str]:
    """Every stored decision read back through the API (what a stored NaN or NUL breaks)."""
    ids: list[str] = []
    with live_api.client(keys.read) as reader:
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = reader.get("/v1/decisions", params=params)
            assert page.status_code == 200, page.text[:300]
            ids += [item["request_id"] for item in page.json()["items"]]
            for item in page.json()["items"][:3]:
                assert reader.get(f"/v1/decisions/{item['id']}").status_code == 200
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return ids


def expect_item_error(response: httpx.Response, index: int, case: str) -> dict[str, Any]:
    assert response.status_code < 500, f"{case}: {response.status_code} {response.text[:300]}"
    assert response.status_code == 422, f"{case}: {response.status_code} {response.text[:300]}"
    body = response.json()
    errors = [e for e in body["detail"] if e["index"] == index]
    assert errors, f"{case}: no error for item {index}: {body['detail']}"
    assert {e["index"] for e in body["detail"]} == {index}, f"{case}: {body['detail']}"
    first: dict[str, Any] = errors[0]
    return first


# --- /v1/decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
def test_a_hostile_decision_is_its_own_422_and_its_batch_is_stored(
    client: httpx.Client, live_api: LiveApi, keys: Keys, engine: Engine, media_type: str
) -> None:
    cases = decision_cases()
    expected: set[str] = set()
    for number, case in enumerate(cases):
        good = [decision(f"ok-{number}-a"), decision(f"ok-{number}-b")]
        bad = with_value(decision(f"bad-{number}"), case.field, case.value)
        items = [good[0], bad, good[1]]
        if media_type == "application/json":
            body = to_json(items)
        else:
            body = b"\n".join(to_json(item) for item in items)
        response = client.post("/v1/decisions", content=body, headers={"Content-Type": media_type})
        error = expect_item_error(response, 1, case.name)
        # The field path names the field (the depth cases: and where the limit was passed).
        shown = [printable(part) for part in case.field]
        if "field name" in case.name:  # pydantic shows an unreadable name its own way
            shown = shown[:-1]
        assert error["loc"][: len(shown)] == shown, f"{case.name}: {error}"
        if case.name.startswith("ts "):
            assert error["loc"] == ["ts"], f"{case.name}: {error}"
        assert response.json()["stored"] == 2, f"{case.name}: {response.text[:300]}"
        expected |= {f"ok-{number}-a", f"ok-{number}-b"}
    assert stored_ids(engine) == expected
    assert sorted(readable(live_api, keys)) == sorted(expected)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"request_id":"deep","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'[{"request_id":"x","n":' + b"9" * 5000 + b"}]",
    ],
    ids=["deep array", "deep object", "integer beyond Python's digit limit"],
)
def test_an_unreadable_body_is_a_clear_400(client: httpx.Client, body: bytes) -> None:
    response = client.post("/v1/decisions", content=body)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["code"] == "malformed_body"
    if b"[" * 1000 in body:
        assert f"at most {MAX_ITEM_DEPTH} levels" in response.json()["detail"]


def test_deep_ndjson_lines_cost_only_themselves(client: httpx.Client, engine: Engine) -> None:
    deep = b'{"request_id":"deep","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    body = b"\n".join([to_json(decision("nd-1")), deep, to_json(decision("nd-2"))])
    response = client.post(
        "/v1/decisions", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    expect_item_error(response, 1, "deep ndjson line")
    assert stored_ids(engine) == {"nd-1", "nd-2"}


@pytest.mark.parametrize(
    "malformed",
    [b'{"request_id": "half', b"]" * 1000],
    ids=["odd quote", "surplus closing brackets"],
)
def test_a_malformed_ndjson_line_hides_no_deep_decision(
    client: httpx.Client, engine: Engine, malformed: bytes
) -> None:
    # Before: the line's odd quote or closers cancelled the next line's nesting in the
    # body check, so the deep decision skipped the walk and was stored.
    deep = with_value(decision("nd-deep"), ("note",), nested(MAX_ITEM_DEPTH + 5))
    body = b"\n".join([to_json(decision("nd-ok")), malformed, to_json(deep)])
    response = client.post(
        "/v1/decisions", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 422, response.text[:300]
    kinds = {e["index"]: e["type"] for e in response.json()["detail"]}
    assert kinds == {1: "json_invalid", 2: "too_deep"}
    assert stored_ids(engine) == {"nd-ok"}


# --- LiteLLM ---------------------------------------------------------------------------------


def litellm_record(call_id: str) -> dict[str, Any]:
    records = captured()
    record = copy.deepcopy(records[by_scenario(records)["cheap"]])
    record["litellm_call_id"] = call_id
    record["trace_id"] = f"trace-{call_id}"
    return record


LITELLM_CASES: list[tuple[str, tuple[str | int, ...], Any]] = [
    ("nul in the call id", ("litellm_call_id",), NUL),
    ("surrogate in the call id", ("litellm_call_id",), SURROGATE),
    ("nul in the model", ("model",), NUL),
    ("nul in the end user", ("end_user",), NUL),
    ("nul in a message", ("messages", 0, "content"), NUL),
    ("surrogate in a message", ("messages", 0, "content"), SURROGATE),
    ("nul in metadata", ("metadata", "user_api_key_alias"), NUL),
    ("NaN in metadata", ("metadata", "user_api_key_spend"), raw("NaN")),
    ("Infinity cost", ("response_cost",), raw("Infinity")),
    ("1e400 cost", ("response_cost",), raw("1e400")),
    ("overflowing tokens", ("prompt_tokens",), 10**30),
    ("overflowing total tokens", ("total_tokens",), 10**30),
    ("integer beyond a double", ("metadata", "user_api_key_spend"), 10**400),
    ("far-future start", ("startTime",), 10**20),
    ("deep metadata", ("metadata", "requester_metadata"), nested(MAX_ITEM_DEPTH + 5)),
    ("very deep metadata", ("metadata", "requester_metadata"), nested(450)),
]


def test_hostile_litellm_records_cost_only_themselves(
    client: httpx.Client, live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    expected: set[str] = set()
    for number, (name, field, value) in enumerate(LITELLM_CASES):
        bad = litellm_record(f"bad-{number}")
        target: Any = bad
        for step in field[:-1]:
            target = target[step]
        target[field[-1]] = value
        records = [litellm_record(f"ok-{number}-a"), bad, litellm_record(f"ok-{number}-b")]
        response = client.post("/v1/integrations/litellm", content=to_json(records))
        assert response.status_code < 500, f"{name}: {response.text[:300]}"
        assert response.status_code == 202, f"{name}: {response.text[:300]}"
        body = response.json()
        assert [r["status"] for r in body["results"]][::2] == ["stored", "stored"], name
        # The hostile record is refused with its index, or stored with the value left out.
        if body["results"][1]["status"] == "invalid":
            assert {e["index"] for e in body["detail"]} == {1}, f"{name}: {body['detail']}"
        else:
            assert body["results"][1]["status"] == "stored", f"{name}: {body}"
            expected.add(f"bad-{number}")
        expected |= {f"ok-{number}-a", f"ok-{number}-b"}
    assert stored_ids(engine) == expected
    assert sorted(readable(live_api, keys)) == sorted(expected)


# --- OTLP ------------------------------------------------------------------------------------


def span(span_id: str, *extra: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(ROUTER_SPAN)
    out["spanId"] = span_id
    out["attributes"] = [
        *out["attributes"],
        attr("gen_ai.request.model", "claude-haiku-4-5"),
        attr("shadoweval.route.request_id", f"otel-{span_id}"),
        *extra,
    ]
    out.update(fields)
    return out


OTLP_CASES: list[tuple[str, dict[str, Any]]] = [
    ("26-digit start time", span("bad", startTimeUnixNano="9" * 26)),
    ("26-digit end time", span("bad", endTimeUnixNano="9" * 26)),
    ("arrayValue as a list", span("bad", {"key": "a", "value": {"arrayValue": [{"intValue": 1}]}})),
    (
        "kvlist entries without key",
        span("bad", {"key": "kv", "value": {"kvlistValue": {"values": [{"value": {}}, 3]}}}),
    ),
    ("attribute without key", span("bad", {"value": {"stringValue": "x"}})),
    ("attribute value not an object", span("bad", {"key": "v", "value": [1, 2]})),
    (
        "non-string GenAI content",
        span(
            "bad",
            attr(
                "gen_ai.input.messages",
                json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": {"not": "text"}}]}]
                ),
            ),
            attr("gen_ai.system_instructions", json.dumps([{"content": 5}])),
            attr(
                "gen_ai.output.messages", json.dumps([{"parts": [{"type": "text", "content": 1}]}])
            ),
        ),
    ),
    ("nul in an attribute", span("bad", attr("deployment.region", NUL))),
    ("nul in the request id", span("bad", attr("shadoweval.route.request_id", NUL))),
    ("surrogate in the router", span("bad", attr("shadoweval.route.router", SURROGATE))),
    (
        "NaN score",
        span("bad", {"key": "shadoweval.route.score", "value": {"doubleValue": raw("NaN")}}),
    ),
    ("Infinity attribute", span("bad", {"key": "x", "value": {"doubleValue": raw("Infinity")}})),
    ("overflowing tokens", span("bad", attr("gen_ai.usage.input_tokens", 10**30))),
    ("integer beyond a double", span("bad", attr("shadoweval.route.feature.n", 10**400))),
    ("deep kvlist", span("bad", {"key": "k", "value": nested_kvlist(MAX_ITEM_DEPTH)})),
]


def test_hostile_spans_cost_only_themselves(client: httpx.Client, engine: Engine) -> None:
    stored_before = 0
    for number, (name, bad) in enumerate(OTLP_CASES):
        bad = {**bad, "spanId": f"bad-{number}"}
        good = [span(f"ok{number}a"), span(f"ok{number}b")]
        response = client.post("/v1/traces", content=to_json(export(good[0], bad, good[1])))
        assert response.status_code < 500, f"{name}: {response.text[:300]}"
        assert response.status_code == 200, f"{name}: {response.text[:300]}"
        ids = stored_ids(engine)
        assert {f"otel-ok{number}a", f"otel-ok{number}b"} <= ids, name
        assert len(ids) - stored_before >= 2, name
        stored_before = len(ids)


# --- feedback --------------------------------------------------------------------------------


FEEDBACK_CASES: list[tuple[str, str, Any]] = [
    ("nul in the request id", "request_id", NUL),
    ("surrogate in the request id", "request_id", SURROGATE),
    ("nul in the router", "router", NUL),
    ("nul in the comment", "comment", NUL),
    ("surrogate in the comment", "comment", SURROGATE),
    ("nul in the reviewer", "reviewer", NUL),
    ("NaN grade", "value", raw("NaN")),
    ("Infinity grade", "value", raw("Infinity")),
    ("overflowing grade", "value", 10**30),
    ("grade beyond a double", "value", 10**400),
    ("deep value", "value", nested(MAX_ITEM_DEPTH + 5)),
    ("surrogate field name", "\ud800", 1),
]


def test_hostile_feedback_is_its_own_422(client: httpx.Client, engine: Engine) -> None:
    for number, (name, field, value) in enumerate(FEEDBACK_CASES):
        items = [
            {"router": "r", "request_id": f"ok-{number}-{i}", "kind": "grade", "value": 4}
            for i in range(2)
        ]
        bad = {"router": "r", "request_id": f"bad-{number}", "kind": "grade", "value": 3}
        bad[field] = value
        response = client.post("/v1/feedback", content=to_json([items[0], bad, items[1]]))
        error = expect_item_error(response, 1, name)
        # A grade out of range is the item's own check, and pydantic cannot name a field
        # whose name is not text (loc [] for both); the rest name the field.
        if field == "value" or name == "surrogate field name":
            assert error["loc"][:1] in ([], ["value"]), f"{name}: {error}"
        else:
            assert error["loc"][:1] == [field], f"{name}: {error}"
        assert response.json()["stored"] == 2, name
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Feedback)) == 2 * len(FEEDBACK_CASES)


def test_hostile_litellm_labels_leave_metrics_readable(client: httpx.Client) -> None:
    skipped = {**litellm_record("embedding"), "call_type": "embed-\ud800"}
    failed = {**litellm_record("failed"), "status": "failure", "error_str": "x"}
    failed["error_information"] = {"error_class": "Err\ud800\u0000"}
    response = client.post("/v1/integrations/litellm", content=to_json([skipped, failed]))
    assert response.status_code == 202, response.text[:300]
    assert [r["status"] for r in response.json()["results"]] == ["skipped", "failed_call"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'call_type="embed-\\\\ud800"' in metrics.text
