"""The daily shadow budget reserved at ingest, the planner, and boosts — on both databases."""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.events.models import Event
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.sampling import service as sampling_service
from shadoweval.sampling.models import BudgetDay, SamplingStratum
from shadoweval.sampling.service import SamplingPlan
from tests.conftest import Keys, LiveApi, decision, use_settings


def ingest(
    engine: Engine,
    settings: Settings,
    items: list[dict[str, object]],
    plan: SamplingPlan | None = None,
) -> list[dict[str, object]]:
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items), plan=plan
        )
    assert not outcome.errors
    return [asdict(r) for r in outcome.results]


def budget_rows(engine: Engine) -> dict[tuple[str, str], BudgetDay]:
    with Session(engine) as session:
        return {(b.day, b.account): b for b in session.scalars(select(BudgetDay))}


@pytest.fixture
def tight(base_settings: Settings) -> Settings:
    """Every cheap decision sampled; the budget pays for five samples a day."""
    return base_settings.model_copy(
        update={
            "sampling_rate_by_tier": {"cheap": 1.0, "strong": 1.0},
            "daily_shadow_budget_usd": 0.10,
            "default_cost_per_sample_usd": 0.02,
        }
    )


def test_budget_stops_sampling_and_says_so(engine: Engine, tight: Settings) -> None:
    results = ingest(engine, tight, [decision(f"b-{i:02d}") for i in range(20)])
    assert sum(r["sampled"] for r in results) == 5
    with Session(engine) as session:
        refused = session.scalars(
            select(Decision).where(Decision.sampling_skip_reason == "budget_exhausted")  # type: ignore[arg-type]
        ).all()
    assert len(refused) == 15
    # A refused decision could not have been sampled: π = 0, not a lie.
    assert all(d.inclusion_probability == 0.0 and not d.sampled for d in refused)
    budget = budget_rows(engine)[("2026-11-27", "shadow")]
    assert budget.reserved_usd == pytest.approx(0.10)
    assert (budget.sampled, budget.refused) == (5, 15)
    assert budget.exhausted_at is not None

    # More traffic the same day: nothing more is sampled, and the event is not repeated.
    more = ingest(engine, tight, [decision(f"c-{i:02d}") for i in range(5)])
    assert not any(r["sampled"] for r in more)
    with Session(engine) as session:
        events = session.scalars(select(Event).where(Event.kind == "budget_exhausted")).all()  # type: ignore[arg-type]
    assert [e.dedup_key for e in events] == ["2026-11-27/shadow"]


def test_each_utc_day_of_ts_has_its_own_budget(engine: Engine, tight: Settings) -> None:
    items = [decision(f"d1-{i}", ts="2026-11-26T23:59:00Z") for i in range(8)] + [
        decision(f"d2-{i}", ts="2026-11-27T00:01:00Z") for i in range(8)
    ]
    ingest(engine, tight, items)
    budgets = budget_rows(engine)
    assert budgets[("2026-11-26", "shadow")].sampled == 5
    assert budgets[("2026-11-27", "shadow")].sampled == 5


def test_reservation_order_is_the_sampling_hash_so_resends_agree(
    engine: Engine, tight: Settings
) -> None:
    items = [decision(f"h-{i:02d}") for i in range(12)]
    first = {r["request_id"] for r in ingest(engine, tight, items) if r["sampled"]}
    from shadoweval.sampling.policy import sampling_hash

    expected = sorted(items, key=lambda d: sampling_hash("support-router", str(d["request_id"])))[
        :5
    ]
    assert first == {d["request_id"] for d in expected}


def test_concurrent_ingest_never_overspends(engine: Engine, tight: Settings) -> None:
    errors: list[BaseException] = []

    def post(thread: int) -> None:
        try:
            ingest(engine, tight, [decision(f"t{thread}-{i}") for i in range(10)])
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=post, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    budget = budget_rows(engine)[("2026-11-27", "shadow")]
    assert budget.reserved_usd <= 0.10 + 1e-9
    assert budget.sampled == 5
    assert budget.sampled + budget.refused == 60


def test_planner_allocates_within_budget_with_floors(
    engine: Engine, base_settings: Settings
) -> None:
    settings = base_settings.model_copy(
        update={"daily_shadow_budget_usd": 50.0, "default_cost_per_sample_usd": 0.01}
    )
    now = datetime(2026, 11, 27, 18, tzinfo=UTC)
    items = []
    for i in range(400):
        topic = "billing" if i % 10 else "legal"  # legal: a small segment
        tier = "strong" if i % 4 == 0 else "cheap"
        items.append(
            decision(
                f"p-{i}",
                tier=tier,
                chosen_model="claude-sonnet-4-6" if tier == "strong" else "claude-haiku-4-5",
                cost_usd=0.006 if tier == "strong" else 0.002,
                segment={"topic": topic},
                ts=(now - timedelta(hours=i % 20)).isoformat(),
            )
        )
    ingest(engine, settings, items)
    with Session(engine) as session:
        plan = sampling_service.plan_sampling(session=session, settings=settings, now=now)
        strata = {(s.segment_value, s.tier): s for s in session.scalars(select(SamplingStratum))}
    assert set(strata) == {
        ("billing", "cheap"),
        ("billing", "strong"),
        ("legal", "cheap"),
        ("legal", "strong"),
    }
    assert plan.expected_cost_usd <= settings.daily_shadow_budget_usd + 1e-9
    assert strata[("billing", "strong")].is_reverse
    assert not strata[("billing", "cheap")].is_reverse
    # Small segments still get their floor (capped at their traffic).
    legal = strata[("legal", "cheap")]
    assert (
        legal.inclusion_probability * legal.expected_traffic_per_day
        == pytest.approx(min(legal.floor_samples_per_day, legal.expected_traffic_per_day), rel=1e-6)
        or legal.inclusion_probability == 1.0
    )
    assert all(0.0 <= s.inclusion_probability <= 1.0 for s in strata.values())


def test_ingest_samples_by_the_plan_and_boosts_charge_their_own_budget(
    engine: Engine, base_settings: Settings
) -> None:
    settings = base_settings.model_copy(update={"daily_shadow_budget_usd": 100.0})
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    with Session(engine) as session:
        session.add(
            SamplingStratum(
                router="support-router",
                segment_value="billing",
                tier="cheap",
                inclusion_probability=0.1,
                cost_per_sample_usd=0.01,
                updated_at=now,
            )
        )
        session.commit()
        sampling_service.boost(
            session=session,
            router="support-router",
            tier="cheap",
            until=now + timedelta(hours=1),
            factor=5.0,
        )
    plan = SamplingPlan()
    plan.refresh_if_stale(engine, 0)
    during = ingest(
        engine, settings, [decision(f"in-{i}", ts="2026-11-27T12:30:00Z") for i in range(300)], plan
    )
    after = ingest(
        engine,
        settings,
        [decision(f"out-{i}", ts="2026-11-27T13:30:00Z") for i in range(300)],
        plan,
    )
    assert {r["inclusion_probability"] for r in during} == {0.5}
    assert {r["inclusion_probability"] for r in after} == {0.1}
    budgets = budget_rows(engine)
    boosted = budgets[("2026-11-27", "boost")].sampled
    regular = budgets[("2026-11-27", "shadow")].sampled
    assert boosted > 0
    assert boosted + regular == sum(r["sampled"] for r in during + after)


def test_a_week_of_bursty_traffic_never_exceeds_the_daily_budget(
    engine: Engine, base_settings: Settings
) -> None:
    """The planner re-plans every 6 hours; bursts of 10× traffic arrive between plans."""
    rng = np.random.default_rng(17)
    settings = base_settings.model_copy(
        update={"daily_shadow_budget_usd": 0.50, "default_cost_per_sample_usd": 0.01}
    )
    start = datetime(2026, 11, 16, tzinfo=UTC)
    plan = SamplingPlan()
    counter = 0
    for step in range(7 * 4):
        now = start + timedelta(hours=6 * step)
        with Session(engine) as session:
            sampling_service.plan_sampling(session=session, settings=settings, now=now)
        plan.refresh_if_stale(engine, 0)
        burst = 10 if rng.random() < 0.25 else 1
        items = []
        for _ in range(int(rng.poisson(30)) * burst):
            counter += 1
            topic = ["billing", "code", "legal"][int(rng.integers(3))]
            offset = timedelta(seconds=float(rng.uniform(0, 6 * 3600)))
            items.append(
                decision(f"w-{counter}", segment={"topic": topic}, ts=(now + offset).isoformat())
            )
        for chunk in range(0, len(items), 500):
            ingest(engine, settings, items[chunk : chunk + 500], plan)
    budgets = budget_rows(engine)
    assert len({day for day, _ in budgets}) == 7
    for (day, account), budget in budgets.items():
        assert budget.reserved_usd <= budget.budget_usd + 1e-9, (day, account)
    with Session(engine) as session:
        sampled = session.scalars(select(Decision).where(Decision.sampled.is_(True))).all()  # type: ignore[attr-defined]
    by_day: dict[str, int] = {}
    for d in sampled:
        by_day[d.ts.strftime("%Y-%m-%d")] = by_day.get(d.ts.strftime("%Y-%m-%d"), 0) + 1
    assert all(n * 0.01 <= 0.50 + 1e-9 for n in by_day.values())


def test_rebuilt_traffic_snapshots_equal_the_ones_kept_at_ingest(
    engine: Engine, tight: Settings
) -> None:
    from shadoweval.analytics import snapshots
    from shadoweval.analytics.models import TrafficWindowSnapshot

    items = [
        decision(
            f"rb-{i}",
            ts=f"2026-11-27T{i % 5:02d}:{i % 60:02d}:00Z",
            segment={"topic": ["a", "b"][i % 2]},
            fallback=i % 7 == 0,
            escalated_from="cheap" if i % 11 == 0 else None,
        )
        for i in range(120)
    ]
    ingest(engine, tight, items)
    # Ingest appends deltas; the aggregator job folds them into the snapshots.
    assert snapshots.fold_traffic_deltas(engine) > 0

    def rows() -> list[tuple[object, ...]]:
        with Session(engine) as session:
            return sorted(
                (
                    s.router,
                    s.segment_value,
                    s.tier,
                    s.window_start,
                    s.decisions,
                    s.sampled,
                    s.budget_refused,
                    s.with_payload,
                    s.fallback,
                    s.escalated,
                    round(s.cost_usd, 9),
                )
                for s in session.scalars(select(TrafficWindowSnapshot))
            )

    kept = rows()
    assert sum(r[4] for r in kept) == 120
    assert snapshots.rebuild_traffic_snapshots(engine) == len(kept)
    assert rows() == kept


def test_metrics_say_when_todays_budget_is_spent(live_api: LiveApi, keys: Keys) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    use_settings(
        live_api,
        sampling_rate_by_tier={"cheap": 1.0},
        daily_shadow_budget_usd=0.04,
        default_cost_per_sample_usd=0.02,
    )
    now = datetime.now(UTC).isoformat()
    with live_api.client(keys.ingest) as client:
        client.post("/v1/decisions", json=[decision(f"m-{i}", ts=now) for i in range(5)])
    text = httpx.get(f"{live_api.url}/metrics").text
    values = {
        (s.name, s.labels.get("account")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("shadoweval_budget")
    }
    assert values[("shadoweval_budget_exhausted", "shadow")] == 1.0
    assert values[("shadoweval_budget_reserved_usd", "shadow")] == pytest.approx(0.04)
    assert values[("shadoweval_budget_refused_decisions_total", "shadow")] == 3.0
