"""Imports every table module, so SQLModel.metadata (and Alembic) sees the whole schema."""

from shadoweval.alerts.delivery_models import AlertDelivery, AlertDeliveryAttempt
from shadoweval.alerts.models import Alert, AlertRuleSet
from shadoweval.analytics.models import (
    DriftReport,
    SequentialState,
    TrafficWindowSnapshot,
    VerdictWindowSnapshot,
)
from shadoweval.analytics.session_models import SessionTotal, SessionTotalsState, SessionTurn
from shadoweval.auth.models import ApiKey
from shadoweval.events.models import Event
from shadoweval.feedback.models import Feedback, JudgeWatchState, ReviewAssignment, ReviewLabel
from shadoweval.gate.models import GateItem, GateRun
from shadoweval.ingest.models import Decision, DecisionPayload, TrafficDelta
from shadoweval.judge.models import Verdict, VerdictFoldQueue
from shadoweval.pool.models import ModelWatchState, RouterModel
from shadoweval.runtime.models import LeaderLease, WorkerHeartbeat
from shadoweval.sampling.models import (
    BudgetDay,
    SamplingCursor,
    SamplingPeriod,
    SamplingPeriodStratum,
    SamplingStratum,
)
from shadoweval.shadow.models import ProviderBatch, ShadowRun

__all__ = [
    "Alert",
    "AlertDelivery",
    "AlertDeliveryAttempt",
    "AlertRuleSet",
    "ApiKey",
    "BudgetDay",
    "Decision",
    "DecisionPayload",
    "DriftReport",
    "Event",
    "Feedback",
    "GateItem",
    "GateRun",
    "JudgeWatchState",
    "LeaderLease",
    "ModelWatchState",
    "ProviderBatch",
    "ReviewAssignment",
    "ReviewLabel",
    "RouterModel",
    "SamplingCursor",
    "SamplingPeriod",
    "SamplingPeriodStratum",
    "SamplingStratum",
    "SequentialState",
    "SessionTotal",
    "SessionTotalsState",
    "SessionTurn",
    "ShadowRun",
    "TrafficDelta",
    "TrafficWindowSnapshot",
    "Verdict",
    "VerdictFoldQueue",
    "VerdictWindowSnapshot",
    "WorkerHeartbeat",
]
