"""The tables and row classes of hourly sampling's periods: what a period's plan holds,
what one draw decided, what a pass reports, and reading a stored plan back."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import select
from sqlmodel import Session

from shadoweval.analytics.models import TrafficWindowSnapshot
from shadoweval.config import Settings
from shadoweval.db import aware_utc
from shadoweval.events.models import Event, EventKind
from shadoweval.ingest.models import Decision, DecisionPayload, TrafficDelta
from shadoweval.judge.models import Verdict
from shadoweval.sampling import threshold_band
from shadoweval.sampling.models import (
    BudgetDay,
    SamplingCursor,
    SamplingPeriod,
    SamplingPeriodStratum,
    SamplingStratum,
)
from shadoweval.sampling.service import (
    BOOST_ACCOUNT,
    SHADOW_ACCOUNT,
)
from shadoweval.shadow.models import ShadowRun
from shadoweval.sql import table_of

DECISION = table_of(Decision)


PAYLOAD = table_of(DecisionPayload)


VERDICT = table_of(Verdict)


SHADOW_RUN = table_of(ShadowRun)


TRAFFIC = table_of(TrafficWindowSnapshot)


DELTA = table_of(TrafficDelta)


EVENT = table_of(Event)


PERIOD = table_of(SamplingPeriod)


PERIOD_STRATUM = table_of(SamplingPeriodStratum)


CURSOR = table_of(SamplingCursor)


STRATUM = table_of(SamplingStratum)


BUDGET = table_of(BudgetDay)


CURSOR_NAME = "periods"


StratumId = tuple[str, str, str]  # router, segment value, tier


@dataclass
class PeriodPassResult:
    periods: int = 0
    decided: int = 0
    sampled: int = 0
    refused: int = 0
    late: int = 0
    # Why the next period waits: "open" (decision time not past it), "labels" (the label
    # gate), or None (nothing waiting).
    waiting: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _PlannedStratum:
    inclusion_probability: float
    cost_per_sample_usd: float


class _Draw(NamedTuple):
    """A decision's π and what decides its budget account: a hash below `base` or at or
    above `boosted` (the threshold band's part) is the shadow account's, between them the
    boost's."""

    probability: float
    base: float
    boosted: float
    cost: float

    def account(self, hash_value: float) -> str:
        if hash_value < self.base or hash_value >= self.boosted:
            return SHADOW_ACCOUNT
        return BOOST_ACCOUNT


@dataclass
class _PeriodPlan:
    strata: dict[StratumId, _PlannedStratum]
    boosts: dict[tuple[str, str], list[tuple[datetime, datetime]]]  # (router, tier) → spans
    default_rates: dict[str, float]
    default_cost: float
    boost_factor: float
    bands: dict[StratumId, threshold_band.Band] = field(default_factory=dict)

    def probability(
        self, router: str, segment: str, tier: str, ts: datetime, score: float | None = None
    ) -> _Draw:
        """π of a decision at ts with its score (boost and threshold band included)."""
        planned = self.strata.get((router, segment, tier))
        base = (
            planned.inclusion_probability
            if planned is not None
            else self.default_rates.get(tier, self.default_rates.get("*", 0.0))
        )
        cost = planned.cost_per_sample_usd if planned is not None else self.default_cost
        boosted = base
        for start, end in self.boosts.get((router, tier), ()):
            if start <= ts < end and self.boost_factor > 1:
                boosted = min(1.0, max(base, 1e-9) * self.boost_factor)
                break
        band = self.bands.get((router, segment, tier))
        pi = boosted
        if band is not None and band.contains(score):
            pi = threshold_band.combined_probability(boosted, band.inclusion_probability)
        return _Draw(pi, base, boosted, cost)


def _boosts(
    session: Session, settings: Settings, end: datetime
) -> dict[tuple[str, str], list[tuple[datetime, datetime]]]:
    span = timedelta(hours=settings.model_change_boost_hours)
    boosts: dict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    if span <= timedelta(0):
        return boosts
    for router, ts, details in session.execute(
        select(EVENT.c.router, EVENT.c.ts, EVENT.c.details).where(
            EVENT.c.kind == EventKind.MODEL_CHANGE, EVENT.c.ts >= end - span, EVENT.c.ts < end
        )
    ):
        tier = (details or {}).get("tier")
        start = aware_utc(ts)
        if router and tier and start is not None:
            boosts[(router, str(tier))].append((start, start + span))
    return boosts


def _stored_plan(session: Session, settings: Settings, start: datetime) -> _PeriodPlan:
    """The plan a closed period was sampled with, for decisions that arrive late."""
    c = PERIOD_STRATUM.c
    strata: dict[StratumId, _PlannedStratum] = {}
    bands: dict[StratumId, threshold_band.Band] = {}
    for r in session.execute(select(PERIOD_STRATUM).where(c.period_start == start)):
        stratum_id = (r.router, r.segment_value, r.tier)
        strata[stratum_id] = _PlannedStratum(r.inclusion_probability, r.cost_per_sample_usd)
        if r.band_score_low is not None and r.band_score_high is not None:
            bands[stratum_id] = threshold_band.Band(
                r.band_score_low, r.band_score_high, r.band_inclusion_probability
            )
    return _PeriodPlan(
        bands=bands,
        strata=strata,
        boosts=_boosts(
            session, settings, start + timedelta(minutes=settings.sampling_period_minutes)
        ),
        default_rates={**{"*": settings.sampling_default_rate}, **settings.sampling_rate_by_tier},
        default_cost=settings.default_cost_per_sample_usd,
        boost_factor=settings.model_change_boost_factor,
    )
