"""Verdicts: the pairwise judgment of a sampled decision, both orders, and its labels.

A verdict row exists for every sampled decision from the moment it is enqueued,
so it is also the decision's place in the coverage funnel: `waiting` for its
answers, `queued`/`running` at the judge, then `done`, `error` (the judge failed;
excluded from every aggregate) or `skipped` with the reason it could not be
shadowed (no payload, provider failure…).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, JsonType, UtcDateTime


class VerdictStatus(StrEnum):
    WAITING = "waiting"  # answers not ready yet
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"  # the judge failed after its retry: excluded everywhere, counted
    SKIPPED = "skipped"  # could not be shadowed; see skip_reason


OPEN_VERDICT_STATUSES = (VerdictStatus.WAITING, VerdictStatus.QUEUED, VerdictStatus.RUNNING)


class Outcome(StrEnum):
    """The pair's result from the cheaper answer's side, after both orders."""

    CHEAPER_WINS = "cheaper_wins"
    STRONGER_WINS = "stronger_wins"
    TIE = "tie"
    INCONSISTENT = "inconsistent"  # the orders disagree: counts as a tie


class Verdict(SQLModel, table=True):
    __tablename__ = "verdict"
    __table_args__ = (
        UniqueConstraint("decision_id", "judge_key", name="uq_verdict_decision_judge"),
        Index("ix_verdict_claim", "status", "next_attempt_at"),
        Index("ix_verdict_segment_ts", "segment_value", "ts"),
        Index("ix_verdict_ts", "ts", "request_id"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    decision_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("decision.id", ondelete="CASCADE"), nullable=False)
    )
    # Copied from the decision: aggregates and the watermark read verdicts alone.
    router: str = SQLField(max_length=200)
    request_id: str = SQLField(max_length=200)
    ts: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    segment_value: str = SQLField(max_length=200)
    routed_tier: str = SQLField(max_length=64)
    direction: str = SQLField(max_length=16)
    inclusion_probability: float
    router_score: float | None = None
    score_semantics: str = SQLField(default="p_strong_needed", max_length=64)
    cheaper_tier: str = SQLField(max_length=64)
    stronger_tier: str = SQLField(max_length=64)
    cheaper_model: str = SQLField(max_length=200)
    stronger_model: str = SQLField(max_length=200)

    # Which judge: model + prompt hash; windows split where either changes.
    judge_key: str = SQLField(max_length=300)
    judge_model: str = SQLField(max_length=200)
    prompt_hash: str = SQLField(max_length=64)

    status: str = SQLField(default=VerdictStatus.WAITING, max_length=16)
    skip_reason: str | None = SQLField(default=None, max_length=64)
    attempts: int = 0
    lease_owner: str | None = SQLField(default=None, max_length=100)
    lease_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    next_attempt_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    finished_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))

    # Order 1 shows the cheaper answer as A; order 2 shows it as B. Each holds the raw
    # verdict, scores, rationale, tokens, cost, latency, or the error of that call.
    order_cheaper_first: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    order_stronger_first: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    outcome: str | None = SQLField(default=None, max_length=16)
    consistent: bool | None = None
    strong_needed: int | None = None
    cheap_acceptable: int | None = None
    score_cheaper: float | None = None
    score_stronger: float | None = None
    score_delta: float | None = None  # stronger − cheaper, mean over both orders
    cheaper_chars: int | None = None
    stronger_chars: int | None = None
    judge_cost_usd: float = 0.0
    judge_latency_ms: float = 0.0
    error_detail: str | None = SQLField(default=None, max_length=2000)
    simulated: bool = False


class VerdictFoldQueue(SQLModel, table=True):
    """A finished verdict not yet added to the window snapshots.

    Written by database triggers (migration 0024) in the transaction that makes a verdict
    `done`, `error` or `skipped`, whatever code path does it; the aggregator deletes the
    entries it folds in the transaction that adds them (`snapshots.aggregate_finished_verdicts`).
    A queue instead of a claim column on the verdict: claiming by an UPDATE rewrote every
    verdict row and all its indexes a second time.
    """

    __tablename__ = "verdict_fold_queue"

    verdict_id: int = SQLField(sa_column=Column(BigIntId, primary_key=True, autoincrement=False))


class OrderResult(BaseModel):
    """One judge order as stored on the verdict (or gate item): its answer, and the tokens
    and cost of its calls (up to two), so it can be priced again (`judge/pricing.py`)."""

    winner: str | None = Field(default=None, description="A, B or tie, as the judge saw it.")
    score_a: int | None = None
    score_b: int | None = None
    rationale: str | None = None
    error: str | None = None
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    # None: stored before cache writes were recorded (migration 0021); its cost_usd stands.
    cache_write_tokens: int | None = 0
    cost_usd: float = Field(default=0.0, description="USD")
    latency_ms: float = 0.0


class VerdictPublic(BaseModel):
    id: int
    decision_id: int
    router: str
    request_id: str
    ts: datetime
    segment_value: str
    routed_tier: str
    direction: str
    cheaper_tier: str
    stronger_tier: str
    cheaper_model: str
    stronger_model: str
    judge_model: str
    prompt_hash: str
    status: str
    skip_reason: str | None
    outcome: str | None
    consistent: bool | None
    strong_needed: int | None
    cheap_acceptable: int | None
    score_cheaper: float | None
    score_stronger: float | None
    score_delta: float | None
    judge_cost_usd: float = Field(description="USD")
    judge_latency_ms: float = Field(description="milliseconds")
    order_cheaper_first: dict[str, Any] | None
    order_stronger_first: dict[str, Any] | None
    error_detail: str | None
    simulated: bool
    cheaper_answer: str | None = None
    stronger_answer: str | None = None
    request: dict[str, Any] | None = None
