"""Shadow runs: one provider call per row, claimed by workers under a lease."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, UtcDateTime


class RunKind(StrEnum):
    SHADOW = "shadow"  # the stored request on the other tier
    ROUTED_RERUN = "routed_rerun"  # the routed model again, when its answer was not logged


class Direction(StrEnum):
    FORWARD = "forward"  # routed to a cheaper tier, shadowed on the strongest: measures harm
    REVERSE = "reverse"  # routed to a stronger tier, shadowed on the cheapest: missed savings


class WorkStatus(StrEnum):
    """Status of a leased work item. `running` rows whose lease has expired are claimable."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ShadowRun(SQLModel, table=True):
    __tablename__ = "shadow_run"
    __table_args__ = (
        UniqueConstraint("decision_id", "kind", name="uq_shadow_run_decision_kind"),
        Index("ix_shadow_run_claim", "status", "next_attempt_at"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    decision_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("decision.id", ondelete="CASCADE"), nullable=False)
    )
    kind: str = SQLField(max_length=16)
    direction: str = SQLField(max_length=16)
    routed_tier: str = SQLField(max_length=64)
    target_tier: str = SQLField(max_length=64)
    target_model: str = SQLField(max_length=200)
    ts: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    status: str = SQLField(default=WorkStatus.QUEUED, max_length=16)
    attempts: int = 0
    lease_owner: str | None = SQLField(default=None, max_length=100)
    lease_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    next_attempt_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    finished_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    response_text: str | None = None
    served_model: str | None = SQLField(default=None, max_length=200)
    provider: str | None = SQLField(default=None, max_length=64)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cost_usd: float = 0.0
    latency_ms: float | None = None
    finish_reason: str | None = SQLField(default=None, max_length=64)
    failure_reason: str | None = SQLField(default=None, max_length=64)
    failure_detail: str | None = SQLField(default=None, max_length=2000)
    simulated: bool = False


class ShadowRunPublic(BaseModel):
    id: int
    decision_id: int
    kind: str
    direction: str
    routed_tier: str
    target_tier: str
    target_model: str
    ts: datetime
    status: str
    attempts: int
    served_model: str | None
    provider: str | None
    response_text: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float
    latency_ms: float | None
    failure_reason: str | None
    failure_detail: str | None
    simulated: bool
