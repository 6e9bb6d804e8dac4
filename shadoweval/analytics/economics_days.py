"""Router economics per UTC day of decision ts, from one grouped read of each day of the log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlmodel import Session

from shadoweval.analytics.calibration_service import (
    DECISION_TABLE,
    DailyEconomics,
    EconomicsGroups,
    _clean,
    _economics_groups_each,
    _most_chosen_model,
    decision_groups,
)
from shadoweval.providers.pricing import PricingTable
from shadoweval.sql import prefer_hash_aggregate
from shadoweval.stats import economics

# Savings per day need no latency; the pure function takes the percentiles as given.
_NO_LATENCY = economics.LatencyPercentiles(p50_ms=None, p90_ms=None, p99_ms=None, n=0)


def economics_per_day(
    *,
    session: Session,
    pricing: PricingTable,
    router: str,
    since: datetime | None = None,
    until: datetime | None = None,
    strong_tier: str = "strong",
    strong_model: str | None = None,
    groups: dict[datetime, EconomicsGroups] | None = None,
) -> list[DailyEconomics]:
    """The window's economics per UTC day, oldest first: what `router_economics_report`
    gives for [day, day + 1) clipped to the window, each day priced at its own most
    chosen strong model unless `strong_model` is given. The days' sums come from
    `day_groups` (each row read once), or from `groups` when the caller has them."""
    if groups is None:
        groups = day_groups(session=session, router=router, since=since, until=until)
    return [
        _one_day(day, groups[day], pricing, strong_tier, strong_model) for day in sorted(groups)
    ]


def day_groups(
    *, session: Session, router: str, since: datetime | None, until: datetime | None
) -> dict[datetime, EconomicsGroups]:
    """Per UTC day of decision ts, the report's sums per group: one grouped statement per
    day of the window (an index range each), not one GROUP BY day over the window. The
    rows read are the same, and no statement grows past a day: a month-long window on a
    loaded server would otherwise meet the API's per-statement limit (5 s), and SQLite
    sorts a day's rows in memory where a million spill to disk."""
    c = DECISION_TABLE.c
    where: list[Any] = [c.router == router]
    if since is not None:
        where.append(c.ts >= since)
    if until is not None:
        where.append(c.ts < until)
    first, last = session.execute(select(func.min(c.ts), func.max(c.ts)).where(*where)).one()
    if first is None or last is None:
        return {}
    prefer_hash_aggregate(session)
    days = []
    day = _as_utc(first).replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= _as_utc(last):
        days.append(day)
        day += timedelta(days=1)
    start, end = (bindparam(name, type_=c.ts.type) for name in ("day_start", "day_end"))
    answers = _economics_groups_each(
        session,
        [*where, c.ts >= start, c.ts < end],
        [{"day_start": day, "day_end": day + timedelta(days=1)} for day in days],
    )
    return {day: groups for day, groups in zip(days, answers, strict=True) if groups}


def window_groups(by_day: dict[datetime, EconomicsGroups]) -> EconomicsGroups:
    """The window's sums per group: its days' added up (sums of sums, so equal to one
    read of the window up to float rounding)."""
    window: EconomicsGroups = {}
    for groups in by_day.values():
        for key, (moments, counts) in groups.items():
            if key in window:
                total, so_far = window[key]
                window[key] = (
                    total + moments,
                    tuple(a + b for a, b in zip(so_far, counts, strict=True)),
                )
            else:
                window[key] = (moments.copy(), counts)
    return window


def _one_day(
    day: datetime,
    groups: dict[tuple[Any, ...], Any],
    pricing: PricingTable,
    strong_tier: str,
    strong_model: str | None,
) -> DailyEconomics:
    model = strong_model or _most_chosen_model(groups, strong_tier)
    strong_price = pricing.lookup(model) if model else None
    result = economics.router_economics_from_moments(
        decision_groups(groups, pricing, strong_price, strong_tier),
        latency_all_ms=_NO_LATENCY,
        latency_escalated_ms=_NO_LATENCY,
        latency_not_escalated_ms=_NO_LATENCY,
    )
    figures = _clean(result)
    return DailyEconomics.model_validate(
        {name: figures.get(name) for name in DailyEconomics.model_fields}
        | {"day": day, "strong_model": model, "n_requests": result.n_requests}
    )


def _as_utc(day: Any) -> datetime:
    """The day key as an aware UTC datetime (SQLite gives the truncated text)."""
    value: datetime = datetime.fromisoformat(day) if isinstance(day, str) else day
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
