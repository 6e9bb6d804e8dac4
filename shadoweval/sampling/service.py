"""Sampling service: the plan ingest samples by, the daily budget, the planner, boosts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics.models import TrafficWindowSnapshot, VerdictWindowSnapshot
from shadoweval.config import Settings
from shadoweval.db import aware_utc, utcnow
from shadoweval.events import service as events
from shadoweval.events.models import EventKind
from shadoweval.ingest.models import TrafficDelta
from shadoweval.sampling import allocation, planning, policy
from shadoweval.sampling.models import BudgetDay, BudgetPublic, SamplingStratum, StratumPublic
from shadoweval.sql import dialect_of, table_of

log = logging.getLogger(__name__)

STRATUM_TABLE = table_of(SamplingStratum)
BUDGET_TABLE = table_of(BudgetDay)
TRAFFIC_TABLE = table_of(TrafficWindowSnapshot)
DELTA_TABLE = table_of(TrafficDelta)
VERDICT_SNAPSHOT_TABLE = table_of(VerdictWindowSnapshot)

SHADOW_ACCOUNT, BOOST_ACCOUNT = "shadow", "boost"
StratumId = tuple[str, str, str]  # router, segment value, tier


@dataclass(frozen=True)
class PlannedStratum:
    inclusion_probability: float
    cost_per_sample_usd: float
    boost_factor: float = 1.0
    boosted_until: datetime | None = None

    def probability_at(self, ts: datetime) -> tuple[float, float]:
        """(π in force at `ts`, π without the boost)."""
        base = self.inclusion_probability
        if self.boosted_until is not None and ts < self.boosted_until and self.boost_factor > 1:
            return min(1.0, max(base, 1e-9) * self.boost_factor), base
        return base, base


@dataclass
class SamplingPlan:
    """The planner's strata as ingest reads them, reloaded every `plan_refresh_seconds`."""

    strata: dict[StratumId, PlannedStratum] = field(default_factory=dict)
    loaded_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def is_fresh(self, max_age_s: float) -> bool:
        return bool(self.loaded_at) and time.monotonic() - self.loaded_at < max_age_s

    def refresh_if_stale(self, engine: Engine, max_age_s: float) -> None:
        if self.is_fresh(max_age_s):
            return
        with self._lock:
            if self.is_fresh(max_age_s):
                return
            with engine.connect() as connection:
                rows = connection.execute(select(STRATUM_TABLE)).mappings().all()
            self.strata = {
                (r["router"], r["segment_value"], r["tier"]): PlannedStratum(
                    inclusion_probability=r["inclusion_probability"],
                    cost_per_sample_usd=r["cost_per_sample_usd"],
                    boost_factor=r["boost_factor"],
                    boosted_until=aware_utc(r["boosted_until"]),
                )
                for r in rows
            }
            self.loaded_at = time.monotonic()

    def lookup(self, settings: Settings, router: str, segment: str, tier: str) -> PlannedStratum:
        planned = self.strata.get((router, segment, tier))
        if planned is not None:
            return planned
        # A stratum the planner has not seen yet samples at the configured default.
        return PlannedStratum(
            inclusion_probability=policy.constant_inclusion_probability(
                tier, settings.sampling_rate_by_tier, settings.sampling_default_rate
            ),
            cost_per_sample_usd=settings.default_cost_per_sample_usd,
        )


# --- budget ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A freshly stored sampled decision asking for budget."""

    decision_id: int
    day: str
    account: str
    cost_usd: float
    hash_value: float  # reservation order within a batch: the sampling hash, reproducible


@dataclass
class ReservationResult:
    refused_ids: list[int] = field(default_factory=list)
    exhausted: list[tuple[str, str]] = field(default_factory=list)  # (day, account) newly spent


def _budget_for(settings: Settings, account: str) -> float:
    return (
        settings.boost_daily_budget_usd
        if account == BOOST_ACCOUNT
        else settings.daily_shadow_budget_usd
    )


def reserve_budget(
    session: Session, settings: Settings, candidates: Iterable[Candidate]
) -> ReservationResult:
    """Reserve each candidate's estimated cost on its day's budget, in hash order; refuse the
    rest. Runs inside the ingest transaction, so the reservation commits with the rows.

    On PostgreSQL the budget row is locked (FOR UPDATE) while a batch reserves; SQLite's
    write lock serialises ingest transactions already.
    """
    result = ReservationResult()
    by_account: dict[tuple[str, str], list[Candidate]] = {}
    for candidate in candidates:
        by_account.setdefault((candidate.day, candidate.account), []).append(candidate)
    dialect = dialect_of(session)
    insert = dialect.insert
    for (day, account), group in sorted(by_account.items()):
        session.execute(
            insert(BUDGET_TABLE)
            .values(
                day=day,
                account=account,
                budget_usd=_budget_for(settings, account),
                reserved_usd=0.0,
                sampled=0,
                refused=0,
            )
            .on_conflict_do_nothing(index_elements=["day", "account"])
        )
        query = dialect.lock_for_update(
            select(BUDGET_TABLE).where(BUDGET_TABLE.c.day == day, BUDGET_TABLE.c.account == account)
        )
        row = session.execute(query).mappings().one()
        remaining = row["budget_usd"] - row["reserved_usd"]
        accepted_cost, accepted, refused = 0.0, 0, 0
        for candidate in sorted(group, key=lambda c: (c.hash_value, c.decision_id)):
            if accepted_cost + candidate.cost_usd <= remaining + 1e-12:
                accepted_cost += candidate.cost_usd
                accepted += 1
            else:
                refused += 1
                result.refused_ids.append(candidate.decision_id)
        values: dict[str, Any] = {
            "reserved_usd": BUDGET_TABLE.c.reserved_usd + accepted_cost,
            "sampled": BUDGET_TABLE.c.sampled + accepted,
            "refused": BUDGET_TABLE.c.refused + refused,
        }
        if refused and row["exhausted_at"] is None:
            values["exhausted_at"] = utcnow()
            result.exhausted.append((day, account))
        session.execute(
            update(BUDGET_TABLE)
            .where(BUDGET_TABLE.c.day == day, BUDGET_TABLE.c.account == account)
            .values(**values)
        )
    for day, account in result.exhausted:
        events.record_event(
            session,
            kind=EventKind.BUDGET_EXHAUSTED,
            dedup_key=f"{day}/{account}",
            ts=datetime.fromisoformat(day + "T00:00:00+00:00"),
            details={
                "day": day,
                "account": account,
                "budget_usd": _budget_for(settings, account),
                "message": f"the {account} budget of {day} is spent; "
                "sampling stops until the next UTC day",
            },
        )
    return result


def list_budget(*, session: Session, since_day: str | None = None) -> list[BudgetPublic]:
    query = select(BudgetDay).order_by(BUDGET_TABLE.c.day, BUDGET_TABLE.c.account)
    if since_day:
        query = query.where(BUDGET_TABLE.c.day >= since_day)
    return [BudgetPublic.model_validate(b, from_attributes=True) for b in session.scalars(query)]


# --- planner -----------------------------------------------------------------------------


def plan_sampling(
    *, session: Session, settings: Settings, now: datetime | None = None
) -> allocation.Allocation:
    """Recompute π for every stratum with traffic before `now` (decision time) and store it:
    the plan ingest samples by in `at_ingest` mode (planning.build_strata: traffic over
    `planner_traffic_days`, labels and learned costs of decisions before `now`, floors from
    the detector's labels_to_detect within `detection_window_days`)."""
    now = now or utcnow()
    # The hour `now` falls in counts too: at ingest the plan follows the log as it stands.
    hour_end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    plan, rows = planning.build_strata(
        session, settings, traffic_before=hour_end, labels_before=now
    )
    insert = dialect_of(session).insert
    for row in rows:
        values = {
            k: v
            for k, v in row.items()
            if k not in ("router", "segment_value", "tier", "cost_learned_from")
        }
        values["updated_at"] = now
        session.execute(
            insert(STRATUM_TABLE)
            .values(
                router=row["router"],
                segment_value=row["segment_value"],
                tier=row["tier"],
                boost_factor=1.0,
                **values,
            )
            .on_conflict_do_update(index_elements=["router", "segment_value", "tier"], set_=values)
        )
    session.commit()
    for note in plan.notes:
        log.info("sampling plan: %s", note)
    return plan


def boost(*, session: Session, router: str, tier: str, until: datetime, factor: float = 5.0) -> int:
    """Sample a router's tier `factor` times more often until `until` (after a model change);
    boosted samples draw on the boost budget. Returns the strata boosted."""
    if factor < 1:
        raise ValueError("a boost factor is at least 1")
    result = session.execute(
        update(STRATUM_TABLE)
        .where(STRATUM_TABLE.c.router == router, STRATUM_TABLE.c.tier == tier)
        .values(boost_factor=factor, boosted_until=until)
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def list_strata(*, session: Session, router: str | None = None) -> list[StratumPublic]:
    query = select(SamplingStratum).order_by(
        STRATUM_TABLE.c.router, STRATUM_TABLE.c.segment_value, STRATUM_TABLE.c.tier
    )
    if router is not None:
        query = query.where(STRATUM_TABLE.c.router == router)
    return [StratumPublic.model_validate(s, from_attributes=True) for s in session.scalars(query)]
