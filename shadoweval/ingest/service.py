"""Ingest service: validate decisions, decide sampling, store them idempotently, read them back."""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import pydantic_core
from pydantic import BaseModel, ValidationError
from sqlalchemy import JSON, Table, and_, func, or_, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shadoweval import paging
from shadoweval.analytics.models import TRAFFIC_SUMS
from shadoweval.config import Settings
from shadoweval.db import UtcDateTime, json_text, take_sqlite_write_lock, utcnow
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.ingest.models import (
    AWAITING_PLAN,
    Decision,
    DecisionIn,
    DecisionPage,
    DecisionPayload,
    DecisionPublic,
    ItemError,
    ItemResult,
    TrafficDelta,
)
from shadoweval.ingest.parsing import ParsedBody, RawJson
from shadoweval.ingest.redaction import Redactor
from shadoweval.sampling import policy
from shadoweval.sampling import service as sampling_service
from shadoweval.sampling.service import Candidate, SamplingPlan

log = logging.getLogger(__name__)

DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
PAYLOAD_TABLE = cast(Table, DecisionPayload.__table__)  # type: ignore[attr-defined]
DELTA_TABLE = cast(Table, TrafficDelta.__table__)  # type: ignore[attr-defined]

SortOrder = Literal["asc", "desc"]


@dataclass
class IngestOutcome:
    results: list[ItemResult]
    errors: list[ItemError] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for result in self.results if result.status == status)


def _validation_errors(index: int, exc: ValidationError) -> list[ItemError]:
    return [
        ItemError.model_construct(
            index=index, loc=list(error["loc"]), msg=error["msg"], type=error["type"]
        )
        for error in exc.errors(include_url=False, include_input=False)
    ]


@dataclass(slots=True)
class _Reservation:
    account: str
    cost_usd: float
    hash_value: float


@dataclass
class _Pending:
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


def _count_traffic(session: Session, entries: Sequence[_Pending]) -> None:
    """Append the stored decisions' counts per stratum-hour (the top of the coverage funnel).

    Appended as deltas, never upserted into the snapshot rows every writer shares: concurrent
    ingest transactions do not wait on each other's row locks. The aggregator job folds them.
    """
    counts: dict[tuple[str, str, str, datetime], dict[str, float]] = {}
    for pending in entries:
        row = pending.row
        entry = counts.get(pending.traffic_key)
        if entry is None:
            entry = counts[pending.traffic_key] = dict.fromkeys(TRAFFIC_SUMS, 0.0)
        entry["decisions"] += 1
        entry["sampled"] += row["sampled"]
        entry["budget_refused"] += row["sampling_skip_reason"] == "budget_exhausted"
        entry["with_payload"] += row["has_request"]
        entry["failover"] += row["failover"]
        entry["fallback"] += row["fallback"]
        entry["escalated"] += row["escalated_from"] is not None
        entry["cost_usd"] += row["cost_usd"] or 0.0
        entry["router_cost_usd"] += row["router_cost_usd"] or 0.0
    if counts:
        session.execute(
            DELTA_TABLE.insert(),
            [
                {
                    "router": router,
                    "segment_value": segment,
                    "tier": tier,
                    "window_start": hour,
                    **{k: (v if k.endswith("usd") else int(v)) for k, v in sums.items()},
                }
                for (router, segment, tier, hour), sums in counts.items()
            ],
        )


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


def _insert_new_decisions(
    session: Session, entries: Sequence[_Pending]
) -> dict[tuple[str, str], int]:
    """INSERT … ON CONFLICT (router, request_id) DO NOTHING; returns ids of rows really inserted.

    Concurrent resends of one batch race on the unique key; the database decides
    the winner, so nothing is stored twice and no request fails.

    Sent to the driver directly: SQLAlchemy's multi-row VALUES with RETURNING spent
    more time binding parameters than SQLite spent storing them, and on PostgreSQL the
    statement outgrew psycopg's query cache, which then re-parsed it with regexes on
    every batch (over half of the ingest time).
    """
    names = list(entries[0].row)
    columns = ", ".join(names)
    driver: Any = session.connection().connection.driver_connection
    inserted: dict[tuple[str, str], int] = {}
    if session.get_bind().dialect.name == "postgresql" and len(entries) < _PG_COPY_MIN_ROWS:
        # Pipelined: one round trip for the batch, the statement prepared once.
        with driver.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO decision ({columns}) VALUES ({', '.join(['%s'] * len(names))}) "  # noqa: S608 (the table's columns)
                "ON CONFLICT (router, request_id) DO NOTHING RETURNING id, router, request_id",
                [entry.values for entry in entries],
                returning=True,
            )
            while True:
                for decision_id, router, request_id in cursor.fetchall():
                    inserted[(router, request_id)] = decision_id
                if not cursor.nextset():
                    break
        return inserted
    if session.get_bind().dialect.name == "postgresql":
        # COPY into a per-connection staging table, then one INSERT … SELECT: 1.5× the
        # rows/s of a pipelined executemany (30,000 rows: 25,800/s against 17,400/s).
        # Emptied at commit; a second use in one transaction re-offers rows the first
        # stored, which ON CONFLICT skips.
        with driver.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGING} ON COMMIT DELETE ROWS "  # noqa: S608 (the table's columns)
                f"AS SELECT {columns} FROM decision WITH NO DATA"
            )
            with cursor.copy(f"COPY {_PG_STAGING} ({columns}) FROM STDIN") as copy:
                for entry in entries:
                    copy.write_row(entry.values)
            cursor.execute(
                f"INSERT INTO decision ({columns}) SELECT {columns} FROM {_PG_STAGING} "  # noqa: S608 (the table's columns)
                "ON CONFLICT (router, request_id) DO NOTHING RETURNING id, router, request_id"
            )
            for decision_id, router, request_id in cursor.fetchall():
                inserted[(router, request_id)] = decision_id
        return inserted
    # SQLite, holding the write lock from here to the commit: no other writer can take
    # ids, so the rows this statement inserted are exactly those above the current
    # maximum. Multi-row statements and one aggregate read-back keep sqlite3 calls per
    # batch constant: each call releases the GIL, and with other threads validating, a
    # per-row statement waited up to the 5 ms switch interval to get it back, per row.
    take_sqlite_write_lock(session)
    cursor = driver.cursor()
    try:
        (watermark,) = cursor.execute("SELECT coalesce(max(id), 0) FROM decision").fetchone()
        _insert_sqlite_rows(
            cursor, "decision", names, [entry.values for entry in entries], _ON_CONFLICT_SKIP
        )
        (listing,) = cursor.execute(
            "SELECT json_group_array(json_array(id, router, request_id)) "
            "FROM decision WHERE id > ?",
            (watermark,),
        ).fetchone()
    finally:
        cursor.close()
    for decision_id, router, request_id in pydantic_core.from_json(listing):
        inserted[(router, request_id)] = decision_id
    return inserted


# Stays within every SQLite build's SQLITE_MAX_VARIABLE_NUMBER (32,766 since 3.32).
_SQLITE_MAX_PARAMETERS = 32_000
_ON_CONFLICT_SKIP = " ON CONFLICT (router, request_id) DO NOTHING"


def _insert_sqlite_rows(
    cursor: Any, table: str, names: Sequence[str], rows: Sequence[Sequence[Any]], suffix: str = ""
) -> None:
    """INSERT rows of driver values with as few multi-row statements as SQLite allows."""
    placeholders = "(" + ", ".join(["?"] * len(names)) + ")"
    per_statement = max(1, _SQLITE_MAX_PARAMETERS // len(names))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608 (our tables and columns)
            f"VALUES {', '.join([placeholders] * len(chunk))}{suffix}",
            [value for row in chunk for value in row],
        )


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
def _sqlite_datetime(value: datetime) -> str:
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
        name: _sqlite_datetime
        for name, column in DECISION_TABLE.c.items()
        if isinstance(column.type, UtcDateTime)
    },
}
# Below this many rows the staging table's set-up costs more than COPY saves, and a
# single post's latency matters more than throughput.
_PG_COPY_MIN_ROWS = 100
# JSON columns travel as text (in COPY and as parameters); PostgreSQL parses them into jsonb.
_PG_ENCODERS: dict[str, Callable[[Any], Any]] = dict.fromkeys(_JSON_COLUMNS, _json_column_text)
_PG_STAGING = "decision_ingest_staging"


@dataclass
class PreparedBatch:
    """One posted body, validated and turned into rows: all of ingest that needs no database.

    Prepared in the request's own thread, so one request is validated while another's
    rows are written (store_prepared).
    """

    results: list[ItemResult | None]  # the invalid items' results; the rest come at store time
    errors: list[ItemError]
    valid: list[tuple[int, DecisionIn]]
    pending: dict[tuple[str, str], _Pending]  # new-in-this-body decisions by (router, request_id)
    first_index_of_key: dict[tuple[str, str], int]

    @property
    def size(self) -> int:
        """Items in the body, valid or not."""
        return len(self.results)


def ingest_decisions(
    *,
    session: Session,
    settings: Settings,
    parsed: ParsedBody,
    plan: SamplingPlan | None = None,
    write_lock: AbstractContextManager[object] | None = None,
) -> IngestOutcome:
    """Validate every item, store the valid new ones in one transaction, report per item.

    Invalid items never block valid ones: the caller answers 422 listing the
    invalid ones, and a resend of the whole batch stores nothing twice.
    """
    prepared = prepare_decisions(
        settings=settings, parsed=parsed, plan=plan, dialect=session.get_bind().dialect.name
    )
    (outcome,) = store_prepared(
        session=session, settings=settings, batches=[prepared], write_lock=write_lock
    )
    return outcome


def prepare_decisions(
    *, settings: Settings, parsed: ParsedBody, dialect: str, plan: SamplingPlan | None = None
) -> PreparedBatch:
    """Validate every item and build the rows of the valid ones (sampling, redaction),
    encoded for `dialect`'s driver."""
    received_at = utcnow()
    lookup = _PlanLookup(settings, plan or SamplingPlan())
    redactor = _redactor(tuple(settings.redaction_patterns.items()))
    results: list[ItemResult | None] = [None] * len(parsed.items)
    errors: list[ItemError] = []
    valid: list[tuple[int, DecisionIn]] = []

    for index, raw in enumerate(parsed.items):
        if index in parsed.unparsable:
            errors.append(
                ItemError.model_construct(
                    index=index, loc=[], msg=parsed.unparsable[index], type="json_invalid"
                )
            )
            results[index] = ItemResult(index=index, status="invalid")
            continue
        try:
            if type(raw) is RawJson:
                item = DecisionIn.model_validate_json(raw)
            else:
                item = DecisionIn.model_validate(raw)
        except ValidationError as exc:
            if type(raw) is RawJson:
                raw, unreadable = raw.decoded()
                if unreadable is not None:
                    errors.append(
                        ItemError.model_construct(
                            index=index, loc=[], msg=unreadable, type="json_invalid"
                        )
                    )
                    results[index] = ItemResult(index=index, status="invalid")
                    continue
            errors.extend(_validation_errors(index, exc))
            known = raw if isinstance(raw, dict) else {}
            request_id, router = known.get("request_id"), known.get("router")
            results[index] = ItemResult(
                index=index,
                status="invalid",
                request_id=request_id if isinstance(request_id, str) else None,
                router=router if isinstance(router, str) else None,
            )
            continue
        valid.append((index, item))

    pending: dict[tuple[str, str], _Pending] = {}
    first_index_of_key: dict[tuple[str, str], int] = {}
    for index, item in valid:
        key = (item.router, item.request_id)
        if key in first_index_of_key:
            continue
        first_index_of_key[key] = index
        row, reservation = _decision_row(
            item, settings=settings, lookup=lookup, received_at=received_at
        )
        payload = None
        if _keeps_payload(settings, item, row["sampled"]):
            # Decided before the insert, so the decision row is written once, complete.
            payload, row["payload_redacted"] = _redacted_payload(redactor, item)
            row["payload_stored"] = True
        traffic_key = (item.router, row["segment_value"], item.tier, _hour(row["ts"]))
        pending[key] = _Pending(item, row, reservation, payload, traffic_key)
    if pending:
        # Every row has the same columns in the same order (_decision_row).
        to_driver = _driver_values(tuple(next(iter(pending.values())).row), dialect)
        for entry in pending.values():
            entry.values = to_driver(entry.row)
            if entry.payload is not None:
                # As SQLAlchemy's JSON type stores them: a missing side is JSON null.
                entry.payload_json = (
                    json_text(entry.payload["request"]),
                    json_text(entry.payload["response"]),
                )
    return PreparedBatch(results, errors, valid, pending, first_index_of_key)


def store_prepared(
    *,
    session: Session,
    settings: Settings,
    batches: Sequence[PreparedBatch],
    write_lock: AbstractContextManager[object] | None = None,
) -> list[IngestOutcome]:
    """Store prepared bodies in one transaction; one outcome per body, in order.

    A decision in several bodies is stored once, for the first body; the others see a
    duplicate. `write_lock`, when given, is held from the first write to the commit
    only (see db.ingest_write_lock).
    """
    pending: dict[tuple[str, str], _Pending] = {}
    for batch in batches:
        for key, entry in batch.pending.items():
            pending.setdefault(key, entry)
    with write_lock or contextlib.nullcontext():
        inserted = _store(session, settings, pending)

    outcomes = []
    for batch in batches:
        results = list(batch.results)
        for index, item in batch.valid:
            key = (item.router, item.request_id)
            entry = pending[key]
            new = (
                batch.first_index_of_key[key] == index
                and entry is batch.pending[key]
                and key in inserted
            )
            results[index] = ItemResult(
                index=index,
                status="stored" if new else "duplicate",
                request_id=item.request_id,
                router=item.router,
                id=inserted[key] if new else None,
                # A duplicate keeps what was decided when it was first stored.
                sampled=entry.row["sampled"] if new else None,
                inclusion_probability=entry.row["inclusion_probability"] if new else None,
            )
        outcomes.append(
            IngestOutcome(results=[r for r in results if r is not None], errors=batch.errors)
        )
    return outcomes


def _store(
    session: Session, settings: Settings, pending: dict[tuple[str, str], _Pending]
) -> dict[tuple[str, str], int]:
    """Write the pending decisions, their payloads, budget and traffic counts; commit.

    A failure rolls back here, so no write lock outlives the call.
    """
    try:
        return _write_and_commit(session, settings, pending)
    except BaseException:
        session.rollback()
        raise


def _write_and_commit(
    session: Session, settings: Settings, pending: dict[tuple[str, str], _Pending]
) -> dict[tuple[str, str], int]:
    inserted = _insert_new_decisions(session, list(pending.values())) if pending else {}
    _insert_payloads(session, pending, inserted)
    # Last before the commit: on PostgreSQL the budget row stays locked until then.
    _reserve_budget(session, settings, inserted, pending)
    _count_traffic(session, [pending[key] for key in inserted])
    session.commit()
    return inserted


def _insert_payloads(
    session: Session,
    pending: dict[tuple[str, str], _Pending],
    inserted: dict[tuple[str, str], int],
) -> None:
    dialect = session.get_bind().dialect.name
    names = ("decision_id", "request", "response", "stored_at")
    rows = [
        (
            decision_id,
            *pending[key].payload_json,  # type: ignore[misc]
            _sqlite_datetime(pending[key].row["received_at"])
            if dialect == "sqlite"
            else pending[key].row["received_at"],
        )
        for key, decision_id in inserted.items()
        if pending[key].payload_json is not None
    ]
    if not rows:
        return
    driver: Any = session.connection().connection.driver_connection
    if dialect == "sqlite":
        cursor = driver.cursor()
        try:
            _insert_sqlite_rows(cursor, "decision_payload", names, rows)
        finally:
            cursor.close()
        return
    with driver.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO decision_payload ({', '.join(names)}) VALUES (%s, %s, %s, %s)",  # noqa: S608 (our columns)
            rows,
        )


def _reserve_budget(
    session: Session,
    settings: Settings,
    inserted: dict[tuple[str, str], int],
    pending: dict[tuple[str, str], _Pending],
) -> None:
    """Reserve the budget of newly sampled decisions; unsample the ones it cannot cover.

    Refused decisions keep no inclusion probability (π = 0: they could not have been
    sampled) and say why, so the coverage funnel counts them; a payload kept only
    because the decision was sampled is removed again.
    """
    candidates = [
        Candidate(
            decision_id=decision_id,
            day=pending[key].row["ts"].strftime("%Y-%m-%d"),
            account=pending[key].reservation.account,
            cost_usd=pending[key].reservation.cost_usd,
            hash_value=pending[key].reservation.hash_value,
        )
        for key, decision_id in inserted.items()
        if pending[key].row["sampled"]
    ]
    if not candidates:
        return
    refused = set(sampling_service.reserve_budget(session, settings, candidates).refused_ids)
    if not refused:
        return
    values: dict[str, Any] = {
        "sampled": False,
        "inclusion_probability": 0.0,
        "sampling_skip_reason": "budget_exhausted",
    }
    drop_payloads = settings.store_payloads == "sampled"
    if drop_payloads:
        values.update(payload_stored=False, payload_redacted=False)
        session.execute(PAYLOAD_TABLE.delete().where(PAYLOAD_TABLE.c.decision_id.in_(refused)))
    session.execute(
        DECISION_TABLE.update().where(DECISION_TABLE.c.id.in_(sorted(refused))).values(**values)
    )
    for key, decision_id in inserted.items():
        if decision_id in refused:
            pending[key].row.update(values)


# --- reading ------------------------------------------------------------------------------


def _encode_cursor(decision: Decision, order: SortOrder) -> str:
    return paging.encode_keyset(decision.ts, cast(int, decision.id), order=order)


def _decode_cursor(cursor: str, order: SortOrder) -> tuple[datetime, int]:
    key = paging.decode_keyset(cursor, extra=("order",))
    if key.extra["order"] != order:
        raise InvalidRequest(f"cursor was issued for order={key.extra['order']}, not order={order}")
    return key.ts, key.id


def to_public(decision: Decision, payload: DecisionPayload | None = None) -> DecisionPublic:
    assert decision.id is not None
    data = decision.model_dump()
    data["usage"] = {
        "input_tokens": decision.input_tokens,
        "output_tokens": decision.output_tokens,
        "cache_read_tokens": decision.cache_read_tokens,
    }
    if payload is not None:
        data["request"], data["response"] = payload.request, payload.response
    return DecisionPublic.model_validate(data)


def list_decisions(
    *,
    session: Session,
    router: str | None = None,
    tier: str | None = None,
    segment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sampled: bool | None = None,
    order: SortOrder = "asc",
    cursor: str | None = None,
    limit: int = 100,
) -> DecisionPage:
    """Decisions in (ts, id) order with keyset pagination; `since` inclusive, `until` exclusive."""
    query = select(Decision)
    columns = DECISION_TABLE.c
    if router is not None:
        query = query.where(columns.router == router)
    if tier is not None:
        query = query.where(columns.tier == tier)
    if segment is not None:
        query = query.where(columns.segment_value == segment)
    if since is not None:
        query = query.where(columns.ts >= since)
    if until is not None:
        query = query.where(columns.ts < until)
    if sampled is not None:
        query = query.where(columns.sampled == sampled)
    if cursor is not None:
        after_ts, after_id = _decode_cursor(cursor, order)
        if order == "asc":
            query = query.where(
                or_(columns.ts > after_ts, and_(columns.ts == after_ts, columns.id > after_id))
            )
        else:
            query = query.where(
                or_(columns.ts < after_ts, and_(columns.ts == after_ts, columns.id < after_id))
            )
    if order == "asc":
        query = query.order_by(columns.ts.asc(), columns.id.asc())
    else:
        query = query.order_by(columns.ts.desc(), columns.id.desc())
    decisions = list(session.scalars(query.limit(limit + 1)))
    next_cursor = _encode_cursor(decisions[limit - 1], order) if len(decisions) > limit else None
    return DecisionPage(items=[to_public(d) for d in decisions[:limit]], next_cursor=next_cursor)


def get_decision(*, session: Session, decision_id: int) -> DecisionPublic:
    decision = session.get(Decision, decision_id)
    if decision is None:
        raise NotFound(f"decision {decision_id} does not exist")
    return to_public(decision, session.get(DecisionPayload, decision_id))


# --- retention and deletion ---------------------------------------------------------------


class DeletionResult(BaseModel):
    decisions: int
    payloads: int
    shadow_runs: int
    verdicts: int
    feedback: int = 0
    gate_items: int = 0


def _selection(router: str | None, request_id: str | None, segment: str | None) -> Any:
    columns = DECISION_TABLE.c
    conditions = [
        column == value
        for column, value in (
            (columns.router, router),
            (columns.request_id, request_id),
            (columns.segment_value, segment),
        )
        if value is not None
    ]
    if not conditions:
        raise InvalidRequest("name what to delete: router, request_id and/or segment")
    return and_(*conditions)


def delete_decisions(
    *,
    session: Session,
    router: str | None = None,
    request_id: str | None = None,
    segment: str | None = None,
    payloads_only: bool = False,
) -> DeletionResult:
    """Delete decisions (with their payloads, shadow runs, verdicts, gate items, human
    feedback and review labels), or only their payloads (request and every answer text).

    Window snapshots keep their counts: they hold sums, no request content.
    """
    from shadoweval.feedback.service import delete_feedback_for
    from shadoweval.gate.models import GateItem
    from shadoweval.judge.models import Verdict
    from shadoweval.shadow.models import ShadowRun

    runs = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]
    verdicts = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
    gate_items = cast(Table, GateItem.__table__)  # type: ignore[attr-defined]
    ids = select(DECISION_TABLE.c.id).where(_selection(router, request_id, segment))
    counted = {
        name: int(session.scalar(select(func.count()).where(column.in_(ids))) or 0)
        for name, column in (
            ("decisions", DECISION_TABLE.c.id),
            ("payloads", PAYLOAD_TABLE.c.decision_id),
            ("shadow_runs", runs.c.decision_id),
            ("verdicts", verdicts.c.decision_id),
            ("gate_items", gate_items.c.decision_id),
        )
    }
    session.execute(PAYLOAD_TABLE.delete().where(PAYLOAD_TABLE.c.decision_id.in_(ids)))
    # Answers from shadow runs and gate replays are payload too.
    _clear_answers(session, ids)
    if payloads_only:
        session.execute(
            DECISION_TABLE.update().where(DECISION_TABLE.c.id.in_(ids)).values(payload_stored=False)
        )
        session.commit()
        return DeletionResult(decisions=0, payloads=counted["payloads"], shadow_runs=0, verdicts=0)
    # Feedback is keyed by (router, request_id), not by a foreign key: delete it per router
    # before the decisions that name its routers go.
    routers = set(
        session.scalars(
            select(DECISION_TABLE.c.router)
            .where(_selection(router, request_id, segment))
            .distinct()
        )
    )
    if router is not None:
        routers.add(router)
    counted["feedback"] = sum(
        delete_feedback_for(
            session,
            name,
            request_ids=[request_id] if request_id is not None else None,
            segment_value=segment,
        ).feedback
        for name in sorted(routers)
    )
    # Children first: the same on databases that do and do not enforce ON DELETE CASCADE.
    session.execute(gate_items.delete().where(gate_items.c.decision_id.in_(ids)))
    session.execute(verdicts.delete().where(verdicts.c.decision_id.in_(ids)))
    session.execute(runs.delete().where(runs.c.decision_id.in_(ids)))
    session.execute(DECISION_TABLE.delete().where(DECISION_TABLE.c.id.in_(ids)))
    session.commit()
    log.warning(
        "deleted decisions (router=%s request_id=%s segment=%s): %s",
        router,
        request_id,
        segment,
        counted,
    )
    return DeletionResult(**counted)


def _clear_answers(connection: Connection | Session, decision_ids: Any) -> None:
    """Blank the answer texts kept beside decisions: shadow runs' and gate replays'."""
    from shadoweval.gate.models import GateItem
    from shadoweval.shadow.models import ShadowRun

    runs = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]
    gate_items = cast(Table, GateItem.__table__)  # type: ignore[attr-defined]
    connection.execute(
        runs.update().where(runs.c.decision_id.in_(decision_ids)).values(response_text=None)
    )
    connection.execute(
        gate_items.update()
        .where(gate_items.c.decision_id.in_(decision_ids))
        .values(candidate_answer=None, replaced_answer=None)
    )


def purge_expired_payloads(
    engine: Any, *, retention_days: float, now: datetime | None = None, batch: int = 1000
) -> int:
    """Delete payloads stored longer than the retention period; returns how many."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    total = 0
    while True:
        with engine.begin() as connection:
            ids = [
                row[0]
                for row in connection.execute(
                    select(PAYLOAD_TABLE.c.decision_id)
                    .where(PAYLOAD_TABLE.c.stored_at < cutoff)
                    .limit(batch)
                )
            ]
            if not ids:
                return total
            connection.execute(PAYLOAD_TABLE.delete().where(PAYLOAD_TABLE.c.decision_id.in_(ids)))
            _clear_answers(connection, ids)
            connection.execute(
                DECISION_TABLE.update()
                .where(DECISION_TABLE.c.id.in_(ids))
                .values(payload_stored=False)
            )
            total += len(ids)
