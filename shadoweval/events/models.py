"""The event log: one row per noteworthy change, unique per (kind, dedup_key)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, Index, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, JsonType, UtcDateTime


class EventKind(StrEnum):
    """Every kind of event the log holds. The values are the stored `event.kind` strings and
    the API's `?kind=` filter, so they never change; this module imports no service, so any
    stage can name a kind without importing the stage that emits it."""

    MODEL_CHANGE = "model_change"  # pool watcher: a tier's router chose a new model
    JUDGE_CHANGED = "judge_changed"  # feedback watcher: judge model or prompt hash changed
    QUALITY_DROP = "quality_drop"  # analytics: a segment's change-point detector alarmed
    BUDGET_EXHAUSTED = "budget_exhausted"  # sampling: a budget day refused reservations
    SAMPLING_SHORTFALL = "sampling_shortfall"  # sampling: budget cannot buy a segment's floor


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("kind", "dedup_key", name="uq_event_kind_dedup"),
        Index("ix_event_ts", "ts"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    kind: str = SQLField(max_length=64)  # an EventKind value
    dedup_key: str = SQLField(max_length=300)  # exactly one event per (kind, key)
    ts: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))  # decision time
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    router: str | None = SQLField(default=None, max_length=200)
    details: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )


class EventPublic(BaseModel):
    id: int
    kind: str
    ts: datetime
    created_at: datetime
    router: str | None
    details: dict[str, Any]


class EventPage(BaseModel):
    """Events newest first; pass `next_cursor` back as `cursor` for the next page."""

    items: list[EventPublic]
    next_cursor: str | None = None
