"""The gate's tables, callables and item outcome names, shared by every step."""

from __future__ import annotations

from collections.abc import Callable

from shadoweval.gate.models import (
    GateItem,
    GateItemStatus,
    GateRun,
)
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge.models import Outcome
from shadoweval.providers.base import Provider
from shadoweval.sql import table_of

RUN_TABLE = table_of(GateRun)
ITEM_TABLE = table_of(GateItem)
DECISION_TABLE = table_of(Decision)
PAYLOAD_TABLE = table_of(DecisionPayload)

ProviderForModel = Callable[[str], Provider]
KnowsModel = Callable[[str], bool]
OPEN_ITEM_STATUSES = (GateItemStatus.QUEUED, GateItemStatus.RUNNING)
# Item outcomes from the candidate's side (the candidate sits in the judge's "cheaper" slot).
OUTCOME_NAMES = {
    Outcome.CHEAPER_WINS: "candidate_wins",
    Outcome.STRONGER_WINS: "replaced_wins",
    Outcome.TIE: "tie",
    Outcome.INCONSISTENT: "inconsistent",
}
LABELS = {"candidate_wins": 1, "replaced_wins": -1, "tie": 0, "inconsistent": 0}
