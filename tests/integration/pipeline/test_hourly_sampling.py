"""Hourly sampling: a log replayed at any speed samples exactly what the live stream sampled.

The same seeded two-day stream goes through the real pipeline twice, on each database:
(a) live: each decision-hour is posted once decision time reaches it and the worker keeps
up (a pass after every hour), (b) replay: the whole log is posted at once, then the worker
catches up. π per decision, the sampled set, budget refusals, the periods' plans and the
events must be the same. Clock: decision time throughout; the stream is weeks old.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.alerts.models import Alert
from shadoweval.config import Settings
from shadoweval.events.models import Event
from shadoweval.ingest.models import AWAITING_PLAN, Decision, DecisionPayload
from shadoweval.sampling import periods
from shadoweval.sampling import service as sampling_service
from shadoweval.sampling.models import BudgetDay, SamplingPeriod, SamplingPeriodStratum
from shadoweval.testing.fake_provider import FakeProviderServer
from tests.conftest import TABLES
from tests.integration.pipeline.conftest import (
    CHEAP,
    STRONG,
    drain,
    ingest,
    open_verdicts,
    pipeline_settings,
)

START = datetime(2026, 10, 5, tzinfo=UTC)  # weeks before "now": a replayed history
SEGMENTS = (("billing", 0.45), ("coding", 0.35), ("legal", 0.15), ("smalltalk", 0.05))


def _stream(hours: int, per_hour: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for hour in range(hours):
        # A diurnal load: twice the traffic in the afternoon as at night.
        load = per_hour * (1.0 + 0.5 * ((hour % 24) in range(12, 20)))
        for i in range(int(load)):
            ts = START + timedelta(hours=hour, seconds=rng.uniform(0, 3599))
            segment = rng.choices([s for s, _ in SEGMENTS], [w for _, w in SEGMENTS])[0]
            score = rng.random()
            tier = "strong" if score >= 0.5 else "cheap"
            items.append(
                {
                    "request_id": f"h{hour}-{i}",
                    "router": "replayed-router",
                    "tier": tier,
                    "chosen_model": STRONG if tier == "strong" else CHEAP,
                    "ts": ts.isoformat(),
                    "router_score": round(score, 4),
                    "threshold": 0.5,
                    "segment": {"topic": segment},
                    "request": {"messages": [{"role": "user", "content": f"q {hour}-{i}"}]},
                    "response": {"text": f"answer {hour}-{i}", "finish_reason": "stop"},
                    "usage": {"input_tokens": 40, "output_tokens": 80},
                    "cost_usd": 0.002 if tier == "strong" else 0.0002,
                }
            )
    items.sort(key=lambda item: item["ts"])
    return items


def _settings(base: Settings, fake: FakeProviderServer) -> Settings:
    return pipeline_settings(
        base,
        fake,
        sampling_mode="hourly",
        store_payloads="sampled",
        sampling_period_minutes=60,
        sampling_close_lateness_seconds=120,
        sampling_label_lag_minutes=180,
        # The wall clock never closes a period here: the stream's own progress does.
        sampling_idle_close_seconds=3600,
        # A budget the stream exhausts on its busiest hours.
        daily_shadow_budget_usd=0.02,
        default_cost_per_sample_usd=0.001,
        sampling_cost_min_samples=3,
        planner_traffic_days=0.25,
    )


def _outcome(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        decisions = {
            d.request_id: (
                round(d.inclusion_probability, 12),
                d.sampled,
                d.sampling_skip_reason,
                d.payload_stored,
            )
            for d in session.scalars(select(Decision))
        }
        payloads = set(session.scalars(select(DecisionPayload.decision_id)))
        periods = [
            (p.period_start, p.labels_before, p.decisions, p.sampled, p.refused, p.closed_by)
            for p in session.scalars(select(SamplingPeriod).order_by(SamplingPeriod.period_start))
        ]
        plans = sorted(
            (
                s.period_start,
                s.segment_value,
                s.tier,
                round(s.inclusion_probability, 12),
                round(s.cost_per_sample_usd, 12),
                s.cost_learned_from,
            )
            for s in session.scalars(select(SamplingPeriodStratum))
        )
        events = sorted(
            (e.kind, e.dedup_key, e.ts)
            for e in session.scalars(select(Event))
            if e.kind != "judge_changed"
        )
        budget = {
            (b.day, b.account): (b.sampled, b.refused) for b in session.scalars(select(BudgetDay))
        }
        alerts = sorted(
            (a.rule, a.router, a.segment, a.state, a.fired_ts, a.resolved_ts)
            for a in session.scalars(select(Alert))
        )
    return {
        "decisions": decisions,
        "payloads": len(payloads),
        "periods": periods,
        "plans": plans,
        "events": events,
        "budget": budget,
        "alerts": alerts,
    }


def _empty(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))
        if engine.dialect.name == "postgresql":  # the dedup table (migration 0023)
            connection.execute(text("DELETE FROM decision_key"))


def test_a_fast_replay_samples_what_the_live_stream_sampled(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    settings = _settings(base_settings, fake)
    hours = 30
    stream = _stream(hours, per_hour=6)
    # The stream goes on: a later decision closes the last hour in both runs.
    sentinel = {
        **stream[-1],
        "request_id": "next-day",
        "ts": (START + timedelta(days=3)).isoformat(),
    }

    # (a) live: each hour posted when decision time reaches it; the worker keeps up.
    by_hour: dict[int, list[dict[str, Any]]] = {}
    for item in stream:
        hour = int((datetime.fromisoformat(item["ts"]) - START).total_seconds() // 3600)
        by_hour.setdefault(hour, []).append(item)
    for hour in range(hours):
        ingest(engine, settings, by_hour.get(hour, []))
        drain(engine, settings, max_passes=2)
    ingest(engine, settings, [sentinel])
    _drain_all(engine, settings)
    live = _outcome(engine)
    _empty(engine)

    # (b) replay: the whole log at once, then the worker catches up.
    for i in range(0, len(stream), 500):
        ingest(engine, settings, stream[i : i + 500])
    ingest(engine, settings, [sentinel])
    _drain_all(engine, settings)
    replay = _outcome(engine)

    # Something real happened: periods planned from labels, samples, refusals, pruning.
    assert len(live["periods"]) == hours
    assert sum(p[3] for p in live["periods"]) > 20
    assert sum(p[4] for p in live["periods"]) > 0, "the budget should refuse some samples"
    assert any(plan[5] > 0 for plan in live["plans"]), "costs should be learned from labels"
    awaiting = [k for k, v in live["decisions"].items() if v[2] == AWAITING_PLAN]
    assert awaiting == ["next-day"], "every closed hour is decided"
    sampled = {k for k, v in live["decisions"].items() if v[1]}
    # Unsampled payloads are deleted; the sentinel's waits with it for its period.
    assert live["payloads"] == len(sampled) + 1

    for part in ("decisions", "periods", "plans", "events", "budget", "payloads", "alerts"):
        assert replay[part] == live[part], (part, replay[part], live[part])


def _drain_all(engine: Engine, settings: Settings) -> None:
    """Worker passes until only the sentinel awaits its period and no verdict is open."""
    for _ in range(40):
        drain(engine, settings, max_passes=3)
        with Session(engine) as session:
            awaiting = session.scalar(
                select(func.count()).where(
                    Decision.sampling_skip_reason == AWAITING_PLAN,  # type: ignore[arg-type]
                    Decision.request_id != "next-day",  # type: ignore[arg-type]
                )
            )
        if not awaiting and open_verdicts(engine) == 0:
            return
    raise AssertionError("the worker did not catch up")


def test_a_budget_too_small_for_the_floors_says_which_segments_fall_short(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    settings = _settings(base_settings, fake).model_copy(
        update={"daily_shadow_budget_usd": 0.01, "planner_traffic_days": 1.0}
    )
    stream = _stream(hours=3, per_hour=40)
    ingest(engine, settings, stream)
    ingest(engine, settings, [{**stream[-1], "request_id": "later", "ts": "2026-10-05T06:00:00Z"}])

    with Session(engine) as session:
        result = periods.sample_closed_periods(session=session, settings=settings)
    assert result.periods == 3
    assert result.waiting is None or result.waiting == "open"

    with Session(engine) as session:
        shortfalls = [e for e in session.scalars(select(Event)) if e.kind == "sampling_shortfall"]
        strata = sampling_service.list_strata(session=session, router="replayed-router")
    # The first hour has no traffic before it to plan from; the later ones fall short.
    assert shortfalls, "a floor the budget cannot pay must be reported"
    details = shortfalls[0].details
    assert details["reason"] == "budget"
    assert details["planned_labels_per_day"] < details["floor_labels_per_day"]
    assert shortfalls[0].ts == datetime(2026, 10, 5, 1, tzinfo=UTC)
    short = [s for s in strata if s.floor_shortfall_per_day > 0]
    assert short
    for stratum in short:
        assert stratum.expected_samples_per_day + stratum.floor_shortfall_per_day == pytest.approx(
            stratum.floor_samples_per_day
        )
