"""Hourly sampling: π decided per closed decision-time period (DESIGN.md, Time and Sampling).

Clock: decision time only. A period [s, e) of `sampling_period_minutes` closes when every
router that has reached it is `sampling_close_lateness_seconds` of decision time past e
(a router still inside it whose decision time has not moved for `sampling_idle_close_seconds`
of wall time no longer holds it open: the end of a stream, a router gone quiet).
Its plan is then computed from
- traffic of the whole hours before s (ingest's hourly counts),
- labels and costs of decisions before s − `sampling_label_lag_minutes`, and only once
  every sampled decision before that point is judged (the label gate),
- model_change events up to e (a boost applies from the event's ts),
so it depends only on the log, never on how far the worker or the wall clock has got: a
replay at any speed samples the same decisions. The decisions of the period are then
sampled by the deterministic hash against π, their cost reserved on the UTC day of their
ts in hash order, and payloads of decisions not sampled deleted (`store_payloads=sampled`).
A decision that arrives after its period closed is sampled with the period's stored plan.

Budget: a period's reservations are reconciled with what its samples really cost once
their labels are in (the first period planned at least the label lag later), so the
day's committed spend is actual cost for judged work plus reservations for work in flight.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, func, select, update
from sqlmodel import Session

from shadoweval import clock
from shadoweval.analytics.models import TrafficWindowSnapshot
from shadoweval.config import Settings
from shadoweval.db import aware_utc, take_sqlite_write_lock, utcnow
from shadoweval.events.models import Event, EventKind
from shadoweval.events.service import record_event
from shadoweval.ingest.models import AWAITING_PLAN, Decision, DecisionPayload, TrafficDelta
from shadoweval.judge.models import OPEN_VERDICT_STATUSES, Verdict
from shadoweval.sampling import allocation, planning, policy
from shadoweval.sampling.models import (
    BudgetDay,
    PeriodPublic,
    SamplingCursor,
    SamplingPeriod,
    SamplingPeriodStratum,
    SamplingStratum,
)
from shadoweval.sampling.service import (
    BOOST_ACCOUNT,
    SHADOW_ACCOUNT,
    Candidate,
    reserve_budget,
)
from shadoweval.shadow.models import ShadowRun
from shadoweval.sql import dialect_of, table_of

log = logging.getLogger(__name__)

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


@dataclass
class _PeriodPlan:
    strata: dict[StratumId, _PlannedStratum]
    boosts: dict[tuple[str, str], list[tuple[datetime, datetime]]]  # (router, tier) → spans
    default_rates: dict[str, float]
    default_cost: float
    boost_factor: float

    def probability(
        self, router: str, segment: str, tier: str, ts: datetime
    ) -> tuple[float, float, float]:
        """(π at ts, π without the boost, cost to reserve) of a decision."""
        planned = self.strata.get((router, segment, tier))
        base = (
            planned.inclusion_probability
            if planned is not None
            else self.default_rates.get(tier, self.default_rates.get("*", 0.0))
        )
        cost = planned.cost_per_sample_usd if planned is not None else self.default_cost
        for start, end in self.boosts.get((router, tier), ()):
            if start <= ts < end and self.boost_factor > 1:
                return min(1.0, max(base, 1e-9) * self.boost_factor), base, cost
        return base, base, cost


def period_start_of(ts: datetime, minutes: int) -> datetime:
    """The start of the sampling period holding `ts` (periods are aligned to UTC midnight)."""
    ts = ts.astimezone(UTC)
    midnight = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = int((ts - midnight).total_seconds() // 60)
    return midnight + timedelta(minutes=elapsed - elapsed % minutes)


# --- the cursor and the gates ------------------------------------------------------------------


def _cursor(session: Session) -> dict[str, Any]:
    dialect = dialect_of(session)
    session.execute(dialect.insert_or_ignore(CURSOR, {"name": CURSOR_NAME}, conflict_on=["name"]))
    # One planner at a time, whoever holds the lead.
    query = dialect.lock_for_update(select(CURSOR).where(CURSOR.c.name == CURSOR_NAME))
    return dict(session.execute(query).mappings().one())


def _earliest_awaiting(session: Session, at_or_after: datetime | None = None) -> datetime | None:
    query = select(func.min(DECISION.c.ts)).where(DECISION.c.sampling_skip_reason == AWAITING_PLAN)
    if at_or_after is not None:
        query = query.where(DECISION.c.ts >= at_or_after)
    return aware_utc(session.execute(query).scalar())


def label_watermark(session: Session) -> datetime | None:
    """The earliest ts of a sampled decision still waiting for its verdict; None when none."""
    open_verdict = session.execute(
        select(func.min(VERDICT.c.ts)).where(VERDICT.c.status.in_(OPEN_VERDICT_STATUSES))
    ).scalar()
    unplanned = session.execute(
        select(func.min(DECISION.c.ts)).where(
            DECISION.c.sampled.is_(True),
            ~select(VERDICT.c.id).where(VERDICT.c.decision_id == DECISION.c.id).exists(),
        )
    ).scalar()
    found = [t for t in (aware_utc(open_verdict), aware_utc(unplanned)) if t is not None]
    return min(found) if found else None


def _idle_routers(
    session: Session, clocks: dict[str, datetime], wall_now: datetime, idle_seconds: float
) -> set[str]:
    """Routers whose decision time has not moved for `idle_seconds` of wall time: they no
    longer hold a period open (a router that went quiet must not stop everyone's sampling)."""
    names = {f"router:{router}": router for router in clocks}
    insert = dialect_of(session).insert
    for name, router in names.items():
        session.execute(
            insert(CURSOR)
            .values(name=name, watermark_seen=clocks[router], watermark_seen_at=wall_now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
    idle: set[str] = set()
    for name, seen, seen_at in session.execute(
        select(CURSOR.c.name, CURSOR.c.watermark_seen, CURSOR.c.watermark_seen_at).where(
            CURSOR.c.name.in_(list(names))
        )
    ):
        router = names[name]
        if aware_utc(seen) != clocks[router]:
            session.execute(
                update(CURSOR)
                .where(CURSOR.c.name == name)
                .values(watermark_seen=clocks[router], watermark_seen_at=wall_now)
            )
        elif (wall_now - cast(datetime, aware_utc(seen_at))).total_seconds() >= idle_seconds:
            idle.add(router)
    return idle


def closed_by(
    start: datetime,
    end: datetime,
    clocks: dict[str, datetime],
    idle: set[str],
    lateness: timedelta,
) -> str | None:
    """Whether period [start, end) is closed, and by what: `watermark` when every router that
    reached it is `lateness` past its end, `idle` when the only routers still inside it have
    stopped moving; None while a router is still inside it."""
    inside = {r for r, now in clocks.items() if start <= now < end + lateness}
    if not any(now >= start for now in clocks.values()):
        return None
    if not inside:
        return "watermark"
    return "idle" if inside <= idle else None


# --- the plan of one period ---------------------------------------------------------------------


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


def plan_period(
    session: Session, settings: Settings, start: datetime, labels_before: datetime
) -> tuple[_PeriodPlan, list[dict[str, Any]], allocation.Allocation]:
    """The plan of the period starting at `start`: π and reservation cost per stratum, from
    the whole hours of traffic before `start` and the labels and costs of decisions before
    `labels_before`; records a `sampling_shortfall` where the budget cannot buy a floor."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    plan, rows = planning.build_strata(
        session, settings, traffic_before=hour, labels_before=labels_before
    )
    planned: dict[StratumId, _PlannedStratum] = {}
    for row in rows:
        stratum_id = (row["router"], row["segment_value"], row["tier"])
        planned[stratum_id] = _PlannedStratum(
            row["inclusion_probability"], row["cost_per_sample_usd"]
        )
        # Every decision sampled and still short: the segment is small, not the budget; that
        # shows in /v1/sampling only, an event would repeat it every day.
        if (
            row["floor_shortfall_per_day"] > 1e-6
            and not row["is_reverse"]
            and row["inclusion_probability"] < 0.999
        ):
            _record_shortfall(
                session,
                router=row["router"],
                segment=row["segment_value"],
                tier=row["tier"],
                start=start,
                floor=row["floor_samples_per_day"],
                planned=row["expected_samples_per_day"],
            )
    period_plan = _PeriodPlan(
        strata=planned,
        boosts=_boosts(
            session, settings, start + timedelta(minutes=settings.sampling_period_minutes)
        ),
        default_rates={
            **{"*": settings.sampling_default_rate},
            **settings.sampling_rate_by_tier,
        },
        default_cost=settings.default_cost_per_sample_usd,
        boost_factor=settings.model_change_boost_factor,
    )
    return period_plan, rows, plan


def _record_shortfall(
    session: Session,
    *,
    router: str,
    segment: str,
    tier: str,
    start: datetime,
    floor: float,
    planned: float,
) -> None:
    """One `sampling_shortfall` event per segment and decision day whose plan cannot buy the
    labels that detect the configured drop within the detection window."""
    day = start.strftime("%Y-%m-%d")
    record_event(
        session,
        kind=EventKind.SAMPLING_SHORTFALL,
        dedup_key=f"{router}/{segment}/{tier}/{day}",
        ts=start,
        router=router,
        details={
            "segment": segment,
            "tier": tier,
            "day": day,
            "floor_labels_per_day": round(floor, 2),
            "planned_labels_per_day": round(planned, 2),
            "shortfall_labels_per_day": round(floor - planned, 2),
            "reason": "budget",
            "message": f"{segment}: {planned:.1f} labels a day planned, {floor:.1f} needed to "
            "detect the configured harm rise within the detection window; the daily shadow "
            "budget cannot pay for every segment's floor",
        },
    )


def _stored_plan(session: Session, settings: Settings, start: datetime) -> _PeriodPlan:
    """The plan a closed period was sampled with, for decisions that arrive late."""
    c = PERIOD_STRATUM.c
    strata = {
        (r.router, r.segment_value, r.tier): _PlannedStratum(
            r.inclusion_probability, r.cost_per_sample_usd
        )
        for r in session.execute(select(PERIOD_STRATUM).where(c.period_start == start))
    }
    return _PeriodPlan(
        strata=strata,
        boosts=_boosts(
            session, settings, start + timedelta(minutes=settings.sampling_period_minutes)
        ),
        default_rates={**{"*": settings.sampling_default_rate}, **settings.sampling_rate_by_tier},
        default_cost=settings.default_cost_per_sample_usd,
        boost_factor=settings.model_change_boost_factor,
    )


# --- deciding decisions -----------------------------------------------------------------------


@dataclass
class _Decided:
    decisions: int = 0
    sampled: int = 0
    refused: int = 0
    boost_refused: int = 0
    reserved: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_stratum: dict[StratumId, list[float]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0.0])
    )  # decisions, sampled, refused, reserved USD


def _decide(
    session: Session,
    settings: Settings,
    plan: _PeriodPlan,
    start: datetime,
    end: datetime,
) -> _Decided:
    """Sample the awaiting decisions of [start, end) by the plan, reserve their budget, and
    write the outcome: π on every row, payloads of the unsampled deleted, traffic counts."""
    d = DECISION.c
    rows = session.execute(
        select(d.id, d.router, d.request_id, d.segment_value, d.tier, d.ts).where(
            d.sampling_skip_reason == AWAITING_PLAN, d.ts >= start, d.ts < end
        )
    ).all()
    outcome = _Decided(decisions=len(rows))
    if not rows:
        return outcome
    probability: dict[int, float] = {}
    candidates: list[Candidate] = []
    cost_of: dict[int, float] = {}
    stratum_of: dict[int, StratumId] = {}
    hour_of: dict[int, datetime] = {}
    for decision_id, router, request_id, segment, tier, ts in rows:
        ts = aware_utc(ts)
        assert ts is not None
        pi, base, cost = plan.probability(router, segment, tier, ts)
        hash_value = policy.sampling_hash(router, request_id)
        probability[decision_id] = pi
        stratum_of[decision_id] = (router, segment, tier)
        hour_of[decision_id] = ts.replace(minute=0, second=0, microsecond=0)
        outcome.by_stratum[(router, segment, tier)][0] += 1
        if hash_value < pi:
            cost_of[decision_id] = cost
            candidates.append(
                Candidate(
                    decision_id=decision_id,
                    day=ts.strftime("%Y-%m-%d"),
                    account=SHADOW_ACCOUNT if hash_value < base else BOOST_ACCOUNT,
                    cost_usd=cost,
                    hash_value=hash_value,
                )
            )
    refused = (
        set(reserve_budget(session, settings, candidates).refused_ids) if candidates else set()
    )
    sampled_ids = [c.decision_id for c in candidates if c.decision_id not in refused]
    for candidate in candidates:
        if candidate.decision_id not in refused:
            outcome.reserved[candidate.account] += candidate.cost_usd
    outcome.sampled, outcome.refused = len(sampled_ids), len(refused)
    outcome.boost_refused = sum(
        1 for c in candidates if c.decision_id in refused and c.account == BOOST_ACCOUNT
    )

    by_value: dict[float, list[int]] = defaultdict(list)
    for decision_id, pi in probability.items():
        if decision_id not in refused:
            by_value[pi].append(decision_id)
    sampled_set = set(sampled_ids)
    for pi, ids in by_value.items():
        for chunk in _chunks(sorted(ids), 900):
            in_chunk = [i for i in chunk if i in sampled_set]
            out_chunk = [i for i in chunk if i not in sampled_set]
            for group, sampled in ((in_chunk, True), (out_chunk, False)):
                if group:
                    session.execute(
                        update(DECISION)
                        .where(d.id.in_(group))
                        .values(
                            inclusion_probability=pi, sampled=sampled, sampling_skip_reason=None
                        )
                    )
    for chunk in _chunks(sorted(refused), 900):
        session.execute(
            update(DECISION)
            .where(d.id.in_(chunk))
            .values(
                inclusion_probability=0.0, sampled=False, sampling_skip_reason="budget_exhausted"
            )
        )
    if settings.store_payloads == "sampled":
        unsampled = sorted(set(probability) - sampled_set)
        for chunk in _chunks(unsampled, 900):
            session.execute(PAYLOAD.delete().where(PAYLOAD.c.decision_id.in_(chunk)))
            session.execute(
                update(DECISION)
                .where(d.id.in_(chunk), d.payload_stored.is_(True))
                .values(payload_stored=False, payload_redacted=False)
            )
    # The funnel's "sampled" and "refused" counts, as ingest would have counted them.
    counts: dict[tuple[str, str, str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for decision_id in probability:
        router, segment, tier = stratum_of[decision_id]
        key = (router, segment, tier, hour_of[decision_id])
        stratum = outcome.by_stratum[stratum_of[decision_id]]
        if decision_id in sampled_set:
            counts[key][0] += 1
            stratum[1] += 1
            stratum[3] += cost_of[decision_id]
        elif decision_id in refused:
            counts[key][1] += 1
            stratum[2] += 1
    if counts:
        session.execute(
            DELTA.insert(),
            [
                {
                    "router": router,
                    "segment_value": segment,
                    "tier": tier,
                    "window_start": hour,
                    **dict.fromkeys(_DELTA_ZEROS, 0),
                    "sampled": sampled,
                    "budget_refused": refused_n,
                }
                for (router, segment, tier, hour), (sampled, refused_n) in counts.items()
            ],
        )
    return outcome


_DELTA_ZEROS = (
    "decisions",
    "with_payload",
    "failover",
    "fallback",
    "escalated",
    "cost_usd",
    "router_cost_usd",
)


def _chunks(values: Sequence[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(values), size):
        yield list(values[i : i + size])


# --- reconciliation --------------------------------------------------------------------------


def _reconcile(session: Session, settings: Settings, labels_before: datetime) -> int:
    """Replace the reservations of periods whose labels are all in by what they cost."""
    p = PERIOD.c
    periods = session.execute(
        select(p.period_start, p.period_end, p.reserved_usd, p.boost_reserved_usd).where(
            p.reconciled.is_(False), p.period_end <= labels_before
        )
    ).all()
    for start, end, reserved_shadow, reserved_boost in periods:
        start, end = aware_utc(start), aware_utc(end)
        assert start is not None
        assert end is not None
        costs = planning.sample_costs(session, start, end)
        actual: dict[str, float] = defaultdict(float)
        if costs:
            plan = _stored_plan(session, settings, start)
            d = DECISION.c
            for decision_id, router, request_id, segment, tier, ts in session.execute(
                select(d.id, d.router, d.request_id, d.segment_value, d.tier, d.ts).where(
                    d.id.in_(list(costs))
                )
            ):
                ts = aware_utc(ts)
                assert ts is not None
                _pi, base, _cost = plan.probability(router, segment, tier, ts)
                account = (
                    SHADOW_ACCOUNT
                    if policy.sampling_hash(router, request_id) < base
                    else BOOST_ACCOUNT
                )
                actual[account] += costs[decision_id][3]
        day = start.strftime("%Y-%m-%d")
        for account, reserved in (
            (SHADOW_ACCOUNT, reserved_shadow),
            (BOOST_ACCOUNT, reserved_boost),
        ):
            change = actual[account] - float(reserved or 0.0)
            if change:
                session.execute(
                    update(BUDGET)
                    .where(BUDGET.c.day == day, BUDGET.c.account == account)
                    .values(reserved_usd=BUDGET.c.reserved_usd + change)
                )
        session.execute(
            update(PERIOD)
            .where(p.period_start == start)
            .values(reconciled=True, actual_usd=sum(actual.values()))
        )
    return len(periods)


# --- the pass -------------------------------------------------------------------------------


def sample_closed_periods(
    *, session: Session, settings: Settings, wall_now: datetime | None = None, max_periods: int = 96
) -> PeriodPassResult:
    """Plan and sample every closed period whose label gate is open, oldest first; sample
    late decisions of periods already closed. One transaction per period: a crash repeats
    nothing finished (decided decisions are no longer `awaiting_plan`)."""
    wall_now = wall_now or utcnow()  # wall clock: only the idle close and `planned_at`
    minutes = settings.sampling_period_minutes
    length = timedelta(minutes=minutes)
    lateness = timedelta(seconds=settings.sampling_close_lateness_seconds)
    lag = timedelta(minutes=settings.sampling_label_lag_minutes)
    result = PeriodPassResult()
    take_sqlite_write_lock(session)
    cursor = _cursor(session)
    clocks = clock.decision_now_by_router(
        session, skew_seconds=settings.decision_clock_skew_seconds, wall_now=wall_now
    )
    if not clocks:
        session.commit()
        return result
    idle = _idle_routers(session, clocks, wall_now, settings.sampling_idle_close_seconds)
    next_start = aware_utc(cursor["next_period_start"])
    session.commit()

    if next_start is not None:
        result.late = _decide_late(session, settings, next_start)

    while result.periods < max_periods:
        take_sqlite_write_lock(session)
        earliest = _earliest_awaiting(session, next_start)
        if earliest is None:
            result.waiting = None
            break
        start = period_start_of(earliest, minutes)
        if next_start is not None:
            start = max(start, next_start)
        end = start + length
        closed = closed_by(start, end, clocks, idle, lateness)
        if closed is None:
            result.waiting = "open"
            break
        labels_before = start - lag
        gate = label_watermark(session)
        if gate is not None and gate < labels_before:
            result.waiting = "labels"
            break
        _reconcile(session, settings, labels_before)
        plan, stratum_rows, allocation_result = plan_period(session, settings, start, labels_before)
        decided = _decide(session, settings, plan, start, end)
        _store_period(session, start, end, labels_before, closed, stratum_rows, decided, wall_now)
        session.execute(
            update(CURSOR).where(CURSOR.c.name == CURSOR_NAME).values(next_period_start=end)
        )
        session.commit()
        next_start = end
        result.periods += 1
        result.decided += decided.decisions
        result.sampled += decided.sampled
        result.refused += decided.refused
        if not allocation_result.floors_met:
            result.notes.extend(allocation_result.notes)
    session.commit()
    for note in dict.fromkeys(result.notes):
        log.info("sampling plan: %s", note)
    return result


def _decide_late(session: Session, settings: Settings, before: datetime) -> int:
    """Decisions that arrived after their period closed: sampled by the period's stored plan."""
    minutes = settings.sampling_period_minutes
    d = DECISION.c
    starts = sorted(
        {
            period_start_of(cast(datetime, aware_utc(ts)), minutes)
            for (ts,) in session.execute(
                select(d.ts).where(d.sampling_skip_reason == AWAITING_PLAN, d.ts < before)
            )
        }
    )
    late = 0
    for start in starts:
        take_sqlite_write_lock(session)
        end = start + timedelta(minutes=minutes)
        decided = _decide(session, settings, _stored_plan(session, settings, start), start, end)
        if decided.decisions:
            session.execute(
                update(PERIOD)
                .where(PERIOD.c.period_start == start)
                .values(
                    decisions=PERIOD.c.decisions + decided.decisions,
                    sampled=PERIOD.c.sampled + decided.sampled,
                    refused=PERIOD.c.refused + decided.refused,
                    boost_refused=PERIOD.c.boost_refused + decided.boost_refused,
                    reserved_usd=PERIOD.c.reserved_usd + decided.reserved[SHADOW_ACCOUNT],
                    boost_reserved_usd=PERIOD.c.boost_reserved_usd
                    + decided.reserved[BOOST_ACCOUNT],
                )
            )
        session.commit()
        late += decided.decisions
    if late:
        log.info("sampled %d decisions that arrived after their period closed", late)
    return late


def _store_period(
    session: Session,
    start: datetime,
    end: datetime,
    labels_before: datetime,
    closed_by: str,
    stratum_rows: list[dict[str, Any]],
    decided: _Decided,
    wall_now: datetime,
) -> None:
    insert = dialect_of(session).insert
    session.execute(
        insert(PERIOD)
        .values(
            period_start=start,
            period_end=end,
            labels_before=labels_before,
            closed_by=closed_by,
            strata=len(stratum_rows),
            decisions=decided.decisions,
            sampled=decided.sampled,
            refused=decided.refused,
            boost_refused=decided.boost_refused,
            reserved_usd=decided.reserved[SHADOW_ACCOUNT],
            boost_reserved_usd=decided.reserved[BOOST_ACCOUNT],
            reconciled=False,
            actual_usd=0.0,
            planned_at=wall_now,
        )
        .on_conflict_do_nothing(index_elements=["period_start"])
    )
    for row in stratum_rows:
        stats = decided.by_stratum.get((row["router"], row["segment_value"], row["tier"]))
        counts = (
            {
                "decisions": int(stats[0]),
                "sampled": int(stats[1]),
                "refused": int(stats[2]),
                "reserved_usd": float(stats[3]),
            }
            if stats
            else {"decisions": 0, "sampled": 0, "refused": 0, "reserved_usd": 0.0}
        )
        session.execute(
            insert(PERIOD_STRATUM)
            .values(period_start=start, **row, **counts)
            .on_conflict_do_nothing(
                index_elements=["period_start", "router", "segment_value", "tier"]
            )
        )
        # The plan in force, as /v1/sampling shows it (boost columns left to the watcher).
        current = {
            k: row[k]
            for k in (
                "inclusion_probability",
                "is_reverse",
                "expected_traffic_per_day",
                "cost_per_sample_usd",
                "std_dev",
                "floor_samples_per_day",
                "expected_samples_per_day",
                "floor_shortfall_per_day",
            )
        }
        session.execute(
            insert(STRATUM)
            .values(
                router=row["router"],
                segment_value=row["segment_value"],
                tier=row["tier"],
                boost_factor=1.0,
                updated_at=end,
                **current,
            )
            .on_conflict_do_update(
                index_elements=["router", "segment_value", "tier"],
                set_={**current, "updated_at": end},
                where=and_(STRATUM.c.updated_at <= end),
            )
        )


def list_periods(*, session: Session, limit: int = 48) -> list[PeriodPublic]:
    """The latest sampled periods, newest first."""
    rows = session.scalars(
        select(SamplingPeriod).order_by(PERIOD.c.period_start.desc()).limit(limit)
    )
    return [PeriodPublic.model_validate(r, from_attributes=True) for r in rows]


def decision_period_start(ts: datetime, settings: Settings) -> datetime:
    return period_start_of(ts, settings.sampling_period_minutes)
