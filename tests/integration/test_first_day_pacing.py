"""Issue 13: a router's first decision day, under a diurnal load, keeps sampling into the evening.

Planned from the quiet night hours it has seen, the first day's π ran high all morning and
the daily budget was gone by mid-afternoon, so the evening (and a small segment's labels
then) went unsampled. With `planner_first_day_peak_pacing` the day is planned at its busiest
hour × 24 until a day of history exists: reservations reach the evening and stay within the
budget. Hourly sampling, decision time only; no labels are needed (the label lag reaches
before the stream), so only the traffic estimate differs between the two runs.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.sampling import periods
from shadoweval.sampling.models import BudgetDay
from tests.conftest import TABLES

START = datetime(2026, 10, 5, tzinfo=UTC)  # a UTC day: the budget day is the stream's first
SEGMENTS = (("billing", 0.60), ("coding", 0.35), ("legal", 0.05))
BUDGET_USD = 0.6
COST_USD = 0.001  # reserved per sample until costs are learned: 600 samples a day


def _stream(seed: int = 13) -> list[dict[str, Any]]:
    """One day plus an hour of decisions, 60 an hour on average, peak at 15:00, trough at 03:00."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for hour in range(25):
        load = 60 * (1 + 0.8 * math.cos(2 * math.pi * ((hour % 24) - 15) / 24))
        for i in range(round(load)):
            score = rng.random()
            tier = "strong" if score >= 0.5 else "cheap"
            segment = rng.choices([s for s, _ in SEGMENTS], [w for _, w in SEGMENTS])[0]
            items.append(
                {
                    "request_id": f"d{hour}-{i}",
                    "router": "first-day-router",
                    "tier": tier,
                    "chosen_model": f"{tier}-model",
                    "ts": (START + timedelta(hours=hour, seconds=rng.uniform(0, 3599))).isoformat(),
                    "router_score": round(score, 4),
                    "threshold": 0.5,
                    "segment": {"topic": segment},
                    "cost_usd": 0.002 if tier == "strong" else 0.0002,
                }
            )
    items.sort(key=lambda item: item["ts"])
    return items


def _settings(base: Settings, pacing: bool) -> Settings:
    return base.model_copy(
        update={
            "sampling_mode": "hourly",
            "sampling_period_minutes": 60,
            "sampling_close_lateness_seconds": 60,
            "sampling_idle_close_seconds": 10**6,
            # Labels of decisions before the stream only: the plan reads traffic, no verdicts.
            "sampling_label_lag_minutes": 3 * 24 * 60,
            "daily_shadow_budget_usd": BUDGET_USD,
            "default_cost_per_sample_usd": COST_USD,
            "reverse_shadow_share": 0.0,
            "planner_traffic_days": 1.0,
            "planner_first_day_peak_pacing": pacing,
        }
    )


def _first_day(engine: Engine, settings: Settings) -> tuple[int, int | None, float]:
    """(last hour of day 1 with a sample, first hour with a budget refusal, USD reserved)."""
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=_stream())
        )
        assert not outcome.errors, outcome.errors
    with Session(engine) as session:
        periods.sample_closed_periods(session=session, settings=settings, max_periods=30)
    with Session(engine) as session:
        rows = session.execute(
            select(Decision.ts, Decision.sampled, Decision.sampling_skip_reason)  # type: ignore[call-overload]
        ).all()
        reserved = sum(
            b.reserved_usd
            for b in session.scalars(select(BudgetDay))
            if b.day == START.strftime("%Y-%m-%d")
        )
    day_one = [(ts.hour, sampled, reason) for ts, sampled, reason in rows if ts.day == START.day]
    assert all(reason != "awaiting_plan" for _, _, reason in day_one), "day 1 is decided"
    last_sampled = max(hour for hour, sampled, _ in day_one if sampled)
    refusals = [hour for hour, _, reason in day_one if reason == "budget_exhausted"]
    return last_sampled, min(refusals) if refusals else None, float(reserved)


def _empty(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))
        if engine.dialect.name == "postgresql":
            connection.execute(text("DELETE FROM decision_key"))


def test_the_first_day_budget_lasts_into_the_evening(
    engine: Engine, base_settings: Settings
) -> None:
    last_unpaced, refused_from_unpaced, _ = _first_day(engine, _settings(base_settings, False))
    _empty(engine)
    last_paced, refused_from_paced, reserved = _first_day(engine, _settings(base_settings, True))

    # Unpaced, the night's average plans the day: the budget is gone by mid-afternoon.
    assert refused_from_unpaced is not None
    assert refused_from_unpaced <= 16, refused_from_unpaced
    assert last_unpaced <= 16, last_unpaced
    # Paced, samples reach the evening and the day's reservations stay within the budget.
    assert last_paced >= 21, last_paced
    assert refused_from_paced is None or refused_from_paced >= 21, refused_from_paced
    assert reserved <= BUDGET_USD + 1e-9, reserved
