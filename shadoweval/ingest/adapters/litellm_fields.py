"""Readers of one LiteLLM StandardLoggingPayload record's fields: pure, and never raise.

The SLP changes between LiteLLM versions, so every reader tolerates a missing key or an
odd type and answers None (or an empty value); `litellm.py` assembles their answers into
decisions, failed calls and errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shadoweval.ingest.models import RequestPayload, ResponsePayload

# Calls that carry a chat-like prompt and answer; embeddings, images, audio, files,
# batches and the like are not routing decisions shadoweval can re-run and judge.
CHAT_CALL_TYPES = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "responses",
        "aresponses",
        "anthropic_messages",
        "aanthropic_messages",
        "generate_content",
        "agenerate_content",
        "generate_content_stream",
        "agenerate_content_stream",
    }
)
# What LiteLLM writes in place of content when message logging is turned off.
REDACTED_MARKER = "redacted by litellm"
# Same pattern as the decision log's TierName.
_TIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_MAX_TIER = 64
MAX_TEXT = 200
_MAX_LABEL_KEY = 64
_MAX_LABELS = 32
_MAX_ERROR_MESSAGE = 500
WILDCARD_GROUP = "*"

# The SLP field each decision-log field comes from, to name it in validation errors.
SOURCE_OF_FIELD: dict[str, str] = {
    "request_id": "litellm_call_id",
    "router": "router",
    "ts": "startTime",
    "tier": "model_group",
    "chosen_model": "model",
    "served_model": "model",
    "router_score": "metadata.routing_decision.score",
    "segment": "request_tags",
    "features": "prompt_tokens",
    "request": "messages",
    "response": "response",
    "usage": "prompt_tokens",
    "cost_usd": "response_cost",
    "latency_ms": "endTime",
    "session_id": "session_id",
}
# Labels taken from the proxy's key metadata: (label, metadata keys in order of preference).
_KEY_LABELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("team", ("user_api_key_team_alias", "team_alias", "user_api_key_team_id", "team_id")),
    ("key_alias", ("user_api_key_alias",)),
    ("user", ("user_api_key_user_id",)),
    ("org", ("user_api_key_org_alias", "user_api_key_org_id")),
    ("project", ("user_api_key_project_alias", "user_api_key_project_id")),
    ("end_user", ("user_api_key_end_user_id",)),
)
# SLP keys mapped onto decision fields, or too bulky to keep in `extra`.
_NOT_KEPT = frozenset(
    {
        "messages",
        "response",
        "model_map_information",  # the price sheet of the model, ~10 KB per record
        "hidden_params",
        "metadata",
        "error_information",
        "litellm_call_id",
        "call_id",
        "startTime",
        "endTime",
        "completionStartTime",
        "response_time",
        "response_cost",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "model_parameters",
        "request_tags",
        "session_id",
        "status",
    }
)
_KEPT_HIDDEN_PARAMS = ("model_id", "api_base", "litellm_model_name", "litellm_overhead_time_ms")
_DROPPED_METADATA = frozenset({"usage_object", "user_api_key_hash", "user_api_key_auth_metadata"})


@dataclass(frozen=True)
class AdapterConfig:
    """What the mapping needs from the deployment's settings."""

    router: str
    group_tiers: Mapping[str, str] = field(default_factory=dict)
    segment_key: str = "topic"
    segment_key_source: str | None = None
    # The sender's User-Agent (e.g. `litellm/1.110.2`), kept with each decision.
    sender: str | None = None


# --- small readers that never raise ------------------------------------------------------


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def count_or_none(value: Any) -> int | None:
    number = number_or_none(value)
    return int(number) if number is not None and number >= 0 else None


def epoch_seconds(value: Any) -> float | None:
    """startTime/endTime: epoch seconds in every SLP version seen; ISO 8601 tolerated."""
    number = number_or_none(value)
    if number is not None:
        return number
    text = text_or_none(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def utc_datetime(seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _compact(value: Any) -> Any:
    """Drop nulls and empty containers, recursively: SLPs are mostly nulls."""
    if isinstance(value, dict):
        kept = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


# --- the fields of one record ------------------------------------------------------------


def call_id_of(record: Mapping[str, Any]) -> str | None:
    """The idempotency key of a call.

    `litellm_call_id` (`call_id` in a fork) is unique per call. Older versions only
    have `id`, the provider's response id, which repeats across calls (a cache hit
    returns the cached response's id), so it is qualified by the trace, or the start
    time: a resend of the same record still maps to the same key.
    """
    for key in ("litellm_call_id", "call_id"):
        call_id = text_or_none(record.get(key))
        if call_id is not None:
            return call_id
    response_id = text_or_none(record.get("id"))
    if response_id is None:
        return None
    qualifier = text_or_none(record.get("trace_id"))
    if qualifier is None:
        start = epoch_seconds(record.get("startTime"))
        qualifier = repr(start) if start is not None else None
    return f"{response_id}@{qualifier}" if qualifier else response_id


def status_of(record: Mapping[str, Any]) -> str:
    status = text_or_none(record.get("status")) or text_or_none(
        dict_or_empty(record.get("status_fields")).get("llm_api_status")
    )
    if status is None:
        # Versions without `status` still fill error_str on failures only.
        return "failure" if text_or_none(record.get("error_str")) else "success"
    return status.lower()


def served_model_of(record: Mapping[str, Any]) -> str | None:
    return text_or_none(
        dict_or_empty(record.get("hidden_params")).get("litellm_model_name")
    ) or text_or_none(record.get("model"))


def header_of(record: Mapping[str, Any], name: str) -> Any:
    headers = dict_or_empty(dict_or_empty(record.get("hidden_params")).get("additional_headers"))
    # Older versions spell response headers with underscores.
    return headers.get(name, headers.get(name.replace("-", "_")))


def routing_decision_of(record: Mapping[str, Any]) -> dict[str, Any]:
    return dict_or_empty(dict_or_empty(record.get("metadata")).get("routing_decision"))


def messages_of(record: Mapping[str, Any]) -> list[Any] | None:
    messages = record.get("messages")
    if isinstance(messages, str):
        # text_completion / responses input given as a plain prompt.
        return [{"role": "user", "content": messages}] if messages else None
    if isinstance(messages, dict):
        return [messages] if "role" in messages else None
    return messages if isinstance(messages, list) and messages else None


def _response_payload(response: Any) -> dict[str, Any] | None:
    if isinstance(response, str):
        return {"text": response} if response else None
    response = dict_or_empty(response)
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        message = dict_or_empty(choice.get("message"))
        payload: dict[str, Any] = {}
        text = message.get("content") if message else choice.get("text")
        if isinstance(text, str):
            payload["text"] = text
        finish_reason = text_or_none(choice.get("finish_reason"))
        if finish_reason is not None:
            payload["finish_reason"] = finish_reason[:64]
        if message.get("tool_calls"):
            payload["tool_calls"] = message["tool_calls"]
        return payload or None
    # The Responses API shape.
    output_text = response.get("output_text")
    if isinstance(output_text, str) and output_text:
        return {"text": output_text}
    return None


def _is_redacted(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith(REDACTED_MARKER)
    if isinstance(value, list):
        return any(_is_redacted(item) for item in value)
    if isinstance(value, dict):
        return any(_is_redacted(item) for item in value.values())
    return False


def payloads_of(record: Mapping[str, Any], notes: dict[str, Any]) -> dict[str, Any]:
    """request/response when they can be replayed and judged; why not, in `notes`."""
    out: dict[str, Any] = {}
    messages = messages_of(record)
    response = _response_payload(record.get("response"))
    if _is_redacted(messages) or _is_redacted(response):
        # turn_off_message_logging: there is nothing to replay or judge.
        notes["redacted_by_litellm"] = True
        return out
    if messages is not None:
        request: dict[str, Any] = {"messages": messages}
        params = dict_or_empty(record.get("model_parameters"))
        if params:
            request["params"] = params
        try:
            out["request"] = RequestPayload.model_validate(request).model_dump(
                mode="json", exclude_unset=True
            )
        except ValidationError as exc:
            notes["request_not_kept"] = exc.errors(include_url=False)[0]["msg"]
    if response is not None:
        try:
            out["response"] = ResponsePayload.model_validate(response).model_dump(
                mode="json", exclude_unset=True
            )
        except ValidationError as exc:
            notes["response_not_kept"] = exc.errors(include_url=False)[0]["msg"]
    return out


def usage_of(record: Mapping[str, Any]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for source, target in (
        ("prompt_tokens", "input_tokens"),
        ("completion_tokens", "output_tokens"),
    ):
        count = count_or_none(record.get(source))
        if count is not None:
            usage[target] = count
    for usage_object in (
        dict_or_empty(dict_or_empty(record.get("hidden_params")).get("usage_object")),
        dict_or_empty(dict_or_empty(record.get("metadata")).get("usage_object")),
        dict_or_empty(dict_or_empty(record.get("response")).get("usage")),
    ):
        details = dict_or_empty(usage_object.get("prompt_tokens_details"))
        cached = count_or_none(details.get("cached_tokens"))
        if cached is None:
            cached = count_or_none(usage_object.get("cache_read_input_tokens"))
        if cached is not None:
            usage["cache_read_tokens"] = cached
            break
    return usage


def _label_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    if isinstance(value, str) and value and len(value) <= MAX_TEXT:
        return value
    return None


def labels_of(record: Mapping[str, Any]) -> dict[str, str]:
    """Every label a record carries, before the segment key is chosen.

    `key:value` (or `key=value`) request tags first, then the caller's metadata
    (requester_metadata, spend_logs_metadata), then the proxy key's team, alias,
    user, org and project, and the end user; the first source of a label wins.
    Other tags are joined, in order, as `tags`.
    """
    labels: dict[str, str] = {}

    def put(key: Any, value: Any) -> None:
        text = _label_value(value)
        if (
            isinstance(key, str)
            and 0 < len(key) <= _MAX_LABEL_KEY
            and text is not None
            and key not in labels
        ):
            labels[key] = text

    plain_tags: list[str] = []
    tags = record.get("request_tags")
    for tag in tags if isinstance(tags, list) else []:
        if not isinstance(tag, str) or not tag:
            continue
        match = re.match(r"^([^:=]+)[:=](.+)$", tag)
        if match:
            put(match.group(1).strip(), match.group(2).strip())
        else:
            plain_tags.append(tag)
    metadata = dict_or_empty(record.get("metadata"))
    for source in ("requester_metadata", "spend_logs_metadata"):
        for key, value in dict_or_empty(metadata.get(source)).items():
            put(key, value)
    for label, keys in _KEY_LABELS:
        put(label, next((metadata[k] for k in keys if text_or_none(metadata.get(k))), None))
    put("end_user", record.get("end_user"))
    if plain_tags:
        put("tags", ",".join(plain_tags)[:MAX_TEXT])
    return labels


def segment_of(record: Mapping[str, Any], config: AdapterConfig) -> dict[str, str]:
    """The decision's `segment`: the labels, with the segment key set from its source."""
    labels = labels_of(record)
    segment: dict[str, str] = {}
    source = config.segment_key_source or config.segment_key
    if source in labels:
        segment[config.segment_key] = labels[source]
    for key, value in labels.items():
        if len(segment) >= _MAX_LABELS:
            break
        segment.setdefault(key, value)
    return segment


def tier_of(names: Sequence[str | None], group_tiers: Mapping[str, str]) -> str | None:
    """The tier of the first name the map knows, else the map's `*`, else the name itself."""
    present = [name for name in names if name]
    for name in present:
        if name in group_tiers:
            return group_tiers[name]
    if WILDCARD_GROUP in group_tiers:
        return group_tiers[WILDCARD_GROUP]
    for name in present:
        if len(name) <= _MAX_TIER and _TIER_PATTERN.match(name):
            return name
    return None


def attempt_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    error = dict_or_empty(record.get("error_information"))
    message = text_or_none(error.get("error_message")) or text_or_none(record.get("error_str"))
    summary: dict[str, Any] = _compact(
        {
            "litellm_call_id": call_id_of(record),
            "model_group": text_or_none(record.get("model_group")),
            "model": text_or_none(record.get("model")),
            "error_class": text_or_none(error.get("error_class")),
            "error_code": text_or_none(error.get("error_code")),
            "normalized_error": text_or_none(error.get("normalized_error")),
            "error_message": message[:_MAX_ERROR_MESSAGE] if message else None,
            "start": epoch_seconds(record.get("startTime")),
        }
    )
    return summary


def kept_extra(record: Mapping[str, Any], config: AdapterConfig) -> dict[str, Any]:
    """What the decision keeps of the SLP beyond the mapped fields (unknown keys included)."""
    kept: dict[str, Any] = {k: v for k, v in record.items() if k not in _NOT_KEPT}
    hidden = dict_or_empty(record.get("hidden_params"))
    kept["hidden_params"] = {k: hidden.get(k) for k in _KEPT_HIDDEN_PARAMS}
    kept["hidden_params"]["additional_headers"] = {
        k: v
        for k, v in dict_or_empty(hidden.get("additional_headers")).items()
        if k.startswith(("x-litellm-", "x_litellm_"))
    }
    kept["metadata"] = {
        k: v for k, v in dict_or_empty(record.get("metadata")).items() if k not in _DROPPED_METADATA
    }
    if config.sender:
        kept["sender"] = config.sender[:MAX_TEXT]
    compacted: dict[str, Any] = _compact(kept)
    return compacted
