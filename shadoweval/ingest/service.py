"""Ingest service: ingest in-process (prepare → store), read decisions back.

The stages live beside it: prepare.py (validation, sampling, redaction, encoding),
store.py (bulk insert, budget, commit); HTTP routes reach them through submit.py.
Deleting decisions and purging payloads live in `shadoweval/retention.py`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import and_, or_, select
from sqlmodel import Session

from shadoweval import paging
from shadoweval.config import Settings
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.ingest.models import (
    DECISION_TABLE,
    PAYLOAD_TABLE,
    Decision,
    DecisionPage,
    DecisionPayload,
    DecisionPublic,
)
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.ingest.prepare import PreparedBatch, prepare_decisions
from shadoweval.ingest.store import IngestOutcome, store_prepared
from shadoweval.sampling.service import SamplingPlan

__all__ = [
    "DECISION_TABLE",
    "PAYLOAD_TABLE",
    "IngestOutcome",
    "PreparedBatch",
    "ingest_decisions",
    "prepare_decisions",
    "store_prepared",
]

SortOrder = Literal["asc", "desc"]


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
