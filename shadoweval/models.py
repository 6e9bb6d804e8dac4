"""Imports every table module, so SQLModel.metadata (and Alembic) sees the whole schema."""

from shadoweval.analytics.models import (
    DriftReport,
    SequentialState,
    TrafficWindowSnapshot,
    VerdictWindowSnapshot,
)
from shadoweval.auth.models import ApiKey
from shadoweval.events.models import Event
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge.models import Verdict
from shadoweval.runtime.models import LeaderLease, WorkerHeartbeat
from shadoweval.sampling.models import BudgetDay, SamplingStratum
from shadoweval.shadow.models import ShadowRun

__all__ = [
    "ApiKey",
    "BudgetDay",
    "Decision",
    "DecisionPayload",
    "DriftReport",
    "Event",
    "LeaderLease",
    "SamplingStratum",
    "SequentialState",
    "ShadowRun",
    "TrafficWindowSnapshot",
    "Verdict",
    "VerdictWindowSnapshot",
    "WorkerHeartbeat",
]
