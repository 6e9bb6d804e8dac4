"""Alert tables: rule sets set through the API, and one `alert` row per firing episode."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, model_validator
from sqlalchemy import Column, Index, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.alerts.rules import AlertRule
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
    """One episode of a dedup key (rule, router, segment): firing until clear, then resolved."""

    __tablename__ = "alert"
    __table_args__ = (
        # Equal to dedup_key while firing, NULL once resolved: at most one firing episode per
        # key on both databases (NULLs never collide), without a partial index.
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
    state: str = SQLField(max_length=16)  # firing | resolved
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


class AlertPublic(BaseModel):
    id: int
    rule: str
    kind: str
    dedup_key: str
    state: str = Field(description="firing | resolved")
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
