"""Deciding a closed period's decisions against its plan: the hash draw against π (with the
threshold band's extra π), reservations on the UTC day of each decision's ts in hash order,
payloads of unsampled decisions deleted, late arrivals decided with the stored plan, and the
plan's rows stored. Clock: decision time only (see periods.py)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, select, update
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import aware_utc, take_sqlite_write_lock
from shadoweval.ingest.models import AWAITING_PLAN
from shadoweval.sampling import policy
from shadoweval.sampling.period_clock import (
    period_start_of,
)
from shadoweval.sampling.period_rows import (
    DECISION,
    DELTA,
    PAYLOAD,
    PERIOD,
    PERIOD_STRATUM,
    STRATUM,
    StratumId,
    _PeriodPlan,
    _stored_plan,
)
from shadoweval.sampling.service import (
    BOOST_ACCOUNT,
    SHADOW_ACCOUNT,
    Candidate,
    reserve_budget,
)
from shadoweval.sql import dialect_of

log = logging.getLogger(__name__)


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
        select(d.id, d.router, d.request_id, d.segment_value, d.tier, d.ts, d.router_score).where(
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
    for decision_id, router, request_id, segment, tier, ts, score in rows:
        ts = aware_utc(ts)
        assert ts is not None
        draw = plan.probability(router, segment, tier, ts, score)
        pi, cost = draw.probability, draw.cost
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
                    account=draw.account(hash_value),
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
