"""Alert tables: rule sets set through the API, and one `alert` row per firing episode."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, model_validator
from sqlalchemy import Column, Index, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.alerts.rule_models import AlertRule
from shadoweval.db import BigIntId, JsonType, UtcDateTime
from shadoweval.ingest.models import Decision
from shadoweval.shadow.models import ShadowRun


class AlertRuleSet(SQLModel, table=True):
    """A rule set put through `PUT /v1/alert-rules`; the newest row replaces the rule file."""

    __tablename__ = "alert_rule_set"

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    rules: list[dict[str, Any]] = SQLField(
        default_factory=list, sa_column=Column(JsonType, nullable=False)
    )
    updated_by: str | None = SQLField(default=None, max_length=100)  # API key prefix
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class Alert(SQLModel, table=True):
    """One episode of a dedup key (rule, router, segment): pending while the condition has
    not held for the rule's `for` yet, firing until clear, then resolved.

    Wall-clock columns (`started_at`, `updated_at`, `resolved_at`, …) say when shadoweval
    acted; the `*_ts` columns say at which decision time the measurement stood, so an
    alert can be compared between a live run and a replay of the same log.
    """

    __tablename__ = "alert"
    __table_args__ = (
        # Equal to dedup_key while pending or firing, NULL once resolved: at most one open
        # episode per key on both databases (NULLs never collide), without a partial index.
        UniqueConstraint("open_key", name="uq_alert_open_key"),
        Index("ix_alert_dedup_started", "dedup_key", "started_at"),
        Index("ix_alert_state", "state", "updated_at"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    rule: str = SQLField(max_length=100)
    kind: str = SQLField(max_length=64)
    dedup_key: str = SQLField(max_length=600)
    open_key: str | None = SQLField(default=None, max_length=600)
    state: str = SQLField(max_length=16)  # pending | firing | resolved
    level: str = SQLField(max_length=8)  # warn | alert
    severity: str = SQLField(max_length=16)  # of the notification: info | warning | critical
    router: str | None = SQLField(default=None, max_length=200)
    segment: str | None = SQLField(default=None, max_length=200)
    title: str = SQLField(max_length=500)
    summary: str = SQLField(max_length=2000)
    # estimate, ci_low, ci_high, n, value, threshold, unit, window_start, window_end, …
    numbers: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )
    dashboard_url: str | None = SQLField(default=None, max_length=2000)
    runbook_url: str | None = SQLField(default=None, max_length=2000)
    started_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    resolved_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    resolve_reason: str | None = SQLField(default=None, max_length=200)
    last_notified_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    notifications: int = 0
    acknowledged_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    acknowledged_by: str | None = SQLField(default=None, max_length=100)
    silenced_until: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    # Decision time (wall time for the wall-clock kinds' pending start, which uses started_at).
    pending_since_ts: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    fired_ts: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    resolved_ts: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    measured_ts: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))


class AlertCursor(SQLModel, table=True):
    """How far in decision time a rule has been evaluated on one clock.

    Each pass evaluates the steps between this and the clock's watermark, in order, and
    moves it in the same transaction as the alerts it changed: a restarted worker neither
    skips nor repeats a step, and a log replayed at any speed is evaluated at the same
    decision times as the live stream.
    """

    __tablename__ = "alert_cursor"

    rule: str = SQLField(primary_key=True, max_length=100)
    clock: str = SQLField(primary_key=True, max_length=200)  # a router; "" = the deployment
    evaluated_ts: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class AlertPublic(BaseModel):
    id: int
    rule: str
    kind: str
    dedup_key: str
    state: str = Field(
        description="pending (the condition holds, for less than the rule's `for`) | firing "
        "| resolved"
    )
    level: str = Field(description="warn | alert")
    severity: str = Field(description="info | warning | critical")
    router: str | None
    segment: str | None
    title: str
    summary: str
    numbers: dict[str, Any] = Field(
        description="estimate with its 95 % interval (ci_low, ci_high), sample size n, the "
        "value compared, threshold and unit, and the decision-time window"
    )
    started_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolve_reason: str | None
    last_notified_at: datetime | None
    notifications: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    silenced_until: datetime | None
    dashboard_url: str | None
    runbook_url: str | None
    pending_since_ts: datetime | None = Field(
        default=None, description="decision time since which the condition has held"
    )
    fired_ts: datetime | None = Field(
        default=None,
        description="decision time of the measurement that fired it (the budget's day, a "
        "model change's ts); with rule, router and segment it identifies the alert across "
        "a live run and a replay",
    )
    resolved_ts: datetime | None = Field(
        default=None, description="decision time of the measurement that resolved it"
    )
    measured_ts: datetime | None = Field(
        default=None, description="decision time of the latest measurement"
    )


class AlertPage(BaseModel):
    items: list[AlertPublic]
    next_cursor: str | None


class RuleSetPublic(BaseModel):
    source: str = Field(description="`api` (set by PUT) or the rule file's path")
    updated_at: datetime | None
    updated_by: str | None
    rules: list[AlertRule]


class SilenceIn(BaseModel):
    """Either `minutes` from now or an absolute `until`."""

    minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 90)
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_of(self) -> SilenceIn:
        if (self.minutes is None) == (self.until is None):
            raise ValueError("give exactly one of `minutes` or `until`")
        return self


# Indexes the alert evaluator needs on other packages' tables, declared here (where the
# queries are) and created by migration 0007_alerts. Declaring them against the tables
# attaches them to the shared metadata, so migration checks see them as the models'.
_DECISION = Decision.__table__  # type: ignore[attr-defined]
_SHADOW_RUN = ShadowRun.__table__  # type: ignore[attr-defined]
# shadow_backlog: sampled decisions still to be planned, scanned by decision time; partial,
# so it holds the sampled few percent of the traffic only.
Index(
    "ix_decision_sampled_ts",
    _DECISION.c.ts,
    postgresql_where=_DECISION.c.sampled.is_(True),
    sqlite_where=_DECISION.c.sampled.is_(True),
)
# provider_error_rate: shadow runs by the time they finished.
Index("ix_shadow_run_finished", _SHADOW_RUN.c.finished_at)
