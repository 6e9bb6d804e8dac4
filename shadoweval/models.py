"""Imports every table module, so SQLModel.metadata (and Alembic) sees the whole schema."""

from shadoweval.auth.models import ApiKey
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge.models import Verdict
from shadoweval.runtime.models import LeaderLease, WorkerHeartbeat
from shadoweval.shadow.models import ShadowRun

__all__ = [
    "ApiKey",
    "Decision",
    "DecisionPayload",
    "LeaderLease",
    "ShadowRun",
    "Verdict",
    "WorkerHeartbeat",
]
