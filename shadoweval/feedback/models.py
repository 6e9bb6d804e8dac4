"""Human feedback on served answers, blind review assignments and labels, agreement reports.

Both kinds of human label are reduced to one bit, "the served answer was acceptable"
(DESIGN.md, Judge), so they can be compared with the judge's verdicts:

- feedback: thumbs up → 1, down → 0; a 1–5 grade → 1 when ≥ `feedback_acceptable_min_grade`;
- a reviewer's blind label: the served answer better or a tie → 1; the other answer
  better, or both bad → 0.

The judge's side: the served answer is acceptable unless the other tier's answer won
in both orders (ties and inconsistent pairs count as acceptable). On cheap-routed
pairs that is exactly `cheap_acceptable`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, UtcDateTime
from shadoweval.judge.models import Verdict


class FeedbackKind(StrEnum):
    THUMBS = "thumbs"
    GRADE = "grade"


class FeedbackSource(StrEnum):
    END_USER = "end_user"
    REVIEWER = "reviewer"


class ReviewChoice(StrEnum):
    """What the reviewer saw: answer A or B better, a tie, or both unacceptable."""

    A = "A"
    B = "B"
    TIE = "tie"
    BOTH_BAD = "both_bad"


class PresentedOrder(StrEnum):
    CHEAPER_FIRST = "cheaper_first"  # A is the cheaper tier's answer
    STRONGER_FIRST = "stronger_first"


class ReviewQueueMode(StrEnum):
    """The review queue mode that served a pair (`GET /v1/review/queue?mode=`), recorded on
    its assignment and label. Only `uniform` labels form a known-probability sample (PPI
    reads those alone); NULL on rows older than migration 0020 means unknown."""

    STRATIFIED = "stratified"  # finds disagreements: never a sample for an estimate
    UNIFORM = "uniform"  # the uniform review sample: PPI's human labels
    ESCALATED = "escalated"  # the judge's least confident verdicts, within a daily budget


class ReviewLabelValue(StrEnum):
    """A reviewer's label after the order is undone: which tier's answer was better."""

    CHEAPER = "cheaper"
    STRONGER = "stronger"
    TIE = "tie"
    BOTH_BAD = "both_bad"


# --- tables --------------------------------------------------------------------------------


class Feedback(SQLModel, table=True):
    """One human judgement of a decision's served answer.

    Linked to the decision by its idempotency key (router, request_id), not by a foreign
    key: feedback often arrives before the router's log is shipped, so feedback on an
    unknown decision is stored (`decision_known` false at receipt) and joins the decision
    whenever it arrives.
    """

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint(
            "router", "request_id", "source", "reviewer", name="uq_feedback_decision_source"
        ),
        Index("ix_feedback_created", "created_at"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    request_id: str = SQLField(max_length=200)
    kind: str = SQLField(max_length=16)
    value: int  # thumbs: 1 up, 0 down; grade: 1–5
    acceptable: int  # the reduction to "the served answer was acceptable" at receipt
    source: str = SQLField(max_length=16)
    # "" for anonymous end users, so (router, request_id, source, reviewer) stays unique.
    reviewer: str = SQLField(default="", max_length=200)
    comment: str | None = SQLField(default=None, max_length=2000)
    decision_known: bool = False
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class ReviewAssignment(SQLModel, table=True):
    """A judged pair served to one reviewer: the opaque token and the order shown.

    Kept server-side so the token reveals nothing (not the verdict, not the order) and
    the reviewer sees the same order every time the pair is served again.
    """

    __tablename__ = "review_assignment"
    __table_args__ = (
        UniqueConstraint("verdict_id", "reviewer", name="uq_review_assignment_verdict_reviewer"),
    )

    token: str = SQLField(primary_key=True, max_length=64)
    verdict_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("verdict.id", ondelete="CASCADE"), nullable=False)
    )
    reviewer: str = SQLField(max_length=200)
    presented_order: str = SQLField(max_length=16)
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    # The ReviewQueueMode that last served the pair to this reviewer (NULL: before 0020).
    queue: str | None = SQLField(default=None, max_length=16)


class ReviewLabel(SQLModel, table=True):
    __tablename__ = "review_label"
    __table_args__ = (
        UniqueConstraint("verdict_id", "reviewer", name="uq_review_label_verdict_reviewer"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    verdict_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("verdict.id", ondelete="CASCADE"), nullable=False)
    )
    reviewer: str = SQLField(max_length=200)
    choice: str = SQLField(max_length=16)  # as the reviewer saw it: A | B | tie | both_bad
    presented_order: str = SQLField(max_length=16)
    label: str = SQLField(max_length=16)  # de-randomised: cheaper | stronger | tie | both_bad
    served_acceptable: int
    comment: str | None = SQLField(default=None, max_length=2000)
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    # The ReviewQueueMode whose item was labelled (the assignment's); NULL: before 0020.
    queue: str | None = SQLField(default=None, max_length=16)


# Judge change control reads new verdicts in (finished_at, id) order past its watermark;
# the verdict table is the judge's, the index is this reader's (see feedback.judge_changes).
VERDICT_FINISHED_INDEX = Index(
    "ix_verdict_finished",
    Verdict.__table__.c.finished_at,  # type: ignore[attr-defined]
    Verdict.__table__.c.id,  # type: ignore[attr-defined]
)


class JudgeWatchState(SQLModel, table=True):
    """Per router: the judge key of its current run, and the (finished_at, id) position
    of the batch that last touched it; the newest position is the watermark."""

    __tablename__ = "judge_watch_state"

    router: str = SQLField(primary_key=True, max_length=200)
    last_finished_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    last_verdict_id: int = SQLField(sa_column=Column(BigIntId, nullable=False))
    judge_key: str = SQLField(max_length=300)
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


# --- API schemas ---------------------------------------------------------------------------


class FeedbackIn(BaseModel):
    """A thumbs up/down or a 1–5 grade on the answer a decision served."""

    model_config = ConfigDict(extra="forbid")

    router: Annotated[str, Field(min_length=1, max_length=200)]
    request_id: Annotated[str, Field(min_length=1, max_length=200)]
    kind: FeedbackKind
    value: Annotated[
        Literal["up", "down"] | int | bool,
        Field(description='thumbs: "up" or "down" (or true/false); grade: an integer 1–5'),
    ]
    source: FeedbackSource = FeedbackSource.END_USER
    reviewer: Annotated[
        str | None,
        Field(default=None, max_length=200, description="Required when source is reviewer."),
    ] = None
    comment: Annotated[str | None, Field(default=None, max_length=2000)] = None

    @model_validator(mode="after")
    def _check(self) -> FeedbackIn:
        if self.kind == FeedbackKind.THUMBS:
            if self.value not in ("up", "down") and not isinstance(self.value, bool):
                raise ValueError('a thumbs value is "up" or "down"')
        elif isinstance(self.value, bool) or self.value not in range(1, 6):
            raise ValueError("a grade is an integer from 1 to 5")
        if self.source == FeedbackSource.REVIEWER and not self.reviewer:
            raise ValueError("feedback from a reviewer names the reviewer")
        return self

    @property
    def numeric_value(self) -> int:
        if self.kind == FeedbackKind.THUMBS:
            return 1 if self.value in ("up", True) else 0
        return int(self.value)


class FeedbackItemResult(BaseModel):
    index: int
    status: str = Field(description="`stored`, `duplicate` or `invalid`.")
    id: int | None = None
    decision_known: bool | None = Field(
        default=None,
        description="False: no decision with this (router, request_id) yet; the feedback is "
        "stored and joins the decision when its log arrives.",
    )


class FeedbackResponse(BaseModel):
    stored: int
    duplicates: int
    invalid: int
    results: list[FeedbackItemResult]
    detail: list[dict[str, Any]] = Field(
        default_factory=list, description="Every invalid item's index, field path and reason."
    )


class ReviewAnswer(BaseModel):
    position: str = Field(description="A or B; which tier is behind it is not shown.")
    text: str


class ReviewItem(BaseModel):
    token: str = Field(description="Opaque; send it back with the label.")
    router: str
    segment: str
    ts: datetime
    system: Any = None
    messages: list[dict[str, Any]]
    answers: list[ReviewAnswer]


class ReviewQueue(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None = None


class ReviewLabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, Field(min_length=1, max_length=64)]
    reviewer: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=200,
            description="Defaults to the calling key's name (its prefix when unnamed); "
            "if given, it must be one of the two.",
        ),
    ] = None
    choice: ReviewChoice
    comment: Annotated[str | None, Field(default=None, max_length=2000)] = None


class ReviewLabelOut(BaseModel):
    token: str
    reviewer: str
    choice: str
    status: str = Field(
        description="`stored`, or `duplicate` when this reviewer had labelled "
        "the pair already (the first label is kept)."
    )
    created_at: datetime


class AgreementShare(BaseModel):
    """Judge vs human on "the served answer was acceptable" over one set of review labels,
    one observation per (judged pair, reviewer label)."""

    labels: int
    agreement: float | None = Field(description="share of labels the judge agrees with, 0–1")
    agreement_ci_low: float | None = Field(description="95 % interval (Wilson)")
    agreement_ci_high: float | None
    kappa: float | None = Field(description="Cohen's κ; null when undefined")
    kappa_ci_low: float | None = Field(description="95 % interval (Fleiss–Cohen–Everitt 1969)")
    kappa_ci_high: float | None


class EscalationAgreement(BaseModel):
    """Judge escalation ("Trust or Escalate", Jung et al., ICLR 2025): agreement on the
    verdicts the judge keeps and on those it escalates (judge/confidence.py)."""

    min_margin_points: float = Field(
        description="A verdict is escalated when its orders disagree or its score margin "
        "toward its label is below this (points on the judge's 1–10 scale)."
    )
    verdicts: int = Field(description="judged pairs of this judge in the window")
    escalated_verdicts: int
    escalated_share: float | None = Field(description="escalated / verdicts, 0–1")
    escalated_share_ci_low: float | None = Field(description="95 % interval (Wilson)")
    escalated_share_ci_high: float | None
    kept: AgreementShare = Field(
        description="Uniform review sample labels on verdicts the judge keeps: a "
        "known-probability sample, so this is the agreement of every kept verdict."
    )
    escalated: AgreementShare = Field(
        description="Uniform review sample labels on verdicts the judge escalates."
    )
    escalation_queue: AgreementShare = Field(
        description="Labels served by the escalation queue (mode=escalated): the judge's "
        "hardest cases within the daily budget, not a sample of anything; never pooled "
        "with the uniform sample's labels."
    )


class AgreementGroup(BaseModel):
    """Judge vs human on "the served answer was acceptable", for one judge."""

    judge_model: str
    prompt_hash: str
    judge_key: str
    n: int = Field(description="(verdict, human label) pairs")
    verdicts: int = Field(description="distinct judged pairs among them")
    from_review_labels: int
    from_feedback: int
    observed_agreement: float | None
    expected_agreement: float | None = Field(description="by chance, from the margins")
    kappa: float | None = Field(description="Cohen's κ; null when undefined")
    kappa_std_error: float | None
    kappa_ci_low: float | None = Field(description="95 % interval (Fleiss–Cohen–Everitt 1969)")
    kappa_ci_high: float | None
    judge_acceptable_rate: float | None
    human_acceptable_rate: float | None
    escalation: EscalationAgreement = Field(
        description="Agreement on the verdicts the judge keeps vs those it escalates."
    )


class AgreementReport(BaseModel):
    items: list[AgreementGroup]
    next_cursor: str | None = None


class AgreementQuery(BaseModel):
    router: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
