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
    floor_samples_per_day: float
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
