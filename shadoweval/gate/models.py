"""Gate runs and their items: one leased row per run (its planning) and per replayed request."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Column, ForeignKey, Index, Text, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, JsonType, UtcDateTime


class GateStatus(StrEnum):
    """`queued` until a worker samples its requests, `running` while items are open, then a
    verdict (`passed`/`failed`) or `error` (could not run: no requests, too many failures)."""

    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"


FINISHED_GATE_STATUSES = (GateStatus.PASSED, GateStatus.FAILED, GateStatus.ERROR)


class GateItemStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"


class GateRun(SQLModel, table=True):
    __tablename__ = "gate_run"
    __table_args__ = (
        Index("ix_gate_run_claim", "status", "next_attempt_at"),
        Index("ix_gate_run_created", "created_at", "id"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    candidate_model: str = SQLField(max_length=200)
    replaced_model: str = SQLField(max_length=200)
    sample_size: int
    max_drop: float
    alpha: float
    # Requested segment values; empty = every segment the replaced model serves.
    segments: list[str] = SQLField(default_factory=list, sa_column=Column(JsonType, nullable=False))
    seed: int = 0
    requested_by: str | None = SQLField(default=None, max_length=100)
    status: str = SQLField(default=GateStatus.QUEUED, max_length=16)
    attempts: int = 0
    lease_owner: str | None = SQLField(default=None, max_length=100)
    lease_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    next_attempt_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    planned_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    finished_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    items_total: int = 0
    items_done: int = 0
    items_error: int = 0
    # Traffic per segment among the router's decisions to the replaced model: the weights
    # of the overall estimate (the sample itself is allocated evenly across segments).
    segment_traffic: dict[str, int] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )
    cost_usd: float = 0.0
    # The run's own budget (DESIGN.md, Sampling: gates do not spend the shadow budget).
    max_cost_usd: float | None = None
    # Estimated cost of the items in flight, reserved before their calls so concurrent
    # items cannot together spend past max_cost_usd; released when each item finishes.
    reserved_usd: float = 0.0
    # The judge as of creation (model, sampling, rubrics, prompt hash, prices): every item
    # is judged and priced with it, whichever worker runs it (gate.create.judge_snapshot).
    # None on runs created before it was recorded: they use the worker's settings.
    judge: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    results: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    report_markdown: str | None = SQLField(default=None, sa_column=Column(Text))
    junit_xml: str | None = SQLField(default=None, sa_column=Column(Text))
    error: str | None = SQLField(default=None, max_length=2000)


class GateItem(SQLModel, table=True):
    __tablename__ = "gate_item"
    __table_args__ = (
        UniqueConstraint("gate_run_id", "decision_id", name="uq_gate_item_run_decision"),
        Index("ix_gate_item_claim", "status", "next_attempt_at"),
        Index("ix_gate_item_run_status", "gate_run_id", "status"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    gate_run_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("gate_run.id", ondelete="CASCADE"), nullable=False)
    )
    # Deleting a decision (retention, deletion by request) deletes its replays too.
    decision_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("decision.id", ondelete="CASCADE"), nullable=False)
    )
    request_id: str = SQLField(max_length=200)
    segment_value: str = SQLField(max_length=200)
    status: str = SQLField(default=GateItemStatus.QUEUED, max_length=16)
    attempts: int = 0
    lease_owner: str | None = SQLField(default=None, max_length=100)
    lease_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    next_attempt_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    finished_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    candidate_answer: str | None = SQLField(default=None, sa_column=Column(Text))
    replaced_answer: str | None = SQLField(default=None, sa_column=Column(Text))
    # The replaced model served the decision: its logged answer is reused, not re-bought.
    replaced_reused: bool = False
    candidate_cost_usd: float = 0.0
    replaced_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    # What this item reserved on its run (0: none yet); kept across retries and lease
    # takeovers so an item reserves once, and released from the run when it finishes.
    reserved_usd: float = 0.0
    order_candidate_first: dict[str, Any] | None = SQLField(
        default=None, sa_column=Column(JsonType)
    )
    order_replaced_first: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JsonType))
    # judge.models.Outcome read from the candidate's side: cheaper_wins = candidate wins.
    outcome: str | None = SQLField(default=None, max_length=16)
    # −1 the replaced answer wins both orders, +1 the candidate's does, 0 otherwise.
    label: int | None = None
    score_candidate: float | None = None
    score_replaced: float | None = None
    error: str | None = SQLField(default=None, max_length=2000)

    @property
    def cost_usd(self) -> float:
        return self.candidate_cost_usd + self.replaced_cost_usd + self.judge_cost_usd


# --- API schemas -----------------------------------------------------------------------------


class GateCreate(BaseModel):
    """`POST /v1/gates`: replay `sample` stored requests of `router` on `candidate` and on
    `replace`, and test that the quality drop stays below `max_drop`."""

    router: str = Field(min_length=1, max_length=200)
    candidate: str = Field(min_length=1, max_length=200, description="The new model.")
    replace: str = Field(
        min_length=1, max_length=200, description="The model the candidate would replace."
    )
    sample: int = Field(ge=1, le=100_000, description="Requests to replay in all.")
    max_drop: float = Field(
        gt=0.0,
        lt=1.0,
        description="Non-inferiority margin: the largest acceptable P(loss) − P(win).",
    )
    alpha: float | None = Field(
        default=None, gt=0.0, lt=0.5, description="One-sided level; default gate_alpha."
    )
    segments: list[str] = Field(default_factory=list, max_length=200)
    seed: int = Field(default=0, description="Seed of the (deterministic) stratified sample.")
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="Spending cap of the run in USD; default gate_max_cost_usd."
    )
    allow_underpowered: bool = Field(
        default=False,
        description=(
            "Run even when the per-segment sample is below the fewest pairs a pass needs "
            "(otherwise 422 with the figures)."
        ),
    )

    @field_validator("segments")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(v.strip() for v in value if v.strip()))


class GateAccepted(BaseModel):
    id: int
    status: str
    url: str


class GateSummary(BaseModel):
    id: int
    router: str
    candidate_model: str
    replaced_model: str
    sample_size: int
    max_drop: float
    alpha: float
    segments: list[str]
    status: str
    requested_by: str | None
    created_at: datetime
    finished_at: datetime | None
    items_total: int
    items_done: int
    items_error: int
    cost_usd: float = Field(description="USD spent on replays and judging so far.")
    max_cost_usd: float | None = Field(description="The run's spending cap in USD.")
    error: str | None


class GateDetail(GateSummary):
    seed: int
    planned_at: datetime | None
    results: dict[str, Any] | None
    report_markdown: str | None
    junit_xml: str | None


class GatePage(BaseModel):
    items: list[GateSummary]
    next_cursor: str | None
