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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shadoweval.ingest.adapters.litellm_fields import (
    CHAT_CALL_TYPES,
    MAX_TEXT,
    SOURCE_OF_FIELD,
    AdapterConfig,
    attempt_summary,
    call_id_of,
    count_or_none,
    dict_or_empty,
    epoch_seconds,
    header_of,
    kept_extra,
    messages_of,
    number_or_none,
    payloads_of,
    routing_decision_of,
    segment_of,
    served_model_of,
    status_of,
    text_or_none,
    tier_of,
    usage_of,
    utc_datetime,
)

__all__ = [
    "SOURCE_OF_FIELD",
    "AdapterConfig",
    "FailedCall",
    "Invalid",
    "Mapped",
    "MappedDecision",
    "Skipped",
    "map_batch",
    "map_record",
]


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


# --- one record, then a batch -----------------------------------------------------------


@dataclass
class _Success:
    index: int
    record: Mapping[str, Any]
    start: float | None
    failed_attempts: list[Mapping[str, Any]] = field(default_factory=list)


def _failed_call(index: int, record: Mapping[str, Any]) -> FailedCall:
    error = dict_or_empty(record.get("error_information"))
    return FailedCall(
        index=index,
        request_id=call_id_of(record),
        trace_id=text_or_none(record.get("trace_id")),
        model_group=text_or_none(record.get("model_group")),
        model=text_or_none(record.get("model")),
        error_class=text_or_none(error.get("error_class")),
        error_code=text_or_none(error.get("error_code")),
        ts=utc_datetime(epoch_seconds(record.get("startTime"))),
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
    if status_of(raw) == "failure":
        return _failed_call(index, raw)
    call_type = text_or_none(raw.get("call_type"))
    if call_type is not None and call_type not in CHAT_CALL_TYPES:
        return Skipped(index=index, request_id=request_id, call_type=call_type)
    return _Success(index=index, record=raw, start=epoch_seconds(raw.get("startTime")))


def _timings(success: _Success, first: Mapping[str, Any] | None) -> dict[str, Any]:
    """ts (when the request was first sent), latency_ms and ttft_ms (of the served call)."""
    record = success.record
    out: dict[str, Any] = {}
    first_start = epoch_seconds(first.get("startTime")) if first is not None else None
    ts = utc_datetime(first_start if first_start is not None else success.start)
    if ts is not None:
        out["ts"] = ts.isoformat()
    start, end = success.start, epoch_seconds(record.get("endTime"))
    response_time = number_or_none(record.get("response_time"))
    if start is not None and end is not None and end >= start:
        out["latency_ms"] = (end - start) * 1000.0
    elif response_time is not None and response_time >= 0:
        out["latency_ms"] = response_time * 1000.0
    first_token = epoch_seconds(record.get("completionStartTime"))
    streamed = record.get("stream") is True or dict_or_empty(record.get("model_parameters")).get(
        "stream"
    )
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
    served_group = text_or_none(record.get("model_group"))
    served_model = served_model_of(record)
    first = success.failed_attempts[0] if success.failed_attempts else None
    attempted_fallbacks = count_or_none(header_of(record, "x-litellm-attempted-fallbacks")) or 0
    attempted_retries = count_or_none(header_of(record, "x-litellm-attempted-retries")) or 0
    failover = bool(success.failed_attempts) or attempted_fallbacks > 0 or attempted_retries > 0

    # The routing decision is where the request went first: the first failed attempt's
    # group when one is in the batch, otherwise the group that served it.
    chosen_group = text_or_none(first.get("model_group")) if first else served_group
    chosen_group = chosen_group or served_group
    chosen_model = (text_or_none(first.get("model")) if first else None) or served_model
    routing = routing_decision_of(record)
    routed_model = text_or_none(routing.get("routed_model"))
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
    tier = tier_of([text_or_none(routing.get("tier")), chosen_group], config.group_tiers)
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
    litellm_extra = kept_extra(record, config)
    litellm_extra["chosen_model_group"] = chosen_group
    if failover:
        litellm_extra["attempted_fallbacks"] = attempted_fallbacks
        litellm_extra["attempted_retries"] = attempted_retries
        litellm_extra["failed_attempts"] = [attempt_summary(a) for a in success.failed_attempts]
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
    cost = number_or_none(record.get("response_cost"))
    if cost is not None and cost >= 0:
        decision["cost_usd"] = cost
    usage = usage_of(record)
    if usage:
        decision["usage"] = usage
    score = number_or_none(routing.get("score"))
    if score is not None and 0.0 <= score <= 1.0:
        decision["router_score"] = score
        decision["score_semantics"] = str(routing.get("router_type") or "complexity")[:64]
    session_id = text_or_none(record.get("session_id"))
    if session_id is not None and len(session_id) <= MAX_TEXT:
        decision["session_id"] = session_id
    features: dict[str, float | int | str | bool] = {}
    if "input_tokens" in usage:
        features["input_tokens"] = usage["input_tokens"]
    messages = messages_of(record)
    if messages is not None:
        features["message_count"] = len(messages)
    if isinstance(record.get("stream"), bool):
        features["stream"] = record["stream"]
    if features:
        decision["features"] = features
    decision.update(payloads_of(record, notes))
    litellm_extra.update(notes)
    decision["litellm"] = litellm_extra
    return MappedDecision(index=index, decision=decision)


def _start_order(record: Mapping[str, Any]) -> tuple[bool, float]:
    start = epoch_seconds(record.get("startTime"))
    return start is None, start or 0.0


def _same_request(failure: Mapping[str, Any], success: _Success) -> bool:
    """A failed attempt belongs to a success of its trace when it came first and asked the same.

    Clients may reuse one trace id for many requests (an agent run), so the trace
    alone does not make a failed request an earlier attempt of a later success.
    """
    failure_start = epoch_seconds(failure.get("startTime"))
    if failure_start is not None and success.start is not None and failure_start > success.start:
        return False
    failure_messages, success_messages = messages_of(failure), messages_of(success.record)
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
        if isinstance(item, _Success) and (trace := text_or_none(item.record.get("trace_id"))):
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
