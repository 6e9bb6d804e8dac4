"""POST /v1/integrations/litellm: LiteLLM's generic API logger bodies, on SQLite and PostgreSQL.

The bodies are those a real LiteLLM posted (tests/fixtures/litellm), sent as it
sends them: application/json whatever the log format, with its User-Agent.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.ingest.models import Decision, DecisionPayload
from tests.conftest import Keys, LiveApi, use_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "litellm"
VERSION = "1.110.2"
PATH = "/v1/integrations/litellm"
HEADERS = {"Content-Type": "application/json", "User-Agent": f"litellm/{VERSION}"}
GROUP_TIERS = {"cheap": "cheap", "flaky-cheap": "cheap", "strong": "strong", "broken": "cheap"}


@pytest.fixture
def client(live_api: LiveApi, keys: Keys) -> Iterator[httpx.Client]:
    use_settings(live_api, litellm_group_tiers=GROUP_TIERS)
    with live_api.client(keys.ingest) as client:
        yield client


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def captured() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(fixture_bytes(f"litellm-{VERSION}-json_array.json"))
    return records


def by_scenario(records: list[dict[str, Any]]) -> dict[str, int]:
    """The index of each captured call (capture.py's scenarios).

    LiteLLM logs successes asynchronously, so their order in a batch varies between
    captures: find each call by what it is, not by where it is.
    """

    def find(wanted: Callable[[dict[str, Any]], bool]) -> int:
        return next(i for i, r in enumerate(records) if wanted(r))

    attempt = find(lambda r: r["status"] == "failure" and r["model_group"] == "flaky-cheap")
    trace = records[attempt]["trace_id"]
    return {
        "cheap": find(
            lambda r: (
                r["status"] == "success" and r["model_group"] == "cheap" and r["stream"] is not True
            )
        ),
        "strong": find(
            lambda r: (
                r["status"] == "success" and r["model_group"] == "strong" and r["trace_id"] != trace
            )
        ),
        "failed_attempt": attempt,
        "fallback": find(lambda r: r["status"] == "success" and r["trace_id"] == trace),
        "failure": find(lambda r: r["model_group"] == "broken"),
        "streamed": find(lambda r: r["stream"] is True),
    }


def expected_statuses() -> list[str]:
    """The captured batch: 4 successes (one a failover) and 2 failed calls, in body order."""
    return ["stored" if r["status"] == "success" else "failed_call" for r in captured()]


def post(client: httpx.Client, body: bytes | str, **headers: str) -> httpx.Response:
    return client.post(PATH, content=body, headers={**HEADERS, **headers})


def rows(engine: Engine) -> dict[str, Decision]:
    with Session(engine) as session:
        return {d.request_id: d for d in session.scalars(select(Decision))}


def count_payloads(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(DecisionPayload)) or 0)


def success_ids() -> list[str]:
    return [r["litellm_call_id"] for r in captured() if r["status"] == "success"]


def test_json_array_as_captured_is_stored(client: httpx.Client, engine: Engine) -> None:
    response = post(client, fixture_bytes(f"litellm-{VERSION}-json_array.json"))

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["stored"], body["failed_calls"], body["invalid"]) == (4, 2, 0)
    assert [r["status"] for r in body["results"]] == expected_statuses()
    stored = rows(engine)
    assert sorted(stored) == sorted(success_ids())
    records = captured()
    first = stored[records[by_scenario(records)["cheap"]]["litellm_call_id"]]
    assert first.router == "litellm"
    assert (first.tier, first.chosen_model, first.served_model) == (
        "cheap",
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini",
    )
    assert first.segment == {"topic": "geography", "app": "quiz"}
    assert first.segment_value == "geography"
    assert first.cost_usd == pytest.approx(1.35e-05)
    assert first.latency_ms is not None
    assert first.latency_ms > 0
    assert (first.input_tokens, first.output_tokens) == (10, 20)
    assert first.has_request
    assert first.has_response
    assert first.extra["litellm"]["sender"] == f"litellm/{VERSION}"


def test_ndjson_sent_as_application_json_is_stored(client: httpx.Client, engine: Engine) -> None:
    response = post(client, fixture_bytes(f"litellm-{VERSION}-ndjson.ndjson"))

    assert response.status_code == 202, response.text
    assert [r["status"] for r in response.json()["results"]] == expected_statuses()
    assert sorted(rows(engine)) == sorted(success_ids())


def test_single_objects_one_per_request_are_stored(client: httpx.Client, engine: Engine) -> None:
    bodies = fixture_bytes(f"litellm-{VERSION}-single.bodies").splitlines()
    statuses = []
    for body in bodies:
        response = post(client, body)
        assert response.status_code == 202, response.text
        statuses.append(response.json()["results"][0]["status"])

    assert sorted(statuses) == sorted(expected_statuses())
    assert sorted(rows(engine)) == sorted(success_ids())


def test_failover_is_detected_through_the_trace(client: httpx.Client, engine: Engine) -> None:
    records = captured()
    at = by_scenario(records)
    response = post(client, json.dumps(records))

    failed = response.json()["results"][at["failed_attempt"]]
    fallback = records[at["fallback"]]
    assert failed["trace_id"] == fallback["trace_id"]
    assert failed["failover_to"] == fallback["litellm_call_id"]
    decision = rows(engine)[fallback["litellm_call_id"]]
    # Routed to flaky-cheap (cheap tier); a provider error made strong serve it.
    assert decision.failover
    assert decision.tier == "cheap"
    assert decision.chosen_model == "openai/gpt-4o-mini"
    assert decision.served_model == "anthropic/claude-sonnet-4-5"
    assert decision.extra["litellm"]["failed_attempts"][0]["error_class"] == "InternalServerError"
    others = [d for d in rows(engine).values() if d.request_id != decision.request_id]
    assert not any(d.failover for d in others)


def test_failed_calls_are_counted_and_never_sampled(
    live_api: LiveApi, client: httpx.Client, engine: Engine
) -> None:
    use_settings(
        live_api,
        litellm_group_tiers=GROUP_TIERS,
        sampling_rate_by_tier={"cheap": 1.0, "strong": 1.0},
        sampling_default_rate=1.0,
    )
    records = captured()
    failures = [r for r in records if r["status"] == "failure"]

    response = post(client, json.dumps(failures))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["failed_calls"] == 2
    assert body["stored"] == 0
    assert all(r["sampled"] is None for r in body["results"])
    assert rows(engine) == {}  # not decisions: nothing to shadow
    metrics = httpx.get(f"{live_api.url}/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("shadoweval_litellm_failed_calls_total{")
        and 'model_group="broken"' in line
    )
    assert 'error_class="RateLimitError"' in line
    assert float(line.rsplit(" ", 1)[1]) >= 1

    # The successes of the same batch are sampled (π = 1); the failures still are not.
    again = post(client, json.dumps(records)).json()
    expected = [True if r["status"] == "success" else None for r in records]
    assert [r["sampled"] for r in again["results"]] == expected


def test_batch_with_a_bad_record_stores_the_valid_ones_and_answers_202(
    client: httpx.Client, engine: Engine
) -> None:
    records = captured()
    at = by_scenario(records)
    cheap, strong = records[at["cheap"]], records[at["strong"]]
    bad = copy.deepcopy(cheap)
    bad["litellm_call_id"] = "x" * 300  # over the 200-character request_id limit
    unmapped = copy.deepcopy(strong)
    unmapped["litellm_call_id"] = "unmapped-group"
    unmapped["model_group"] = "azure/not a tier"
    body = [cheap, bad, "not an object", unmapped, strong]

    response = post(client, json.dumps(body))

    # LiteLLM does not resend a batch that got a 4xx: store what can be stored, list the rest.
    assert response.status_code == 202, response.text
    answer = response.json()
    assert [r["status"] for r in answer["results"]] == [
        "stored",
        "invalid",
        "invalid",
        "invalid",
        "stored",
    ]
    assert answer["invalid"] == 3
    detail = {e["index"]: e for e in answer["detail"]}
    assert detail[1]["loc"][0] == "litellm_call_id"  # named as LiteLLM calls it
    assert detail[2]["type"] == "model_type"
    assert detail[3]["loc"] == ["model_group"]
    assert sorted(rows(engine)) == sorted([cheap["litellm_call_id"], strong["litellm_call_id"]])


def test_body_of_which_nothing_is_usable_answers_422(client: httpx.Client, engine: Engine) -> None:
    legacy = {"id": "x", "cost": "0.1", "modelParameters": "{}", "messages": "[]"}
    response = post(client, json.dumps(legacy))
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "litellm_legacy_payload"
    assert rows(engine) == {}


def test_ndjson_with_a_broken_first_line_stores_the_others(
    client: httpx.Client, engine: Engine
) -> None:
    lines = fixture_bytes(f"litellm-{VERSION}-ndjson.ndjson").splitlines()
    body = b"\n".join([lines[0][: len(lines[0]) // 2], *lines[1:]])

    response = post(client, body)

    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert results[0]["status"] == "invalid"
    assert [r["status"] for r in results[1:]] == expected_statuses()[1:]
    assert len(rows(engine)) == expected_statuses()[1:].count("stored")


def test_resend_is_idempotent(client: httpx.Client, engine: Engine) -> None:
    body = fixture_bytes(f"litellm-{VERSION}-json_array.json")
    assert post(client, body).json()["stored"] == 4

    again = post(client, body)

    assert again.status_code == 202
    statuses = [r["status"] for r in again.json()["results"]]
    assert statuses == [s.replace("stored", "duplicate") for s in expected_statuses()]
    assert len(rows(engine)) == 4


def test_router_name_can_be_set_per_logger(client: httpx.Client, engine: Engine) -> None:
    body = fixture_bytes(f"litellm-{VERSION}-json_array.json")
    response = client.post(PATH, params={"router": "eu-proxy"}, content=body, headers=HEADERS)
    assert response.status_code == 202
    assert {d.router for d in rows(engine).values()} == {"eu-proxy"}


def test_older_field_set_is_accepted(client: httpx.Client, engine: Engine) -> None:
    response = post(client, fixture_bytes("litellm-older-hand-varied.json"))

    assert response.status_code == 202, response.text
    assert [r["status"] for r in response.json()["results"]] == [
        "stored",
        "stored",
        "stored",
        "failed_call",
        "stored",
        "skipped",
        "stored",
    ]
    stored = rows(engine)
    assert len(stored) == 5
    redacted = next(d for d in stored.values() if d.extra["litellm"].get("redacted_by_litellm"))
    assert not redacted.has_request  # nothing to replay: never shadowed


def test_gzip_body_is_accepted(client: httpx.Client, engine: Engine) -> None:
    body = gzip.compress(fixture_bytes(f"litellm-{VERSION}-json_array.json"))
    response = post(client, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 202, response.text
    assert len(rows(engine)) == 4


def big_batch(count: int, min_bytes: int) -> bytes:
    """`count` distinct successes padded to at least `min_bytes` in all."""
    template = captured()[by_scenario(captured())["cheap"]]
    pad = max(0, min_bytes // count - len(json.dumps(template))) + 512
    records = []
    for i in range(count):
        record = copy.deepcopy(template)
        record["litellm_call_id"] = f"big-{i}"
        record["trace_id"] = f"trace-big-{i}"
        record["messages"][1]["content"] = f"question {i} " + "x" * pad
        records.append(record)
    body = json.dumps(records).encode()
    assert len(body) >= min_bytes
    return body


def test_a_full_10_mb_flush_is_accepted(client: httpx.Client, engine: Engine) -> None:
    # LiteLLM flushes up to 512 records of ~14 KB; /v1/decisions would refuse this (5 MB).
    body = big_batch(512, 10 * 1024 * 1024)

    response = post(client, body)

    assert response.status_code == 202, response.text[:500]
    assert response.json()["stored"] == 512
    assert len(rows(engine)) == 512


def test_body_over_the_limit_is_refused_with_413(live_api: LiveApi, client: httpx.Client) -> None:
    use_settings(live_api, litellm_group_tiers=GROUP_TIERS, litellm_max_bytes=64 * 1024)
    body = big_batch(8, 100 * 1024)

    declared = post(client, body)
    assert declared.status_code == 413
    assert declared.json()["limit_bytes"] == 64 * 1024

    # Chunked, without Content-Length: the limit holds while the body streams in.
    streamed = client.post(
        PATH, content=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]), headers=HEADERS
    )
    assert streamed.status_code == 413


def test_decisions_endpoint_keeps_its_own_limit(live_api: LiveApi) -> None:
    settings = live_api.app.state.settings
    assert settings.litellm_max_bytes >= 10 * 1024 * 1024
    assert settings.ingest_max_bytes == 5 * 1024 * 1024
