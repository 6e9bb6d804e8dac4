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
"Really cost" prices the judge's prompt-cache writes as reads (`planning.sample_costs`):
which call pays the write is worker timing, and the ledger must not depend on it.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from shadoweval import clock
from shadoweval.config import Settings
from shadoweval.db import aware_utc, take_sqlite_write_lock, utcnow
from shadoweval.events.models import EventKind
from shadoweval.events.service import record_event
from shadoweval.sampling import allocation, planning, policy, threshold_band
from shadoweval.sampling.models import (
    PeriodPublic,
    SamplingPeriod,
)
from shadoweval.sampling.period_clock import (
    _cursor,
    _earliest_awaiting,
    _idle_routers,
    closed_by,
    label_watermark,
    period_start_of,
)
from shadoweval.sampling.period_draws import _decide, _decide_late, _store_period
from shadoweval.sampling.period_rows import (
    BUDGET,
    CURSOR,
    CURSOR_NAME,
    DECISION,
    PERIOD,
    PeriodPassResult,
    StratumId,
    _boosts,
    _PeriodPlan,
    _PlannedStratum,
    _stored_plan,
)
from shadoweval.sampling.service import (
    BOOST_ACCOUNT,
    SHADOW_ACCOUNT,
)

log = logging.getLogger(__name__)


# --- the cursor and the gates ------------------------------------------------------------------


# --- the plan of one period ---------------------------------------------------------------------


def plan_period(
    session: Session,
    settings: Settings,
    start: datetime,
    labels_before: datetime,
    advisor: threshold_band.ThresholdAdvisor | None = None,
) -> tuple[_PeriodPlan, list[dict[str, Any]], allocation.Allocation]:
    """The plan of the period starting at `start`: π and reservation cost per stratum, from
    the whole hours of traffic before `start` and the labels and costs of decisions before
    `labels_before`, with the threshold advisor's bands when an `advisor` is given; records
    a `sampling_shortfall` where the budget cannot buy a floor."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    needs = threshold_band.band_needs(
        session, settings, traffic_before=hour, labels_before=labels_before, advisor=advisor
    )
    band_labels: dict[StratumId, float] = {}
    set_aside = 0.0
    if needs:
        costs = planning.learned_costs(session, settings, labels_before)
        band_labels, set_aside = threshold_band.set_aside(
            settings, needs, lambda stratum: planning.reservation_cost(settings, costs.get(stratum))
        )
    plan, rows = planning.build_strata(
        session, settings, traffic_before=hour, labels_before=labels_before, set_aside_usd=set_aside
    )
    bands = threshold_band.bands(
        needs,
        band_labels,
        {(r["router"], r["segment_value"], r["tier"]): r["inclusion_probability"] for r in rows},
    )
    planned: dict[StratumId, _PlannedStratum] = {}
    for row in rows:
        stratum_id = (row["router"], row["segment_value"], row["tier"])
        planned[stratum_id] = _PlannedStratum(
            row["inclusion_probability"], row["cost_per_sample_usd"]
        )
        band = bands.get(stratum_id)
        row["band_score_low"] = band.score_low if band else None
        row["band_score_high"] = band.score_high if band else None
        row["band_inclusion_probability"] = band.inclusion_probability if band else 0.0
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
        bands=bands,
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


# --- deciding decisions -----------------------------------------------------------------------


# --- reconciliation --------------------------------------------------------------------------


def _reconcile(session: Session, settings: Settings, labels_before: datetime) -> int:
    """Replace the reservations of periods whose labels are all in by what they cost."""
    p = PERIOD.c
    periods = session.execute(
        select(p.period_start, p.period_end, p.reserved_usd, p.boost_reserved_usd)
        .where(p.reconciled.is_(False), p.period_end <= labels_before)
        # Oldest first: the budget's float sums then add up in one order on every run.
        .order_by(p.period_start)
    ).all()
    for start, end, reserved_shadow, reserved_boost in periods:
        start, end = aware_utc(start), aware_utc(end)
        assert start is not None
        assert end is not None
        costs = planning.sample_costs(session, settings, start, end)
        actual: dict[str, list[float]] = defaultdict(list)
        if costs:
            plan = _stored_plan(session, settings, start)
            d = DECISION.c
            for decision_id, router, request_id, segment, tier, ts, score in session.execute(
                select(
                    d.id, d.router, d.request_id, d.segment_value, d.tier, d.ts, d.router_score
                ).where(d.id.in_(list(costs)))
            ):
                ts = aware_utc(ts)
                assert ts is not None
                draw = plan.probability(router, segment, tier, ts, score)
                account = draw.account(policy.sampling_hash(router, request_id))
                actual[account].append(costs[decision_id][3])
        day = start.strftime("%Y-%m-%d")
        for account, reserved in (
            (SHADOW_ACCOUNT, reserved_shadow),
            (BOOST_ACCOUNT, reserved_boost),
        ):
            # fsum: exact in whatever order the worker created the rows.
            change = math.fsum(actual[account]) - float(reserved or 0.0)
            if change:
                session.execute(
                    update(BUDGET)
                    .where(BUDGET.c.day == day, BUDGET.c.account == account)
                    .values(reserved_usd=BUDGET.c.reserved_usd + change)
                )
        session.execute(
            update(PERIOD)
            .where(p.period_start == start)
            .values(
                reconciled=True, actual_usd=math.fsum(u for usd in actual.values() for u in usd)
            )
        )
    return len(periods)


# --- the pass -------------------------------------------------------------------------------


def sample_closed_periods(
    *,
    session: Session,
    settings: Settings,
    wall_now: datetime | None = None,
    max_periods: int = 96,
    threshold_advisor: threshold_band.ThresholdAdvisor | None = None,
) -> PeriodPassResult:
    """Plan and sample every closed period whose label gate is open, oldest first; sample
    late decisions of periods already closed. One transaction per period: a crash repeats
    nothing finished (decided decisions are no longer `awaiting_plan`). With a
    `threshold_advisor`, reverse shadows go to the score bands it asks labels for."""
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
        plan, stratum_rows, allocation_result = plan_period(
            session, settings, start, labels_before, threshold_advisor
        )
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


def list_periods(*, session: Session, limit: int = 48) -> list[PeriodPublic]:
    """The latest sampled periods, newest first."""
    rows = session.scalars(
        select(SamplingPeriod).order_by(PERIOD.c.period_start.desc()).limit(limit)
    )
    return [PeriodPublic.model_validate(r, from_attributes=True) for r in rows]


def decision_period_start(ts: datetime, settings: Settings) -> datetime:
    return period_start_of(ts, settings.sampling_period_minutes)
