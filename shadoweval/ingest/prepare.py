"""Ingest, first stage: validate posted items and turn the valid ones into rows.

Everything here runs without the database (the sampling plan is read from memory):
validation, the storability checks (storable.py), sampling at ingest, redaction and
encoding for the dialect's driver. It runs in the request's own thread, so one request is
prepared while another's rows are written (store.py).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import JSON

from shadoweval.config import Settings
from shadoweval.db import UtcDateTime, json_text, utcnow
from shadoweval.ingest import storable
from shadoweval.ingest.models import (
    AWAITING_PLAN,
    DECISION_TABLE,
    DecisionIn,
    ItemError,
    ItemResult,
)
from shadoweval.ingest.parsing import ParsedBody, RawJson
from shadoweval.ingest.redaction import Redactor
from shadoweval.sampling import policy
from shadoweval.sampling import service as sampling_service
from shadoweval.sampling.service import SamplingPlan


def _validation_errors(index: int, exc: ValidationError) -> list[ItemError]:
    return [
        ItemError.model_construct(
            # A field name may be a lone surrogate, which no JSON answer could carry.
            index=index,
            loc=[storable.printable(part) for part in error["loc"]],
            msg=error["msg"],
            type=error["type"],
        )
        for error in exc.errors(include_url=False, include_input=False)
    ]


@dataclass(slots=True)
class _Reservation:
    account: str
    cost_usd: float
    hash_value: float


@dataclass
class PendingDecision:
    """A valid, new-in-this-batch decision on its way into the database."""

    item: DecisionIn
    row: dict[str, Any]
    reservation: _Reservation
    payload: dict[str, Any] | None  # redacted request/response to keep, or None
    # Computed in prepare_decisions, so this work happens before, not while, the
    # database's write lock is held: the traffic stratum-hour, the row as the driver takes
    # it (in the row's column order), the payload's request and response as JSON text.
    traffic_key: tuple[str, str, str, datetime]
    values: list[Any] = field(default_factory=list)
    payload_json: tuple[str, str] | None = None


class _PlanLookup:
    """π per stratum for one batch: the plan is looked up once per stratum, not per item."""

    def __init__(self, settings: Settings, plan: SamplingPlan) -> None:
        self.settings, self.plan = settings, plan
        self.cache: dict[tuple[str, str, str], sampling_service.PlannedStratum] = {}

    def __call__(self, router: str, segment: str, tier: str) -> sampling_service.PlannedStratum:
        key = (router, segment, tier)
        planned = self.cache.get(key)
        if planned is None:
            planned = self.cache[key] = self.plan.lookup(self.settings, router, segment, tier)
        return planned


_AWAITING = sampling_service.PlannedStratum(inclusion_probability=0.0, cost_per_sample_usd=0.0)


def _decision_row(
    item: DecisionIn, *, settings: Settings, lookup: _PlanLookup, received_at: datetime
) -> tuple[dict[str, Any], _Reservation]:
    # __pydantic_extra__, not the model_extra property: this runs once per decision.
    extra = dict(item.__pydantic_extra__ or {})
    usage = item.usage
    if usage is not None and usage.__pydantic_extra__:
        extra["usage"] = dict(usage.__pydantic_extra__)
    segment_value = policy.segment_value_of(
        item.segment, settings.segment_key, settings.unlabelled_segment
    )
    ts = item.ts or received_at
    hash_value = policy.sampling_hash(item.router, item.request_id)
    if lookup.settings.sampling_mode == "hourly":
        # Decided by the planner once the decision's period closes (sampling.periods).
        planned = _AWAITING
        inclusion_probability, base_probability = 0.0, 0.0
        skip_reason: str | None = AWAITING_PLAN
    else:
        planned = lookup(item.router, segment_value, item.tier)
        inclusion_probability, base_probability = planned.probability_at(ts)
        skip_reason = None
    return {
        "router": item.router,
        "request_id": item.request_id,
        "router_version": item.router_version,
        "ts": ts,
        "received_at": received_at,
        "tier": item.tier,
        "chosen_model": item.chosen_model,
        "served_model": item.served_model or item.chosen_model,
        "failover": item.failover,
        "fallback": item.fallback,
        "candidates": [c.model_dump(mode="json", exclude_none=True) for c in item.candidates]
        if item.candidates
        else [],
        "router_score": item.router_score,
        "score_semantics": item.score_semantics,
        "threshold": item.threshold,
        "segment": item.segment,
        "segment_value": segment_value,
        "features": item.features,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cache_read_tokens": usage.cache_read_tokens if usage else None,
        "cost_usd": item.cost_usd,
        "latency_ms": item.latency_ms,
        "router_cost_usd": item.router_cost_usd,
        "router_latency_ms": item.router_latency_ms,
        "escalated_from": item.escalated_from,
        "session_id": item.session_id,
        "extra": extra,
        "has_request": item.request is not None,
        "has_response": item.response is not None,
        "inclusion_probability": inclusion_probability,
        "sampled": hash_value < inclusion_probability,
        "payload_stored": False,
        "payload_redacted": False,
        "sampling_skip_reason": skip_reason,
    }, _Reservation(
        # Sampled only thanks to a boost: the boost budget pays.
        account=sampling_service.SHADOW_ACCOUNT
        if hash_value < base_probability
        else sampling_service.BOOST_ACCOUNT,
        cost_usd=planned.cost_per_sample_usd,
        hash_value=hash_value,
    )


def _hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


@functools.lru_cache(maxsize=8)
def _redactor(patterns: tuple[tuple[str, str], ...]) -> Redactor:
    return Redactor.from_patterns(dict(patterns))


def _keeps_payload(settings: Settings, item: DecisionIn, sampled: bool) -> bool:
    if item.request is None and item.response is None:
        return False
    if settings.store_payloads == "all":
        return True
    # Hourly sampling decides later: the payload waits with the decision, and the planner
    # deletes it again unless the decision is sampled.
    return settings.store_payloads == "sampled" and (sampled or settings.sampling_mode == "hourly")


def _redacted_payload(redactor: Redactor, item: DecisionIn) -> tuple[dict[str, Any], bool]:
    """The payload as the router sent it (validated, no filled-in defaults), redacted."""
    request, request_hits = redactor.payload(
        item.request.model_dump(mode="json", exclude_unset=True) if item.request else None
    )
    response, response_hits = redactor.payload(
        item.response.model_dump(mode="json", exclude_unset=True) if item.response else None
    )
    return {"request": request, "response": response}, bool(request_hits or response_hits)


@functools.cache
def _driver_values(names: tuple[str, ...], dialect: str) -> Callable[[dict[str, Any]], list[Any]]:
    """A function from a row dict to `dialect`'s driver parameters, in `names` order."""
    encoders = _PG_ENCODERS if dialect == "postgresql" else _SQLITE_ENCODERS
    pick = operator.itemgetter(*names)
    encode_at = [(i, encoders[name]) for i, name in enumerate(names) if name in encoders]

    def values(row: dict[str, Any]) -> list[Any]:
        out = list(pick(row))
        for i, encode in encode_at:
            if out[i] is not None:
                out[i] = encode(out[i])
        return out

    return values


# Every row of a batch shares one received_at, so its text is kept.
@functools.lru_cache(maxsize=8)
def sqlite_datetime_text(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME text form of the naive UTC time (see db.UtcDateTime):
    # "YYYY-MM-DD HH:MM:SS.ffffff", cut from isoformat (~10× faster than strftime).
    utc = value.astimezone(UTC) if value.utcoffset() else value
    return utc.isoformat(" ", "microseconds")[:26]


_JSON_COLUMNS = frozenset(
    name for name, column in DECISION_TABLE.c.items() if isinstance(column.type, JSON)
)


def _json_column_text(value: Any) -> str:
    # Most decisions carry no candidates or extras: their text is known.
    if not value and type(value) in (dict, list):
        return "{}" if type(value) is dict else "[]"
    return json_text(value)


_SQLITE_ENCODERS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(_JSON_COLUMNS, _json_column_text),
    **{
        name: sqlite_datetime_text
        for name, column in DECISION_TABLE.c.items()
        if isinstance(column.type, UtcDateTime)
    },
}
# JSON columns travel as text (in COPY and as parameters); PostgreSQL parses them into jsonb.
_PG_ENCODERS: dict[str, Callable[[Any], Any]] = dict.fromkeys(_JSON_COLUMNS, _json_column_text)


@dataclass
class PreparedBatch:
    """One posted body, validated and turned into rows: all of ingest that needs no database.

    Prepared in the request's own thread, so one request is validated while another's
    rows are written (store_prepared).
    """

    results: list[ItemResult | None]  # the invalid items' results; the rest come at store time
    errors: list[ItemError]
    valid: list[tuple[int, DecisionIn]]
    # New-in-this-body decisions by (router, request_id).
    pending: dict[tuple[str, str], PendingDecision]
    first_index_of_key: dict[tuple[str, str], int]

    @property
    def size(self) -> int:
        """Items in the body, valid or not."""
        return len(self.results)


def _invalid_result(index: int, raw: Any) -> ItemResult:
    """An invalid item's result, naming its router and request id when they can be shown."""
    known = raw if isinstance(raw, dict) else {}
    request_id, router = known.get("request_id"), known.get("router")
    return ItemResult(
        index=index,
        status="invalid",
        request_id=request_id if storable.is_printable(request_id) else None,
        router=router if storable.is_printable(router) else None,
    )


def prepare_decisions(
    *, settings: Settings, parsed: ParsedBody, dialect: str, plan: SamplingPlan | None = None
) -> PreparedBatch:
    """Validate every item and build the rows of the valid ones (sampling, redaction),
    encoded for `dialect`'s driver.

    An item is invalid when pydantic refuses it, when it holds a value no database
    stores (storable.py: checked on bodies that may hold one), or when it cannot be
    encoded at all; either way the other items go on.
    """
    received_at = utcnow()
    lookup = _PlanLookup(settings, plan or SamplingPlan())
    redactor = _redactor(tuple(settings.redaction_patterns.items()))
    results: list[ItemResult | None] = [None] * len(parsed.items)
    errors: list[ItemError] = []
    validated: list[tuple[int, DecisionIn]] = []

    def reject(index: int, raw: Any, loc: list[str | int], msg: str, kind: str) -> None:
        errors.append(ItemError.model_construct(index=index, loc=loc, msg=msg, type=kind))
        results[index] = _invalid_result(index, raw)

    for index, raw in enumerate(parsed.items):
        if index in parsed.unparsable:
            reject(index, None, [], parsed.unparsable[index], "json_invalid")
            continue
        try:
            if type(raw) is RawJson:
                item = DecisionIn.model_validate_json(raw)
            else:
                item = DecisionIn.model_validate(raw)
        except ValidationError as exc:
            error: ValidationError | None = exc
            if type(raw) is RawJson:
                raw, unreadable = raw.decoded()
                if unreadable is not None:
                    reject(index, None, [], unreadable, "json_invalid")
                    continue
                # pydantic-core's parser stops at ~200 levels, Python's does not: validate
                # what Python read, so the item's error names its field, as for JSON.
                error = None
                try:
                    item = DecisionIn.model_validate(raw)
                except ValidationError as python_error:
                    error = python_error
            if error is not None:
                errors.extend(_validation_errors(index, error))
                results[index] = _invalid_result(index, raw)
                continue
        if parsed.suspect:
            if type(raw) is RawJson:
                raw, _ = raw.decoded()
            problem = storable.first_problem(raw)
            if problem is not None:
                reject(index, raw, *problem)
                continue
        validated.append((index, item))

    pending: dict[tuple[str, str], PendingDecision] = {}
    first_index_of_key: dict[tuple[str, str], int] = {}
    unencodable: set[int] = set()
    to_driver: Callable[[dict[str, Any]], list[Any]] | None = None
    for index, item in validated:
        key = (item.router, item.request_id)
        if key in first_index_of_key:
            continue
        row, reservation = _decision_row(
            item, settings=settings, lookup=lookup, received_at=received_at
        )
        payload = None
        if _keeps_payload(settings, item, row["sampled"]):
            # Decided before the insert, so the decision row is written once, complete.
            payload, row["payload_redacted"] = _redacted_payload(redactor, item)
            row["payload_stored"] = True
        traffic_key = (item.router, row["segment_value"], item.tier, _hour(row["ts"]))
        entry = PendingDecision(item, row, reservation, payload, traffic_key)
        try:
            if to_driver is None:
                # Every row has the same columns in the same order (_decision_row).
                to_driver = _driver_values(tuple(row), dialect)
            entry.values = to_driver(row)
            if payload is not None:
                # As SQLAlchemy's JSON type stores them: a missing side is JSON null.
                entry.payload_json = (json_text(payload["request"]), json_text(payload["response"]))
        except ValueError as exc:
            # What the storability check did not foresee still costs only this item
            # (pydantic-core's encoding errors are ValueErrors).
            unencodable.add(index)
            reject(index, None, [], f"cannot be stored: {exc}", "unstorable")
            continue
        first_index_of_key[key] = index
        pending[key] = entry
    valid = [(index, item) for index, item in validated if index not in unencodable]
    return PreparedBatch(results, errors, valid, pending, first_index_of_key)
