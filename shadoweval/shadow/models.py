"""Shadow runs (one provider call per row, claimed under a lease) and provider batches."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, ForeignKey, Index, String, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, JsonType, UtcDateTime


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


class ShadowMode(StrEnum):
    REALTIME = "realtime"  # one call per item, claimed by the worker lanes
    BATCH = "batch"  # through the provider's batch API at the batch price


# `next_attempt_at` of a queued item waiting for the next batch, and `lease_until` of an
# item inside a submitted batch: no realtime lane ever finds them due.
BATCH_HOLD = datetime(9000, 1, 1, tzinfo=UTC)


class BatchState(StrEnum):
    SUBMITTING = "submitting"  # row and custom_ids committed; the create call may not have landed
    SUBMITTED = "submitted"  # the provider holds it: poll until it ends
    COLLECTED = "collected"  # every item's result recorded
    FAILED = "failed"  # the provider refused or lost it; its items went back to the queue


class BatchKind(StrEnum):
    SHADOW = "shadow"
    JUDGE = "judge"


class ProviderBatch(SQLModel, table=True):
    """One batch at a provider. Committed with its custom_ids BEFORE the create call, so a
    crash during submission is reconciled (looked up at the provider) rather than resubmitted,
    and a restarted worker resumes polling the batch id stored here."""

    __tablename__ = "provider_batch"
    __table_args__ = (
        UniqueConstraint("tag", name="uq_provider_batch_tag"),
        UniqueConstraint("provider", "provider_batch_id", name="uq_provider_batch_provider_id"),
        Index("ix_provider_batch_due", "state", "next_check_at"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    # Local id: the OpenAI metadata tag and the prefix of every custom_id in the batch.
    tag: str = SQLField(max_length=64)
    provider: str = SQLField(max_length=64)
    kind: str = SQLField(max_length=16)
    model: str = SQLField(max_length=200)
    state: str = SQLField(default=BatchState.SUBMITTING, max_length=16)
    provider_batch_id: str | None = SQLField(default=None, max_length=200)
    provider_status: str | None = SQLField(default=None, max_length=32)
    # [{"custom_id", "item_id", "order"?}]: shadow_run ids, or verdict ids and judge order.
    items: list[dict[str, Any]] = SQLField(default_factory=list, sa_column=Column(JsonType))
    item_count: int = 0
    attempts: int = 0  # submit and poll calls that failed
    lease_owner: str | None = SQLField(default=None, max_length=100)
    lease_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    next_check_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    submitted_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    ended_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    collected_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    # Outcome counts at collection: succeeded, errored, expired, canceled, missing, retried…
    counts: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    cost_usd: float = 0.0  # USD, at the batch price, of every item collected
    error_detail: str | None = SQLField(default=None, max_length=2000)
    # Provider batch ids adopted by reconciliation whose results turned out to carry another
    # batch's custom_ids (a Message Batch has no tag to look it up by): never adopted again.
    rejected_provider_ids: list[str] | None = SQLField(default=None, sa_column=Column(JsonType))


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
    mode: str = SQLField(
        default=ShadowMode.REALTIME,
        sa_column=Column(String(16), nullable=False, server_default=ShadowMode.REALTIME.value),
    )
    batch_id: int | None = SQLField(default=None, sa_column=Column(BigIntId))  # provider_batch


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
    mode: str = ShadowMode.REALTIME  # realtime | batch (billed at the batch price)
