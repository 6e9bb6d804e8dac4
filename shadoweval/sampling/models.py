"""Sampling plan and budget: π per stratum, and the daily shadow budget's reservations."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import Column
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import UtcDateTime


class SamplingStratum(SQLModel, table=True):
    """A stratum (router × segment value × tier) and the π the planner set for it."""

    __tablename__ = "sampling_stratum"

    router: str = SQLField(primary_key=True, max_length=200)
    segment_value: str = SQLField(primary_key=True, max_length=200)
    tier: str = SQLField(primary_key=True, max_length=64)
    inclusion_probability: float
    is_reverse: bool = False
    expected_traffic_per_day: float = 0.0
    cost_per_sample_usd: float = 0.0
    std_dev: float = 0.0
    floor_samples_per_day: float = 0.0
    expected_samples_per_day: float = 0.0
    # Labels a day the floor asks for and the plan cannot buy (budget or traffic too small).
    floor_shortfall_per_day: float = 0.0
    boost_factor: float = 1.0
    boosted_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class BudgetDay(SQLModel, table=True):
    """Shadow spend of one UTC day of `ts`, per budget account (`shadow`, `boost`)."""

    __tablename__ = "budget_day"

    day: str = SQLField(primary_key=True, max_length=10)  # YYYY-MM-DD
    account: str = SQLField(primary_key=True, max_length=32)
    budget_usd: float
    reserved_usd: float = 0.0
    sampled: int = 0
    refused: int = 0  # decisions not sampled because the budget was spent
    exhausted_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))


class StratumPublic(BaseModel):
    router: str
    segment_value: str
    tier: str
    inclusion_probability: float
    is_reverse: bool
    expected_traffic_per_day: float = Field(description="decisions per day")
    cost_per_sample_usd: float = Field(description="USD")
    floor_samples_per_day: float = Field(
        description="labels a day that detect the configured drop within the detection window"
    )
    expected_samples_per_day: float = Field(default=0.0, description="labels a day planned")
    floor_shortfall_per_day: float = Field(
        default=0.0, description="labels a day the floor needs beyond what the plan buys"
    )
    boost_factor: float
    boosted_until: datetime | None
    updated_at: datetime


class BudgetPublic(BaseModel):
    day: str
    account: str
    budget_usd: float = Field(description="USD")
    reserved_usd: float = Field(description="USD")
    sampled: int
    refused: int
    exhausted_at: datetime | None


class SamplingPeriod(SQLModel, table=True):
    """One closed decision-time period whose decisions the planner sampled (hourly mode).

    A row exists once the period's plan is stored and its decisions are decided; the plan
    depends only on traffic before `period_start` and labels of decisions before
    `labels_before`, so the same log replayed at any speed gets the same row.
    """

    __tablename__ = "sampling_period"

    period_start: datetime = SQLField(sa_column=Column(UtcDateTime(), primary_key=True))
    period_end: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    labels_before: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    closed_by: str = SQLField(max_length=16)  # watermark | idle
    strata: int = 0
    decisions: int = 0
    sampled: int = 0
    refused: int = 0
    boost_refused: int = 0  # of `refused`, those the boost account refused
    reserved_usd: float = 0.0  # shadow account, as reserved
    boost_reserved_usd: float = 0.0  # boost account, as reserved
    # Once every sample of the period is judged, its reservations are replaced in the
    # budget by what the samples cost (actual_usd).
    reconciled: bool = False
    actual_usd: float = 0.0
    planned_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))  # wall


class SamplingPeriodStratum(SQLModel, table=True):
    """The π and reserved cost of one stratum in one sampling period."""

    __tablename__ = "sampling_period_stratum"

    period_start: datetime = SQLField(sa_column=Column(UtcDateTime(), primary_key=True))
    router: str = SQLField(primary_key=True, max_length=200)
    segment_value: str = SQLField(primary_key=True, max_length=200)
    tier: str = SQLField(primary_key=True, max_length=64)
    inclusion_probability: float
    is_reverse: bool = False
    expected_traffic_per_day: float = 0.0
    cost_per_sample_usd: float = 0.0
    cost_learned_from: int = 0  # finished samples behind cost_per_sample_usd (0: the prior)
    std_dev: float = 0.0
    floor_samples_per_day: float = 0.0
    expected_samples_per_day: float = 0.0
    floor_shortfall_per_day: float = 0.0
    decisions: int = 0
    sampled: int = 0
    refused: int = 0
    reserved_usd: float = 0.0
    # Reverse shadows for the threshold advisor (sampling/threshold_band.py): a decision of
    # this stratum with a score in [band_score_low, band_score_high) is sampled with
    # π = 1 − (1 − inclusion_probability)·(1 − band_inclusion_probability).
    band_score_low: float | None = None
    band_score_high: float | None = None
    band_inclusion_probability: float = 0.0


class SamplingThresholdBand(SQLModel, table=True):
    """What the threshold advisor asked of the planner for one router and segment, read from
    the decisions and labels before `as_of` (the start of a decision day): the score band
    whose labels would let the next step up from the threshold in force be tested, and how
    many more labels it needs (`labels_more` 0: nothing asked, `reason` says why)."""

    __tablename__ = "sampling_threshold_band"

    as_of: datetime = SQLField(sa_column=Column(UtcDateTime(), primary_key=True))
    router: str = SQLField(primary_key=True, max_length=200)
    # "" stands for the router as a whole: no advice for it (`reason` says why).
    segment_value: str = SQLField(primary_key=True, max_length=200)
    tier: str | None = SQLField(default=None, max_length=64)  # the strong tier
    threshold_in_force: float | None = None
    score_low: float | None = None
    score_high: float | None = None
    labels_now: int = 0
    labels_more: int = 0
    band_requests_per_day: float = 0.0  # strong-routed decisions a day scored in the band
    reason: str = SQLField(default="", max_length=500)


class SamplingCursor(SQLModel, table=True):
    """Where the period planner stands (`periods`), and per router (`router:<name>`) when
    its decision time last moved (wall clock: the idle close)."""

    __tablename__ = "sampling_cursor"

    name: str = SQLField(primary_key=True, max_length=220)
    next_period_start: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    watermark_seen: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    watermark_seen_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))


class PeriodPublic(BaseModel):
    period_start: datetime
    period_end: datetime
    labels_before: datetime = Field(description="labels of decisions before this ts fed the plan")
    closed_by: str
    strata: int
    decisions: int
    sampled: int
    refused: int
    boost_refused: int = Field(description="of `refused`, refused by the boost budget")
    reserved_usd: float = Field(description="USD reserved on the shadow budget")
    boost_reserved_usd: float = Field(description="USD reserved on the boost budget")
    reconciled: bool = Field(description="reservations replaced by the samples' actual cost")
    actual_usd: float = Field(description="USD the period's samples cost, once reconciled")
    planned_at: datetime
