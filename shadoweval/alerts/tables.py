"""The Table handles of the rows the alert code reads and writes, and the open alert states."""

from __future__ import annotations

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
from shadoweval.sql import table_of

ALERT_TABLE = table_of(Alert)
RULE_SET_TABLE = table_of(AlertRuleSet)
STATE_TABLE = table_of(SequentialState)
TRAFFIC_TABLE = table_of(TrafficWindowSnapshot)
DRIFT_TABLE = table_of(DriftReport)
EVENT_TABLE = table_of(Event)
DECISION_TABLE = table_of(Decision)
VERDICT_TABLE = table_of(Verdict)
RUN_TABLE = table_of(ShadowRun)
BUDGET_TABLE = table_of(BudgetDay)
PERIOD_TABLE = table_of(SamplingPeriod)
DELTA_TABLE = table_of(TrafficDelta)
CURSOR_TABLE = table_of(AlertCursor)

OPEN_STATES = ("pending", "firing")
