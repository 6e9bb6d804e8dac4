"""Snapshots the aggregator keeps up to date as verdicts and decisions arrive.

Windows are keyed on the decision's `ts` (DESIGN.md, Time). Snapshots hold
sufficient statistics, so adding a verdict is an increment and any estimate
(Hájek rate, variance, interval) is computed from the sums at read time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, JsonType, UtcDateTime

# Sufficient statistics of a verdict window, w = 1/π, v = (1 − π)·w², y = the window's label
# (strong_needed on forward pairs, cheap_acceptable on reverse ones), d = score delta.
SNAPSHOT_SUMS = (
    "labels",
    "judge_errors",
    "skipped_no_payload",
    "skipped_provider_failure",
    "skipped_redacted",
    "skipped_other",
    "inconsistent",
    "sum_w",
    "sum_w2",
    "sum_wy",
    "sum_vw",
    "sum_vwy",
    "sum_w_cheaper",
    "sum_vw_cheaper",
    "sum_w_stronger",
    "sum_vw_stronger",
    "sum_wd",
    "sum_vwd",
    "sum_vwd2",
    "judge_cost_usd",
)


class VerdictWindowSnapshot(SQLModel, table=True):
    __tablename__ = "verdict_window_snapshot"
    __table_args__ = (
        UniqueConstraint(
            "router",
            "segment_value",
            "direction",
            "judge_key",
            "window",
            "window_start",
            name="uq_verdict_window_snapshot",
        ),
        Index("ix_verdict_window_snapshot_start", "window", "window_start"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    segment_value: str = SQLField(max_length=200)
    direction: str = SQLField(max_length=16)
    judge_key: str = SQLField(max_length=300)
    window: str = SQLField(max_length=8)  # hour | day
    window_start: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    labels: int = 0
    judge_errors: int = 0
    skipped_no_payload: int = 0
    skipped_provider_failure: int = 0
    skipped_redacted: int = 0
    skipped_other: int = 0
    inconsistent: int = 0
    sum_w: float = 0.0
    sum_w2: float = 0.0
    sum_wy: float = 0.0
    sum_vw: float = 0.0
    sum_vwy: float = 0.0
    sum_w_cheaper: float = 0.0
    sum_vw_cheaper: float = 0.0
    sum_w_stronger: float = 0.0
    sum_vw_stronger: float = 0.0
    sum_wd: float = 0.0
    sum_vwd: float = 0.0
    sum_vwd2: float = 0.0
    judge_cost_usd: float = 0.0
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


TRAFFIC_SUMS = (
    "decisions",
    "sampled",
    "budget_refused",
    "with_payload",
    "failover",
    "fallback",
    "escalated",
    "cost_usd",
    "router_cost_usd",
)


class TrafficWindowSnapshot(SQLModel, table=True):
    """Decisions per stratum and hour of `ts`, counted at ingest (the funnel's top)."""

    __tablename__ = "traffic_window_snapshot"
    __table_args__ = (
        UniqueConstraint(
            "router", "segment_value", "tier", "window_start", name="uq_traffic_window_snapshot"
        ),
        Index("ix_traffic_window_snapshot_start", "window_start"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    segment_value: str = SQLField(max_length=200)
    tier: str = SQLField(max_length=64)
    window_start: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    decisions: int = 0
    sampled: int = 0
    budget_refused: int = 0
    with_payload: int = 0
    failover: int = 0
    fallback: int = 0
    escalated: int = 0
    cost_usd: float = 0.0
    router_cost_usd: float = 0.0


class SequentialState(SQLModel, table=True):
    """Per segment and pair direction: the quality-drop detector's state, consumed in
    (ts, request_id) order up to the watermark.

    The detector is the change-point GLR of `stats.change_point_detector.change_point_update`: no
    baseline phase, every label is monitored. Its state is bounded: two counts and the
    last `change_point_window_labels` labels with their decision ts.
    """

    __tablename__ = "sequential_state"
    __table_args__ = (
        UniqueConstraint(
            "router", "segment_value", "direction", "judge_key", name="uq_sequential_state"
        ),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    segment_value: str = SQLField(max_length=200)
    direction: str = SQLField(max_length=16)
    judge_key: str = SQLField(max_length=300)
    last_ts: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    last_request_id: str | None = SQLField(default=None, max_length=200)
    # The pre-change side of the current estimate: its harm rate, labels and harms.
    baseline_rate: float | None = None
    baseline_labels: int = 0
    baseline_positives: int = 0
    labels: int = 0  # every label consumed
    positives: int = 0  # their harms
    log_e_value: float = 0.0  # kept for readers of the former mixture SPRT; no longer computed
    # statistic / threshold × ln(sequential_alarm_threshold): readers of the former
    # Shiryaev–Roberts fields (log R against log A) see the detector's progress unchanged.
    log_shiryaev_roberts: float = -1e300
    alarmed_at_ts: datetime | None = SQLField(
        default=None, sa_column=Column(UtcDateTime())
    )  # decision ts of the current alarm; None when not alarmed (or re-armed)
    alarm_labels: int | None = None  # labels consumed at that alarm
    statistic: float = 0.0  # G_n, the log GLR of the best change point, nats (≥ 0)
    threshold: float | None = None  # h in force at the last update
    post_change_labels: int = 0  # labels since the estimated change point (0: no evidence)
    post_change_harms: int = 0
    change_ts: datetime | None = SQLField(
        default=None, sa_column=Column(UtcDateTime())
    )  # decision ts of the first label after the estimated change point
    # The last labels, oldest first ('0'/'1' per label), and their decision ts in epoch
    # microseconds: what later labels need to test change points within the window.
    recent_labels: str = SQLField(default="", sa_column=Column(Text, nullable=False))
    recent_ts: list[int] = SQLField(
        default_factory=list, sa_column=Column(JsonType, nullable=False)
    )
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class DriftReport(SQLModel, table=True):
    """Feature and router-score drift of one window against its reference (Evidently)."""

    __tablename__ = "drift_report"
    __table_args__ = (
        UniqueConstraint("router", "window_start", "window_end", name="uq_drift_report_window"),
    )

    id: int | None = SQLField(
        default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True)
    )
    router: str = SQLField(max_length=200)
    window_start: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    window_end: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    reference_start: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    reference_end: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    status: str = SQLField(max_length=32)
    dataset_drift: bool = False
    drifted_share: float = 0.0
    result: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )
    report_html: str = SQLField(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
