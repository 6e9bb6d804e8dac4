"""LiteLLM's StandardLoggingPayload → the decision log (v1): a pure mapping, no I/O.

LiteLLM's generic API logger posts one StandardLoggingPayload (SLP) per LLM call,
successes and failures alike. A successful call becomes a decision; a failed one
becomes a `FailedCall`, which is counted and never shadowed. Calls of one request
share a `trace_id` (retries, fallbacks), so the batch is read as a whole: a success
that follows failed attempts of the same request is a failover, whose routing
decision is what the first attempt was sent to.

The SLP changes between LiteLLM versions: every key may be missing, unknown keys
are kept (compacted) under `extra.litellm`, and nothing here raises on odd input —
a record that cannot be mapped becomes an `Invalid` naming the SLP field at fault.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
_MAX_TEXT = 200
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


@dataclass(frozen=True)
class MappedDecision:
    """A successful call, as a decision-log item (a dict DecisionIn validates)."""

    index: int
    decision: dict[str, Any]


@dataclass(frozen=True)
class FailedCall:
    """A failed call (`status: failure`): counted, never a decision, never shadowed."""

    index: int
    request_id: str | None
    trace_id: str | None
    model_group: str | None
    model: str | None
    error_class: str | None
    error_code: str | None
    ts: datetime | None
    # The decision (request_id) of the same request that a later attempt served, if any.
    failover_to: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A call that is not a chat routing decision (an embedding, an image…)."""

    index: int
    request_id: str | None
    call_type: str


@dataclass(frozen=True)
class Invalid:
    """A record that cannot be mapped; `loc` names the SLP field at fault."""

    index: int
    loc: tuple[str | int, ...]
    msg: str
    type: str
    request_id: str | None = None


Mapped = MappedDecision | FailedCall | Skipped | Invalid


# --- small readers that never raise ------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number >= 0 else None


def _epoch_seconds(value: Any) -> float | None:
    """startTime/endTime: epoch seconds in every SLP version seen; ISO 8601 tolerated."""
    number = _number(value)
    if number is not None:
        return number
    text = _str(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _datetime(seconds: float | None) -> datetime | None:
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
        call_id = _str(record.get(key))
        if call_id is not None:
            return call_id
    response_id = _str(record.get("id"))
    if response_id is None:
        return None
    qualifier = _str(record.get("trace_id"))
    if qualifier is None:
        start = _epoch_seconds(record.get("startTime"))
        qualifier = repr(start) if start is not None else None
    return f"{response_id}@{qualifier}" if qualifier else response_id


def _status(record: Mapping[str, Any]) -> str:
    status = _str(record.get("status")) or _str(
        _dict(record.get("status_fields")).get("llm_api_status")
    )
    if status is None:
        # Versions without `status` still fill error_str on failures only.
        return "failure" if _str(record.get("error_str")) else "success"
    return status.lower()


def _served_model(record: Mapping[str, Any]) -> str | None:
    return _str(_dict(record.get("hidden_params")).get("litellm_model_name")) or _str(
        record.get("model")
    )


def _header(record: Mapping[str, Any], name: str) -> Any:
    headers = _dict(_dict(record.get("hidden_params")).get("additional_headers"))
    # Older versions spell response headers with underscores.
    return headers.get(name, headers.get(name.replace("-", "_")))


def _routing_decision(record: Mapping[str, Any]) -> dict[str, Any]:
    return _dict(_dict(record.get("metadata")).get("routing_decision"))


def _messages(record: Mapping[str, Any]) -> list[Any] | None:
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
    response = _dict(response)
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        message = _dict(choice.get("message"))
        payload: dict[str, Any] = {}
        text = message.get("content") if message else choice.get("text")
        if isinstance(text, str):
            payload["text"] = text
        finish_reason = _str(choice.get("finish_reason"))
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


def _payloads(record: Mapping[str, Any], notes: dict[str, Any]) -> dict[str, Any]:
    """request/response when they can be replayed and judged; why not, in `notes`."""
    out: dict[str, Any] = {}
    messages = _messages(record)
    response = _response_payload(record.get("response"))
    if _is_redacted(messages) or _is_redacted(response):
        # turn_off_message_logging: there is nothing to replay or judge.
        notes["redacted_by_litellm"] = True
        return out
    if messages is not None:
        request: dict[str, Any] = {"messages": messages}
        params = _dict(record.get("model_parameters"))
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


def _usage(record: Mapping[str, Any]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for source, target in (
        ("prompt_tokens", "input_tokens"),
        ("completion_tokens", "output_tokens"),
    ):
        count = _count(record.get(source))
        if count is not None:
            usage[target] = count
    for usage_object in (
        _dict(_dict(record.get("hidden_params")).get("usage_object")),
        _dict(_dict(record.get("metadata")).get("usage_object")),
        _dict(_dict(record.get("response")).get("usage")),
    ):
        details = _dict(usage_object.get("prompt_tokens_details"))
        cached = _count(details.get("cached_tokens"))
        if cached is None:
            cached = _count(usage_object.get("cache_read_input_tokens"))
        if cached is not None:
            usage["cache_read_tokens"] = cached
            break
    return usage


def _label_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    if isinstance(value, str) and value and len(value) <= _MAX_TEXT:
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
    metadata = _dict(record.get("metadata"))
    for source in ("requester_metadata", "spend_logs_metadata"):
        for key, value in _dict(metadata.get(source)).items():
            put(key, value)
    for label, keys in _KEY_LABELS:
        put(label, next((metadata[k] for k in keys if _str(metadata.get(k))), None))
    put("end_user", record.get("end_user"))
    if plain_tags:
        put("tags", ",".join(plain_tags)[:_MAX_TEXT])
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


def _attempt_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    error = _dict(record.get("error_information"))
    message = _str(error.get("error_message")) or _str(record.get("error_str"))
    summary: dict[str, Any] = _compact(
        {
            "litellm_call_id": call_id_of(record),
            "model_group": _str(record.get("model_group")),
            "model": _str(record.get("model")),
            "error_class": _str(error.get("error_class")),
            "error_code": _str(error.get("error_code")),
            "normalized_error": _str(error.get("normalized_error")),
            "error_message": message[:_MAX_ERROR_MESSAGE] if message else None,
            "start": _epoch_seconds(record.get("startTime")),
        }
    )
    return summary


def _kept_extra(record: Mapping[str, Any], config: AdapterConfig) -> dict[str, Any]:
    """What the decision keeps of the SLP beyond the mapped fields (unknown keys included)."""
    kept: dict[str, Any] = {k: v for k, v in record.items() if k not in _NOT_KEPT}
    hidden = _dict(record.get("hidden_params"))
    kept["hidden_params"] = {k: hidden.get(k) for k in _KEPT_HIDDEN_PARAMS}
    kept["hidden_params"]["additional_headers"] = {
        k: v
        for k, v in _dict(hidden.get("additional_headers")).items()
        if k.startswith(("x-litellm-", "x_litellm_"))
    }
    kept["metadata"] = {
        k: v for k, v in _dict(record.get("metadata")).items() if k not in _DROPPED_METADATA
    }
    if config.sender:
        kept["sender"] = config.sender[:_MAX_TEXT]
    compacted: dict[str, Any] = _compact(kept)
    return compacted


# --- one record, then a batch -----------------------------------------------------------


@dataclass
class _Success:
    index: int
    record: Mapping[str, Any]
    start: float | None
    failed_attempts: list[Mapping[str, Any]] = field(default_factory=list)


def _failed_call(index: int, record: Mapping[str, Any]) -> FailedCall:
    error = _dict(record.get("error_information"))
    return FailedCall(
        index=index,
        request_id=call_id_of(record),
        trace_id=_str(record.get("trace_id")),
        model_group=_str(record.get("model_group")),
        model=_str(record.get("model")),
        error_class=_str(error.get("error_class")),
        error_code=_str(error.get("error_code")),
        ts=_datetime(_epoch_seconds(record.get("startTime"))),
    )


def _is_legacy_v1(record: Mapping[str, Any]) -> bool:
    # litellm.generic_api_use_v1 posts every value str()-ed, with these camelCase keys.
    return "modelParameters" in record and "cost" in record and "status" not in record


def _classify(index: int, raw: Any) -> Mapped | _Success:
    if not isinstance(raw, dict):
        return Invalid(
            index=index,
            loc=(),
            msg=f"a StandardLoggingPayload is a JSON object, got a JSON {type(raw).__name__}",
            type="model_type",
        )
    request_id = call_id_of(raw)
    if _is_legacy_v1(raw):
        return Invalid(
            index=index,
            loc=(),
            msg="legacy payload of litellm.generic_api_use_v1 (every value a string); "
            "unset generic_api_use_v1 so LiteLLM posts the StandardLoggingPayload",
            type="litellm_legacy_payload",
            request_id=request_id,
        )
    if _status(raw) == "failure":
        return _failed_call(index, raw)
    call_type = _str(raw.get("call_type"))
    if call_type is not None and call_type not in CHAT_CALL_TYPES:
        return Skipped(index=index, request_id=request_id, call_type=call_type)
    return _Success(index=index, record=raw, start=_epoch_seconds(raw.get("startTime")))


def _timings(success: _Success, first: Mapping[str, Any] | None) -> dict[str, Any]:
    """ts (when the request was first sent), latency_ms and ttft_ms (of the served call)."""
    record = success.record
    out: dict[str, Any] = {}
    first_start = _epoch_seconds(first.get("startTime")) if first is not None else None
    ts = _datetime(first_start if first_start is not None else success.start)
    if ts is not None:
        out["ts"] = ts.isoformat()
    start, end = success.start, _epoch_seconds(record.get("endTime"))
    response_time = _number(record.get("response_time"))
    if start is not None and end is not None and end >= start:
        out["latency_ms"] = (end - start) * 1000.0
    elif response_time is not None and response_time >= 0:
        out["latency_ms"] = response_time * 1000.0
    first_token = _epoch_seconds(record.get("completionStartTime"))
    streamed = record.get("stream") is True or _dict(record.get("model_parameters")).get("stream")
    # Without streaming, completionStartTime is the end of the call: no time to first token.
    if streamed is True and start is not None and first_token is not None and first_token >= start:
        out["ttft_ms"] = (first_token - start) * 1000.0
    return out


def _decision(success: _Success, config: AdapterConfig) -> Mapped:
    record = success.record
    index = success.index
    request_id = call_id_of(record)
    if request_id is None:
        return Invalid(
            index=index,
            loc=("litellm_call_id",),
            msg="no call id: litellm_call_id, call_id and id are all missing",
            type="missing",
        )
    served_group = _str(record.get("model_group"))
    served_model = _served_model(record)
    first = success.failed_attempts[0] if success.failed_attempts else None
    attempted_fallbacks = _count(_header(record, "x-litellm-attempted-fallbacks")) or 0
    attempted_retries = _count(_header(record, "x-litellm-attempted-retries")) or 0
    failover = bool(success.failed_attempts) or attempted_fallbacks > 0 or attempted_retries > 0

    # The routing decision is where the request went first: the first failed attempt's
    # group when one is in the batch, otherwise the group that served it.
    chosen_group = _str(first.get("model_group")) if first else served_group
    chosen_group = chosen_group or served_group
    chosen_model = (_str(first.get("model")) if first else None) or served_model
    routing = _routing_decision(record)
    routed_model = _str(routing.get("routed_model"))
    if routed_model is not None and first is None:
        chosen_model = routed_model
    if chosen_model is None:
        return Invalid(
            index=index,
            loc=("model",),
            msg="no model: model and hidden_params.litellm_model_name are missing",
            type="missing",
            request_id=request_id,
        )
    tier = tier_of([_str(routing.get("tier")), chosen_group], config.group_tiers)
    if tier is None:
        shown = chosen_group if chosen_group is not None else "(none)"
        return Invalid(
            index=index,
            loc=("model_group",),
            msg=f"model_group {shown} has no tier: add it to litellm_group_tiers "
            "(SHADOWEVAL_LITELLM_GROUP_TIERS), or a '*' default",
            type="litellm_unmapped_group",
            request_id=request_id,
        )

    notes: dict[str, Any] = {}
    litellm_extra = _kept_extra(record, config)
    litellm_extra["chosen_model_group"] = chosen_group
    if failover:
        litellm_extra["attempted_fallbacks"] = attempted_fallbacks
        litellm_extra["attempted_retries"] = attempted_retries
        litellm_extra["failed_attempts"] = [_attempt_summary(a) for a in success.failed_attempts]
        if first is None and attempted_fallbacks > 0:
            # The failed first attempt was flushed in another batch: the group it was
            # sent to is unknown, so the tier is the serving group's.
            litellm_extra["chosen_model_group_unknown"] = True

    decision: dict[str, Any] = {
        "request_id": request_id,
        "router": config.router,
        "tier": tier,
        "chosen_model": chosen_model,
        "served_model": served_model or chosen_model,
        "failover": failover,
        "segment": segment_of(record, config),
    }
    decision.update(_timings(success, first))
    cost = _number(record.get("response_cost"))
    if cost is not None and cost >= 0:
        decision["cost_usd"] = cost
    usage = _usage(record)
    if usage:
        decision["usage"] = usage
    score = _number(routing.get("score"))
    if score is not None and 0.0 <= score <= 1.0:
        decision["router_score"] = score
        decision["score_semantics"] = str(routing.get("router_type") or "complexity")[:64]
    session_id = _str(record.get("session_id"))
    if session_id is not None and len(session_id) <= _MAX_TEXT:
        decision["session_id"] = session_id
    features: dict[str, float | int | str | bool] = {}
    if "input_tokens" in usage:
        features["input_tokens"] = usage["input_tokens"]
    messages = _messages(record)
    if messages is not None:
        features["message_count"] = len(messages)
    if isinstance(record.get("stream"), bool):
        features["stream"] = record["stream"]
    if features:
        decision["features"] = features
    decision.update(_payloads(record, notes))
    litellm_extra.update(notes)
    decision["litellm"] = litellm_extra
    return MappedDecision(index=index, decision=decision)


def _start_order(record: Mapping[str, Any]) -> tuple[bool, float]:
    start = _epoch_seconds(record.get("startTime"))
    return start is None, start or 0.0


def _same_request(failure: Mapping[str, Any], success: _Success) -> bool:
    """A failed attempt belongs to a success of its trace when it came first and asked the same.

    Clients may reuse one trace id for many requests (an agent run), so the trace
    alone does not make a failed request an earlier attempt of a later success.
    """
    failure_start = _epoch_seconds(failure.get("startTime"))
    if failure_start is not None and success.start is not None and failure_start > success.start:
        return False
    failure_messages, success_messages = _messages(failure), _messages(success.record)
    return (
        failure_messages is None
        or success_messages is None
        or (failure_messages == success_messages)
    )


def _unreadable(index: int, error: Exception) -> Invalid:
    """A record whose shape the readers above did not foresee: its own error, not the
    batch's (a record nested thousands of levels deep, for one)."""
    reason = "nests too deeply" if isinstance(error, RecursionError) else str(error)[:200]
    return Invalid(
        index=index, loc=(), msg=f"record cannot be read: {reason}", type="record_unreadable"
    )


def map_batch(
    records: Sequence[Any],
    config: AdapterConfig,
    *,
    unparsable: Mapping[int, str] | None = None,
) -> list[Mapped]:
    """Map every record of a batch, in order, linking the failed attempts of each request.

    `unparsable` holds the indexes of NDJSON lines that were not JSON, with why.
    """
    unparsable = unparsable or {}
    classified: list[Mapped | _Success] = []
    for index, raw in enumerate(records):
        if index in unparsable:
            classified.append(
                Invalid(index=index, loc=(), msg=unparsable[index], type="json_invalid")
            )
        else:
            try:
                classified.append(_classify(index, raw))
            except (RecursionError, ValueError, TypeError, AttributeError) as error:
                classified.append(_unreadable(index, error))

    successes_by_trace: dict[str, list[_Success]] = {}
    for item in classified:
        if isinstance(item, _Success) and (trace := _str(item.record.get("trace_id"))):
            successes_by_trace.setdefault(trace, []).append(item)
    for trace_successes in successes_by_trace.values():
        trace_successes.sort(key=lambda s: (s.start is None, s.start or 0.0, s.index))

    linked: dict[int, str | None] = {}
    for item in classified:
        if not isinstance(item, FailedCall) or item.trace_id is None:
            continue
        failure = records[item.index]
        # The first success of the request after this attempt is what it failed over to.
        target = next(
            (s for s in successes_by_trace.get(item.trace_id, []) if _same_request(failure, s)),
            None,
        )
        if target is not None:
            target.failed_attempts.append(failure)
            linked[item.index] = call_id_of(target.record)
    for trace_successes in successes_by_trace.values():
        for success in trace_successes:
            success.failed_attempts.sort(key=_start_order)

    mapped: list[Mapped] = []
    for item in classified:
        if isinstance(item, _Success):
            try:
                mapped.append(_decision(item, config))
            except (RecursionError, ValueError, TypeError, AttributeError) as error:
                mapped.append(_unreadable(item.index, error))
        elif isinstance(item, FailedCall) and item.index in linked:
            mapped.append(replace(item, failover_to=linked[item.index]))
        else:
            mapped.append(item)
    return mapped


def map_record(record: Any, config: AdapterConfig) -> Mapped:
    """One record alone (no other attempts of its request to link)."""
    return map_batch([record], config)[0]
