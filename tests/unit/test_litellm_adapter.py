"""The LiteLLM StandardLoggingPayload → decision-log mapping, on captured and hand-made payloads."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shadoweval.ingest.adapters import litellm as adapter
from shadoweval.ingest.models import DecisionIn

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "litellm"
VERSION = "1.110.2"
GROUP_TIERS = {"cheap": "cheap", "flaky-cheap": "cheap", "strong": "strong", "broken": "cheap"}
CONFIG = adapter.AdapterConfig(router="litellm", group_tiers=GROUP_TIERS, sender="litellm/1.110.2")


def captured() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(
        (FIXTURES / f"litellm-{VERSION}-json_array.json").read_bytes()
    )
    return records


def older() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(
        (FIXTURES / "litellm-older-hand-varied.json").read_bytes()
    )
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


def decisions(mapped: list[adapter.Mapped]) -> list[dict[str, Any]]:
    return [m.decision for m in mapped if isinstance(m, adapter.MappedDecision)]


def test_capture_names_the_litellm_version_and_holds_the_expected_calls() -> None:
    manifest = json.loads((FIXTURES / f"litellm-{VERSION}-capture.json").read_text())
    assert manifest["litellm_version"] == VERSION
    posts = manifest["posts"]["json_array"]
    assert posts[0]["headers"]["content-type"] == "application/json"
    assert posts[0]["headers"]["user-agent"] == f"litellm/{VERSION}"
    records = captured()
    assert sorted(r["status"] for r in records) == ["failure"] * 2 + ["success"] * 4
    assert len(set(by_scenario(records).values())) == 6
    # ~14 KB per record, as the integration expects of real traffic.
    assert all(10_000 < len(json.dumps(r)) < 20_000 for r in records)


def test_the_three_log_formats_carry_the_same_records() -> None:
    array = captured()
    ndjson = [json.loads(line) for line in (FIXTURES / f"litellm-{VERSION}-ndjson.ndjson").open()]
    single = [json.loads(line) for line in (FIXTURES / f"litellm-{VERSION}-single.bodies").open()]
    ids = [r["litellm_call_id"] for r in array]
    assert [r["litellm_call_id"] for r in ndjson] == ids
    assert sorted(r["litellm_call_id"] for r in single) == sorted(ids)


def test_captured_success_maps_onto_a_valid_decision() -> None:
    records = captured()
    record = records[by_scenario(records)["cheap"]]
    mapped = adapter.map_record(record, CONFIG)
    assert isinstance(mapped, adapter.MappedDecision)
    item = DecisionIn.model_validate(mapped.decision)

    assert item.request_id == record["litellm_call_id"]
    assert item.router == "litellm"
    assert item.tier == "cheap"
    assert item.chosen_model == item.served_model == "openai/gpt-4o-mini"
    assert not item.failover
    assert item.cost_usd == pytest.approx(record["response_cost"])
    assert item.latency_ms == pytest.approx((record["endTime"] - record["startTime"]) * 1000)
    assert item.ts is not None
    assert item.ts.timestamp() == pytest.approx(record["startTime"])
    assert item.usage is not None
    assert (item.usage.input_tokens, item.usage.output_tokens) == (10, 20)
    assert item.segment == {"topic": "geography", "app": "quiz"}
    assert item.request is not None
    assert [m.content for m in item.request.messages] == [
        "Answer briefly.",
        "What is the capital of France?",
    ]
    assert item.request.params["max_tokens"] == 64
    assert item.response is not None
    assert item.response.text == "Paris is the capital of France."
    assert item.response.finish_reason == "stop"
    assert item.features == {"input_tokens": 10, "message_count": 2}
    extra = (item.model_extra or {})["litellm"]
    assert extra["trace_id"] == record["trace_id"]
    assert extra["sender"] == "litellm/1.110.2"
    assert extra["hidden_params"]["additional_headers"]["x-litellm-attempted-fallbacks"] == 0
    # The bulky price sheet and the mapped payloads are not duplicated in extra.
    assert not {"model_map_information", "messages", "response"} & set(extra)
    assert len(json.dumps(extra)) < 2_000


def test_failed_attempt_and_its_fallback_are_linked_by_trace() -> None:
    records = captured()
    at = by_scenario(records)
    mapped = adapter.map_batch(records, CONFIG)
    failure, fallback = mapped[at["failed_attempt"]], mapped[at["fallback"]]
    assert isinstance(failure, adapter.FailedCall)
    assert isinstance(fallback, adapter.MappedDecision)
    assert failure.trace_id == records[at["fallback"]]["trace_id"]
    assert failure.error_class == "InternalServerError"
    assert failure.failover_to == records[at["fallback"]]["litellm_call_id"]

    item = DecisionIn.model_validate(fallback.decision)
    # The routing decision was the first attempt's: flaky-cheap, i.e. the cheap tier.
    assert item.failover
    assert item.tier == "cheap"
    assert item.chosen_model == "openai/gpt-4o-mini"
    assert item.served_model == "anthropic/claude-sonnet-4-5"
    assert item.ts is not None
    assert item.ts.timestamp() == pytest.approx(records[at["failed_attempt"]]["startTime"])
    extra = (item.model_extra or {})["litellm"]
    assert extra["chosen_model_group"] == "flaky-cheap"
    assert extra["model_group"] == "strong"
    assert extra["attempted_fallbacks"] == 1
    assert [a["model_group"] for a in extra["failed_attempts"]] == ["flaky-cheap"]
    assert extra["failed_attempts"][0]["normalized_error"] == "500_PROVIDER_INTERNAL_ERROR"


def test_fallback_without_its_failed_attempt_in_the_batch_is_still_a_failover() -> None:
    records = captured()
    mapped = adapter.map_record(records[by_scenario(records)["fallback"]], CONFIG)
    assert isinstance(mapped, adapter.MappedDecision)
    item = DecisionIn.model_validate(mapped.decision)
    assert item.failover
    # The first attempt's group is unknown here: the serving group's tier is all there is.
    assert item.tier == "strong"
    assert (item.model_extra or {})["litellm"]["chosen_model_group_unknown"] is True


def test_failure_without_fallback_is_a_failed_call_only() -> None:
    records = captured()
    mapped = adapter.map_batch(records, CONFIG)
    failure = mapped[by_scenario(records)["failure"]]
    assert isinstance(failure, adapter.FailedCall)
    assert failure.model_group == "broken"
    assert failure.error_class == "RateLimitError"
    assert failure.error_code == "429"
    assert failure.failover_to is None
    assert len(decisions(mapped)) == 4


def test_streamed_call_keeps_time_to_first_token() -> None:
    records = captured()
    at = by_scenario(records)
    record = records[at["streamed"]]
    mapped = adapter.map_record(record, CONFIG)
    assert isinstance(mapped, adapter.MappedDecision)
    decision = mapped.decision
    assert decision["features"]["stream"] is True
    expected = (record["completionStartTime"] - record["startTime"]) * 1000
    assert decision["ttft_ms"] == pytest.approx(expected)
    assert "ttft_ms" not in decisions(adapter.map_batch([records[at["cheap"]]], CONFIG))[0]


def test_failed_attempt_of_another_request_in_the_same_trace_is_not_linked() -> None:
    # Clients may reuse a trace id for a whole agent run: a failed step is not an
    # earlier attempt of a later, different request.
    records = captured()
    at = by_scenario(records)
    success = records[at["cheap"]]
    other = copy.deepcopy(records[at["failure"]])
    other["trace_id"] = success["trace_id"]
    other["startTime"] = success["startTime"] - 1
    mapped = adapter.map_batch([other, success], CONFIG)
    assert isinstance(mapped[0], adapter.FailedCall)
    assert mapped[0].failover_to is None
    assert mapped[1].decision["failover"] is False  # type: ignore[union-attr]


def test_every_captured_format_maps_the_same_way() -> None:
    expected = [
        m.decision["request_id"]
        for m in adapter.map_batch(captured(), CONFIG)
        if isinstance(m, adapter.MappedDecision)
    ]
    lines = (FIXTURES / f"litellm-{VERSION}-ndjson.ndjson").read_text().splitlines()
    from_ndjson = adapter.map_batch([json.loads(line) for line in lines], CONFIG)
    assert [d["request_id"] for d in decisions(from_ndjson)] == expected


def test_older_field_set_maps_with_fallback_ids_and_proxy_labels() -> None:
    records = older()
    config = adapter.AdapterConfig(
        router="litellm", group_tiers={"gpt-4o-mini": "cheap", "gpt-4o": "strong"}
    )
    mapped = adapter.map_batch(records, config)
    first, cache_hit, fork = mapped[0], mapped[1], mapped[2]
    assert isinstance(first, adapter.MappedDecision)
    assert isinstance(cache_hit, adapter.MappedDecision)
    assert isinstance(fork, adapter.MappedDecision)

    item = DecisionIn.model_validate(first.decision)
    # No litellm_call_id: the response id, qualified by the start time.
    assert item.request_id == "chatcmpl-older-1@1795800000.25"
    assert item.tier == "cheap"
    assert item.chosen_model == "gpt-4o-mini"
    assert item.segment == {
        "topic": "billing",
        "language": "en",
        "team": "support",
        "key_alias": "support-bot",
        "user": "u-17",
        "end_user": "cust-42",
        "tags": "prod",
    }
    extra = (item.model_extra or {})["litellm"]
    assert extra["proxy_server_request"] == {"url": "/chat/completions"}  # unknown key kept
    assert "user_api_key_hash" not in extra["metadata"]

    # The cache hit repeats `id` but is another call: another request_id.
    assert cache_hit.decision["request_id"] != item.request_id
    assert cache_hit.decision["cost_usd"] == 0.0
    assert cache_hit.decision["litellm"]["cache_hit"] is True

    assert fork.decision["request_id"] == "fork-call-3"
    assert fork.decision["tier"] == "strong"
    # A `topic:` tag wins over the caller's metadata.
    assert fork.decision["segment"]["topic"] == "refunds"


def test_older_failure_redaction_embeddings_and_text_completion() -> None:
    mapped = adapter.map_batch(older(), adapter.AdapterConfig(router="litellm"))
    failure, redacted, embedding, text = mapped[3], mapped[4], mapped[5], mapped[6]
    # No `status` key: error_str alone marks the failure.
    assert isinstance(failure, adapter.FailedCall)
    assert failure.request_id == "older-failure-4@trace-older-4"

    assert isinstance(redacted, adapter.MappedDecision)
    assert "request" not in redacted.decision
    assert "response" not in redacted.decision
    assert redacted.decision["litellm"]["redacted_by_litellm"] is True

    assert isinstance(embedding, adapter.Skipped)
    assert embedding.call_type == "aembedding"

    assert isinstance(text, adapter.MappedDecision)
    item = DecisionIn.model_validate(text.decision)
    assert item.request is not None
    assert item.request.messages[0].content == "Say hello in French."
    assert item.response is not None
    assert item.response.text == "Bonjour !"
    # No group map: the group name is the tier.
    assert item.tier == "gpt-4o-mini"


def test_group_tier_map_wildcard_and_unmappable_group() -> None:
    records = captured()
    record = copy.deepcopy(records[by_scenario(records)["cheap"]])
    record["model_group"] = "openai/some-model"
    no_tier = adapter.map_record(record, adapter.AdapterConfig(router="r"))
    assert isinstance(no_tier, adapter.Invalid)
    assert no_tier.loc == ("model_group",)
    assert "litellm_group_tiers" in no_tier.msg
    wildcard = adapter.map_record(
        record, adapter.AdapterConfig(router="r", group_tiers={"*": "strong"})
    )
    assert isinstance(wildcard, adapter.MappedDecision)
    assert wildcard.decision["tier"] == "strong"


def test_segment_key_source_picks_the_label_that_becomes_the_segment() -> None:
    config = adapter.AdapterConfig(router="r", segment_key="topic", segment_key_source="team")
    mapped = adapter.map_record(older()[0], config)
    assert isinstance(mapped, adapter.MappedDecision)
    assert mapped.decision["segment"]["topic"] == "support"


def test_missing_and_extra_keys_are_tolerated() -> None:
    minimal = {"litellm_call_id": "c-1", "model": "gpt-4o-mini", "model_group": "cheap"}
    mapped = adapter.map_record({**minimal, "a_field_from_the_future": [1]}, CONFIG)
    assert isinstance(mapped, adapter.MappedDecision)
    item = DecisionIn.model_validate(mapped.decision)
    assert item.tier == "cheap"
    assert item.ts is None  # receipt time
    assert item.request is None
    assert (item.model_extra or {})["litellm"]["a_field_from_the_future"] == [1]

    odd = {
        **minimal,
        "startTime": "not a time",
        "response_cost": float("nan"),
        "prompt_tokens": True,
        "messages": [{"content": "no role"}],
        "metadata": None,
        "request_tags": "not-a-list",
        "hidden_params": ["not", "a", "dict"],
    }
    mapped = adapter.map_record(odd, CONFIG)
    assert isinstance(mapped, adapter.MappedDecision)
    item = DecisionIn.model_validate(mapped.decision)
    assert item.cost_usd is None
    assert item.request is None
    assert "request_not_kept" in (item.model_extra or {})["litellm"]


@pytest.mark.parametrize(
    ("record", "loc", "kind"),
    [
        ([1, 2], (), "model_type"),
        ({"model": "m", "model_group": "cheap"}, ("litellm_call_id",), "missing"),
        ({"litellm_call_id": "c", "model_group": "cheap"}, ("model",), "missing"),
        (
            {"id": "x", "cost": "0.1", "modelParameters": "{}", "messages": "[]"},
            (),
            "litellm_legacy_payload",
        ),
    ],
)
def test_unusable_records_are_invalid_with_the_field_at_fault(
    record: Any, loc: tuple[str, ...], kind: str
) -> None:
    mapped = adapter.map_record(record, CONFIG)
    assert isinstance(mapped, adapter.Invalid)
    assert mapped.loc == loc
    assert mapped.type == kind


def test_auto_router_decision_supplies_tier_model_and_score() -> None:
    records = captured()
    record = copy.deepcopy(records[by_scenario(records)["cheap"]])
    record["model_group"] = "smart-router"
    record["metadata"]["routing_decision"] = {
        "router_model_name": "smart-router",
        "router_type": "complexity",
        "routed_model": "gpt-4o-mini",
        "tier": "SIMPLE",
        "score": 0.12,
        "cause": "heuristic_scorer",
    }
    config = adapter.AdapterConfig(router="r", group_tiers={"SIMPLE": "cheap"})
    mapped = adapter.map_record(record, config)
    assert isinstance(mapped, adapter.MappedDecision)
    item = DecisionIn.model_validate(mapped.decision)
    assert item.tier == "cheap"
    assert item.chosen_model == "gpt-4o-mini"
    assert item.router_score == pytest.approx(0.12)
    assert item.score_semantics == "complexity"  # drift-checked, never calibrated


def test_unparsable_lines_become_invalid_items() -> None:
    success = captured()[by_scenario(captured())["cheap"]]
    mapped = adapter.map_batch([None, success], CONFIG, unparsable={0: "line 1 is not JSON"})
    assert isinstance(mapped[0], adapter.Invalid)
    assert mapped[0].type == "json_invalid"
    assert isinstance(mapped[1], adapter.MappedDecision)
