"""The decision log (v1): the wire schema routers post, and the tables it is stored in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)
from sqlalchemy import Column, ForeignKey, Index, UniqueConstraint, text
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, JsonType, UtcDateTime
from shadoweval.sql import table_of

# sampling_skip_reason of a decision whose sampling period is still open (hourly sampling).
AWAITING_PLAN = "awaiting_plan"

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
TierName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
LabelValue = Annotated[str, StringConstraints(max_length=200)]
NonNegative = Annotated[float, Field(ge=0)]


# --- wire schema ---------------------------------------------------------------------------

# A day inside Python's datetime range at both ends: windows, hours and budget days are
# computed around a decision's `ts`, and must not step outside it.
_EARLIEST_TS = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
_LATEST_TS = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def _representable_in_utc(value: datetime) -> datetime:
    """The time as given, if it and a day around it exist in UTC (0001-01-01T00:00+01:00
    does not); its offset is kept, the database stores it in UTC."""
    if 1 < value.year < 9999:
        return value  # an offset moves it by less than a day: no conversion per decision
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not _EARLIEST_TS <= utc <= _LATEST_TS:
        raise ValueError(
            f"time out of range: must lie between {_EARLIEST_TS.date().isoformat()} and "
            f"{_LATEST_TS.date().isoformat()} in UTC"
        )
    return value


DecisionTime = Annotated[AwareDatetime, AfterValidator(_representable_in_utc)]


class Candidate(BaseModel):
    """One model of the pool the router chose from."""

    model_config = ConfigDict(extra="allow")

    model: ShortText
    tier: TierName | None = None
    provider: str | None = Field(default=None, max_length=200)


class Message(BaseModel):
    """A chat message, in the Anthropic/OpenAI shape (content as text or content blocks)."""

    model_config = ConfigDict(extra="allow")

    role: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    content: str | list[dict[str, Any]] | None = None


class RequestPayload(BaseModel):
    """What is needed to replay the call on another model."""

    model_config = ConfigDict(extra="allow")

    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ResponsePayload(BaseModel):
    """The answer the user got."""

    model_config = ConfigDict(extra="allow")

    text: str | None = None
    finish_reason: str | None = Field(default=None, max_length=64)


# Token counts fit a 32-bit column on every database; no single call comes near it.
TokenCount = Annotated[int, Field(ge=0, le=2_000_000_000)]


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    cache_read_tokens: TokenCount | None = None


class DecisionIn(BaseModel):
    """One routing decision (decision log v1). Unknown fields are kept in `extra`."""

    model_config = ConfigDict(
        extra="allow",
        allow_inf_nan=False,
        title="Decision",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "req-0001",
                    "router": "support-router",
                    "ts": "2026-11-27T12:00:00Z",
                    "tier": "cheap",
                    "chosen_model": "claude-haiku-4-5",
                    "router_score": 0.31,
                    "threshold": 0.5,
                    "segment": {"topic": "billing", "language": "en"},
                    "features": {"input_tokens": 412, "has_code": False},
                    "request": {"messages": [{"role": "user", "content": "Why was I charged?"}]},
                    "response": {"text": "You were charged because…", "finish_reason": "stop"},
                    "usage": {"input_tokens": 412, "output_tokens": 120},
                    "cost_usd": 0.00101,
                    "latency_ms": 820,
                }
            ]
        },
    )

    request_id: ShortText = Field(description="Unique per router; the idempotency key.")
    router: ShortText = Field(description="Router name.")
    router_version: str | None = Field(default=None, max_length=200)
    ts: DecisionTime | None = Field(
        default=None, description="RFC 3339 time of the routing decision; default: receipt time."
    )
    tier: TierName = Field(description="`cheap`, `strong`, or another tier of the router's pool.")
    chosen_model: ShortText = Field(description="The model the router chose.")
    served_model: str | None = Field(
        default=None, max_length=200, description="The model that answered; default chosen_model."
    )
    failover: bool = Field(default=False, description="A provider error changed served_model.")
    candidates: list[Candidate] = Field(default_factory=list, max_length=100)
    router_score: float | None = Field(default=None, ge=0.0, le=1.0)
    score_semantics: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        default="p_strong_needed"
    )
    threshold: float | None = None
    segment: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    features: dict[LabelKey, float | int | str | bool] = Field(default_factory=dict, max_length=200)
    request: RequestPayload | None = None
    response: ResponsePayload | None = None
    usage: Usage | None = None
    cost_usd: NonNegative | None = None
    latency_ms: NonNegative | None = None
    router_cost_usd: NonNegative | None = None
    router_latency_ms: NonNegative | None = None
    escalated_from: TierName | None = None
    fallback: bool = Field(
        default=False,
        description="The router itself could not decide and applied its static policy.",
    )
    session_id: str | None = Field(default=None, max_length=200)


@dataclass(slots=True)
class ItemResult:
    """What happened to one item of a posted batch.

    A plain dataclass, not a pydantic model: ingest builds one per decision, and
    `model_construct` cost ~10 µs each, a fifth of a decision's whole budget.
    """

    index: int
    status: Annotated[str, Field(description="`stored`, `duplicate` or `invalid`.")]
    request_id: str | None = None
    router: str | None = None
    id: Annotated[int | None, Field(description="Decision id, for stored items.")] = None
    sampled: bool | None = None
    inclusion_probability: float | None = None


class ItemError(BaseModel):
    index: int
    loc: list[str | int] = Field(description="Field path within the item.")
    msg: str
    type: str


class IngestResponse(BaseModel):
    stored: int
    duplicates: int
    invalid: int
    results: list[ItemResult]
    detail: list[ItemError] = Field(
        default_factory=list, description="Every invalid item's index, field path and reason."
    )


# --- tables --------------------------------------------------------------------------------


class Decision(SQLModel, table=True):
    """One routing decision as logged by a router."""

    __tablename__ = "decision"
    __table_args__ = (
        UniqueConstraint("router", "request_id", name="uq_decision_router_request_id"),
        Index("ix_decision_ts_id", "ts", "id"),
        Index("ix_decision_router_ts", "router", "ts"),
        Index("ix_decision_segment_value_ts", "segment_value", "ts"),
        # Hourly sampling finds the decisions still waiting for their period's plan here,
        # and the label watermark their earliest ts: a tiny index, whatever the log's size.
        Index(
            "ix_decision_awaiting_plan",
            "ts",
            postgresql_where=text(f"sampling_skip_reason = '{AWAITING_PLAN}'"),
            sqlite_where=text(f"sampling_skip_reason = '{AWAITING_PLAN}'"),
        ),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    request_id: str = SQLField(max_length=200)
    router_version: str | None = SQLField(default=None, max_length=200)
    ts: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    received_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    tier: str = SQLField(max_length=64)
    chosen_model: str = SQLField(max_length=200)
    served_model: str = SQLField(max_length=200)
    failover: bool = False
    fallback: bool = False
    candidates: list[dict[str, Any]] = SQLField(
        default_factory=list, sa_column=Column(JsonType, nullable=False)
    )
    router_score: float | None = None
    score_semantics: str = SQLField(default="p_strong_needed", max_length=64)
    threshold: float | None = None
    segment: dict[str, str] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )
    segment_value: str = SQLField(max_length=200)
    features: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    router_cost_usd: float | None = None
    router_latency_ms: float | None = None
    escalated_from: str | None = SQLField(default=None, max_length=64)
    session_id: str | None = SQLField(default=None, max_length=200)
    extra: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )
    has_request: bool = False
    has_response: bool = False
    inclusion_probability: float
    sampled: bool
    payload_stored: bool = False
    # Redaction changed the stored payload: a redacted prompt against the original answer
    # is not a fair comparison, so the decision is not shadowed (and is counted).
    payload_redacted: bool = False
    # Why a decision was not sampled although its stratum is (budget_exhausted), or
    # `awaiting_plan` while its sampling period is still open (hourly sampling).
    sampling_skip_reason: str | None = SQLField(default=None, max_length=64)


class DecisionPayload(SQLModel, table=True):
    """The request/response of a decision, kept per `store_payloads` (sampled ones by default)."""

    __tablename__ = "decision_payload"

    decision_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("decision.id", ondelete="CASCADE"), primary_key=True)
    )
    request: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    response: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    stored_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class TrafficDelta(SQLModel, table=True):
    """Decisions an ingest transaction added to one stratum-hour, appended, never updated.

    Every ingest upserting the same hourly snapshot rows serialised concurrent writers on
    their row locks; appends do not conflict. The aggregator job folds these rows into
    `traffic_window_snapshot` (analytics/snapshots.py) and deletes them in one transaction.
    """

    __tablename__ = "traffic_delta"

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    segment_value: str = SQLField(max_length=200)
    tier: str = SQLField(max_length=64)
    window_start: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    decisions: int = 0
    sampled: int = 0
    budget_refused: int = 0
    with_payload: int = 0
    failover: int = 0
    fallback: int = 0
    escalated: int = 0
    cost_usd: float = 0.0
    router_cost_usd: float = 0.0


# --- read schema ---------------------------------------------------------------------------


class DecisionPublic(BaseModel):
    """A stored decision as the read API returns it."""

    id: int
    router: str
    request_id: str
    router_version: str | None
    ts: datetime
    received_at: datetime
    tier: str
    chosen_model: str
    served_model: str
    failover: bool
    fallback: bool
    candidates: list[dict[str, Any]]
    router_score: float | None
    score_semantics: str
    threshold: float | None
    segment: dict[str, str]
    segment_value: str
    features: dict[str, Any]
    usage: dict[str, int | None]
    cost_usd: float | None = Field(description="USD")
    latency_ms: float | None = Field(description="milliseconds")
    router_cost_usd: float | None = Field(description="USD")
    router_latency_ms: float | None = Field(description="milliseconds")
    escalated_from: str | None
    session_id: str | None
    extra: dict[str, Any]
    has_request: bool
    has_response: bool
    inclusion_probability: float
    sampled: bool
    payload_stored: bool
    payload_redacted: bool = False
    sampling_skip_reason: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None


class DecisionPage(BaseModel):
    items: list[DecisionPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


DECISION_TABLE = table_of(Decision)
PAYLOAD_TABLE = table_of(DecisionPayload)
DELTA_TABLE = table_of(TrafficDelta)
