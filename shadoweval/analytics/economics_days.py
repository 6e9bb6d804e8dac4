"""Router economics per UTC day of decision ts, from one grouped read of the decision log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from shadoweval.analytics.calibration_service import (
    DECISION_TABLE,
    DailyEconomics,
    _clean,
    _economics_groups,
    _most_chosen_model,
    _strong_cost_form,
)
from shadoweval.providers.pricing import PricingTable
from shadoweval.sql import day_start, prefer_hash_aggregate
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
) -> list[DailyEconomics]:
    """The window's economics per UTC day, oldest first: what `router_economics_report`
    gives for [day, day + 1) clipped to the window, each day priced at its own most
    chosen strong model unless `strong_model` is given. One GROUP BY day (and the
    report's group keys), so a month costs one scan, not thirty reads."""
    c = DECISION_TABLE.c
    where: list[Any] = [c.router == router]
    if since is not None:
        where.append(c.ts >= since)
    if until is not None:
        where.append(c.ts < until)
    prefer_hash_aggregate(session)
    groups = _economics_groups(session, where, by=(day_start(session, c.ts),))
    by_day: dict[datetime, dict[tuple[Any, ...], Any]] = {}
    for (day, *key), value in groups.items():
        by_day.setdefault(_as_utc(day), {})[tuple(key)] = value
    return [
        _one_day(day, by_day[day], pricing, strong_tier, strong_model) for day in sorted(by_day)
    ]


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
        [
            economics.DecisionGroup(
                moments=moments,
                strong_cost_form=_strong_cost_form(
                    pricing, strong_price, tier == strong_tier, served_model, with_tokens
                ),
                on_strong_tier=tier == strong_tier,
                router_cost_reported=reported,
                escalated=counts[0],
                fallback=counts[1],
                failover=counts[2],
            )
            for (tier, served_model, _, with_tokens, reported), (moments, counts) in groups.items()
        ],
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
