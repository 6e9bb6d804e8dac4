"""The Table handles of the rows the alert code reads and writes, and the open alert states."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from shadoweval.alerts.models import (
    Alert,
    AlertCursor,
    AlertRuleSet,
)
from shadoweval.analytics.models import (
    DriftReport,
    SequentialState,
    TrafficWindowSnapshot,
)
from shadoweval.events.models import Event
from shadoweval.ingest.models import Decision, TrafficDelta
from shadoweval.judge.models import Verdict
from shadoweval.sampling.models import BudgetDay, SamplingPeriod
from shadoweval.shadow.models import ShadowRun

ALERT_TABLE = cast(Table, Alert.__table__)  # type: ignore[attr-defined]
RULE_SET_TABLE = cast(Table, AlertRuleSet.__table__)  # type: ignore[attr-defined]
STATE_TABLE = cast(Table, SequentialState.__table__)  # type: ignore[attr-defined]
TRAFFIC_TABLE = cast(Table, TrafficWindowSnapshot.__table__)  # type: ignore[attr-defined]
DRIFT_TABLE = cast(Table, DriftReport.__table__)  # type: ignore[attr-defined]
EVENT_TABLE = cast(Table, Event.__table__)  # type: ignore[attr-defined]
DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
VERDICT_TABLE = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
RUN_TABLE = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]
BUDGET_TABLE = cast(Table, BudgetDay.__table__)  # type: ignore[attr-defined]
PERIOD_TABLE = cast(Table, SamplingPeriod.__table__)  # type: ignore[attr-defined]
DELTA_TABLE = cast(Table, TrafficDelta.__table__)  # type: ignore[attr-defined]
CURSOR_TABLE = cast(Table, AlertCursor.__table__)  # type: ignore[attr-defined]

OPEN_STATES = ("pending", "firing")
