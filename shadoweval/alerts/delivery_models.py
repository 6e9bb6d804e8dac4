"""The alert outbox: one row per (notification, channel), and one row per attempt to send it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, JsonType, UtcDateTime


class DeliveryStatus(StrEnum):
    """`in_flight` rows whose lease expired (their worker died) are claimable again."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    FAILED = "failed"


class AlertDelivery(SQLModel, table=True):
    __tablename__ = "alert_delivery"
    __table_args__ = (
        # One retrain trigger per model event and channel, however often the job runs.
        UniqueConstraint("event_id", "channel", name="uq_alert_delivery_event_channel"),
        Index("ix_alert_delivery_claim", "status", "next_attempt_at"),
        Index("ix_alert_delivery_alert", "alert_id"),
        # The claim's "older open delivery for the same key" check (per-key ordering).
        Index("ix_alert_delivery_key", "dedup_key", "channel", "status"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    channel: str = SQLField(max_length=16)  # webhook | slack | pagerduty | retrain
    # The configured channel this row goes to; its URL and secrets are read from the
    # settings when sending (outbox.channel_url), so none of them is stored at rest.
    channel_name: str = SQLField(max_length=100)
    # The channel's URL as shown (channels.redact_url: scheme and host), never the real one.
    url: str = SQLField(max_length=2000)
    payload: dict[str, Any] = SQLField(sa_column=Column(JsonType, nullable=False))
    dedup_key: str = SQLField(max_length=300)
    kind: str = SQLField(max_length=16)  # trigger | reminder | resolve | retrain
    rule: str = SQLField(max_length=100)
    # The lifecycle's alert row; no foreign key, so the outbox does not depend on its schema.
    alert_id: int | None = SQLField(default=None, sa_column=Column(BigIntId, nullable=True))
    event_id: int | None = SQLField(
        default=None,
        sa_column=Column(BigIntId, ForeignKey("event.id", ondelete="SET NULL"), nullable=True),
    )
    status: str = SQLField(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    lease_owner: str | None = SQLField(default=None, max_length=100)
    lease_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    delivered_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    failed_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    last_error: str | None = SQLField(default=None, max_length=2000)


class AlertDeliveryAttempt(SQLModel, table=True):
    __tablename__ = "alert_delivery_attempt"
    __table_args__ = (Index("ix_alert_delivery_attempt_delivery", "delivery_id", "attempt"),)

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    delivery_id: int = SQLField(
        sa_column=Column(
            BigIntId, ForeignKey("alert_delivery.id", ondelete="CASCADE"), nullable=False
        )
    )
    attempt: int  # 1 for the first send
    at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    outcome: str = SQLField(max_length=16)  # delivered | retry | failed
    status_code: int | None = None  # None: no HTTP answer (timeout, connection refused)
    error: str | None = SQLField(default=None, max_length=2000)
    duration_ms: float
    retry_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))


class DeliveryAttemptPublic(BaseModel):
    attempt: int
    at: datetime
    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_at: datetime | None


class AlertDeliveryPublic(BaseModel):
    id: int
    channel: str
    channel_name: str
    url: str  # redacted
    status: str
    kind: str
    rule: str
    dedup_key: str
    alert_id: int | None
    event_id: int | None
    attempt_count: int
    next_attempt_at: datetime | None  # None once delivered or failed
    created_at: datetime
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    payload: dict[str, Any]
    # The last few attempts, oldest first; attempt_count has them all, and
    # GET /v1/alert-deliveries/{id}/attempts pages through every one.
    attempts: list[DeliveryAttemptPublic]


class DeliveryAttemptPage(BaseModel):
    items: list[DeliveryAttemptPublic]  # newest first
    next_cursor: str | None


class AlertDeliveryPage(BaseModel):
    items: list[AlertDeliveryPublic]
    next_cursor: str | None
