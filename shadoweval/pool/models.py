"""The candidate pool per router (tier → models), the model watcher's watermark, and schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, UtcDateTime
from shadoweval.ingest.models import ShortText, TierName


class PoolSource(StrEnum):
    OBSERVED = "observed"  # seen as a chosen model in the decision log
    POOL_PUT = "pool_put"  # set by an admin through PUT /v1/pool


class RouterModel(SQLModel, table=True):
    """A model a router has chosen (or may choose) for a tier; one row per (router, tier, model)."""

    __tablename__ = "router_model"
    __table_args__ = (
        UniqueConstraint("router", "tier", "model", name="uq_router_model_router_tier_model"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    tier: str = SQLField(max_length=64)
    model: str = SQLField(max_length=200)
    # Decision time of the first decision that chose it; NULL while a model announced by
    # PUT /v1/pool has not been chosen, so that no wall-clock time ever stands in for it.
    first_seen_ts: datetime | None = SQLField(
        default=None, sa_column=Column(UtcDateTime(), nullable=True)
    )
    source: str = SQLField(max_length=16)
    # In the router's current pool; PUT /v1/pool deactivates models it leaves out.
    active: bool = True
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class ModelWatchState(SQLModel, table=True):
    """How far the model watcher has read the decision log for good.

    Every decision with an id up to `last_decision_id` was committed when it was read.
    `pending_decision_id` is the highest id a pass saw at `pending_at` (database clock);
    it becomes the watermark once `model_watch_settle_seconds` have passed, and until
    then every pass reads again from the watermark (see pool.service).
    """

    __tablename__ = "model_watch_state"

    name: str = SQLField(primary_key=True, max_length=64)
    last_decision_id: int = SQLField(sa_column=Column(BigIntId, nullable=False))
    pending_decision_id: int | None = SQLField(default=None, sa_column=Column(BigIntId))
    pending_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


# --- wire schema ---------------------------------------------------------------------------


class PoolIn(BaseModel):
    """A router's whole pool, replacing the current one: tier → the models it may choose."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "router": "support-router",
                    "tiers": {"cheap": ["claude-haiku-4-5"], "strong": ["claude-sonnet-4-6"]},
                }
            ]
        },
    )

    router: ShortText
    tiers: dict[TierName, Annotated[list[ShortText], Field(min_length=1, max_length=50)]] = Field(
        min_length=1, max_length=20
    )

    @field_validator("tiers")
    @classmethod
    def _no_repeated_models(cls, tiers: dict[str, list[str]]) -> dict[str, list[str]]:
        for tier, models in tiers.items():
            repeated = sorted({m for m in models if models.count(m) > 1})
            if repeated:
                raise ValueError(f"tier {tier!r} lists {', '.join(repeated)} more than once")
        return tiers


class RouterModelPublic(BaseModel):
    id: int
    router: str
    tier: str
    model: str
    first_seen_ts: datetime | None = Field(
        description="decision time of the first decision choosing it; null for a model "
        "PUT /v1/pool announced that no decision has chosen yet"
    )
    source: str = Field(description="observed | pool_put")
    active: bool
    updated_at: datetime


class PoolPage(BaseModel):
    items: list[RouterModelPublic]
    next_cursor: str | None = None


class PoolPutResult(BaseModel):
    router: str
    added: list[RouterModelPublic] = Field(description="models new to the pool (or reactivated)")
    removed: list[RouterModelPublic] = Field(description="models deactivated")
    announced: list[RouterModelPublic] = Field(
        description="active models of the pool no decision has chosen yet; the first decision "
        "choosing one records its model_change event (ts = that decision's ts)"
    )
    pool: list[RouterModelPublic]


class ModelWatchResult(BaseModel):
    scanned: int = Field(description="decisions read past the watermark (re-reads included)")
    new_models: int = Field(description="router_model rows added")
    events: int = Field(description="model_change events recorded")
    boosted_strata: int
    watermark: int = Field(description="decision id up to which every decision has been read")
