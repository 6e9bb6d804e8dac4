"""Imports every table module, so SQLModel.metadata (and Alembic) sees the whole schema."""

from shadoweval.auth.models import ApiKey
from shadoweval.ingest.models import Decision, DecisionPayload

__all__ = ["ApiKey", "Decision", "DecisionPayload"]
