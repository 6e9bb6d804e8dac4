"""The per-session running totals the aggregator keeps, on SQLite and PostgreSQL: built over
several passes from turns arriving out of order, late or after a deletion, they equal a
recomputation from scratch."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval import retention
from shadoweval.analytics import session_totals
from shadoweval.analytics import sessions as sessions_service
from shadoweval.bench import sessions as bench
from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.providers.pricing import PricingTable
from tests.conftest import decision

START = datetime(2026, 11, 27, 12, tzinfo=UTC)
ROUTER = "chat"


def _items(turns: dict[str, np.ndarray[Any, Any]]) -> list[dict[str, object]]:
    """The generated turns as decision-log items (two segments, a few tool turns and
    escalations, so every summed column is exercised)."""
    items = []
    for i in range(turns["session"].size):
        strong = bool(turns["strong"][i])
        session = int(turns["session"][i])
        items.append(
            decision(
                f"d{i}",
                router=ROUTER,
                session_id=f"s{session}",
                ts=(START + timedelta(seconds=float(turns["seconds"][i]))).isoformat(),
                tier="strong" if strong else "cheap",
                chosen_model=bench.STRONG if strong else bench.CHEAP,
                segment={"topic": "billing" if session % 3 else "travel"},
                features={"has_tool_calls": i % 4 == 1},
                usage={
                    "input_tokens": int(turns["input"][i]),
                    "output_tokens": int(turns["output"][i]),
                    "cache_read_tokens": int(turns["read"][i]),
                    "cache_write_tokens": int(turns["write"][i]),
                },
                **({"escalated_from": "cheap"} if strong and i % 5 == 0 else {}),
            )
        )
    return items


def _ingest(engine: Engine, settings: Settings, items: list[dict[str, object]]) -> None:
    with Session(engine) as session:
        ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items)
        )


def _totals(engine: Engine) -> list[dict[str, Any]]:
    table = session_totals.TOTAL_TABLE
    columns = [table.c[name] for name in session_totals.TOTAL_COLUMNS]
    with engine.connect() as connection:
        rows = connection.execute(select(*columns).order_by(*columns[:3])).mappings().all()
    return [dict(row) for row in rows]


def _report(engine: Engine, **window: Any) -> sessions_service.SessionsReport:
    with Session(engine) as session:
        return sessions_service.sessions_report(
            session=session, pricing=PricingTable(), router=ROUTER, **window
        )


def test_totals_over_passes_with_late_turns_equal_a_recomputation(
    engine: Engine, base_settings: Settings
) -> None:
    turns = bench.generate_turns(240, per_turn=True, seed=11)
    items = _items(turns)
    order = np.random.default_rng(11).permutation(len(items))
    clock = START  # the database clock the watermark settles on
    # Four ingests in shuffled order, a pass after each: later turns of a session arrive
    # before earlier ones, and sessions straddle the passes.
    for chunk in np.array_split(order, 4):
        _ingest(engine, base_settings, [items[i] for i in chunk])
        clock += timedelta(seconds=10)
        folded = session_totals.fold_new_decisions(engine, base_settings, now=clock)
        assert folded["session_turns_copied"] == len(chunk)
    # A repeated pass (a crash before the watermark moved) copies and changes nothing.
    before = _totals(engine)
    again = session_totals.fold_new_decisions(engine, base_settings, now=clock)
    assert again == {"session_turns_copied": 0, "sessions_recomputed": 0}
    assert _totals(engine) == before

    # An ingest transaction that drew a lower id but committed after the passes read a
    # higher one (PostgreSQL): within the settle time, the next pass still reads it.
    with Session(engine) as session:
        highest = int(session.scalar(select(Decision.id).order_by(Decision.id.desc())) or 0)
    late = decision(
        "late",
        router=ROUTER,
        session_id="s0",
        ts=(START - timedelta(minutes=5)).isoformat(),  # before the session's first turn
        tier="strong",
        chosen_model=bench.STRONG,
        segment={"topic": "travel"},
        usage={"input_tokens": 50, "output_tokens": 60, "cache_write_tokens": 3000},
        request=None,
        response=None,
    )
    # No payloads on these two: their ids are changed below, and a payload references its id.
    _ingest(
        engine,
        base_settings,
        [decision("filler", router="other", session_id="x", request=None, response=None)],
    )
    with Session(engine) as session:
        filler = session.scalars(select(Decision).where(Decision.request_id == "filler")).one()
        filler.id = highest + 1000  # seen before the late one
        session.commit()
    clock += timedelta(seconds=10)
    session_totals.fold_new_decisions(engine, base_settings, now=clock)
    _ingest(engine, base_settings, [late])
    with Session(engine) as session:
        row = session.scalars(select(Decision).where(Decision.request_id == "late")).one()
        row.id = highest + 500
        session.commit()
    clock += timedelta(seconds=base_settings.session_totals_settle_seconds - 30)
    assert session_totals.fold_new_decisions(engine, base_settings, now=clock) == {
        "session_turns_copied": 1,
        "sessions_recomputed": 1,
    }

    incremental = _totals(engine)
    from_totals = _report(engine)
    assert from_totals.cache is not None
    rebuilt_sessions = session_totals.rebuild_session_totals(engine)
    assert rebuilt_sessions == from_totals.cache.sessions + 1  # and router "other"'s one
    assert incremental == _totals(engine)
    # The late turn now opens session s0: its first turn, segment and model changed.
    s0 = [row for row in incremental if (row["router"], row["session_id"]) == (ROUTER, "s0")]
    assert {row["segment_value"] for row in s0} == {"travel"}
    assert [row["served_model"] for row in s0 if row["first_turn"]] == [bench.STRONG]

    # Over the whole log the totals give what the per-turn recomputation gives.
    from_log = _report(engine, from_log=True)
    assert from_log.cache is not None
    assert from_totals.cache.turns == from_log.cache.turns == len(items) + 1
    assert from_totals.cache.sessions == from_log.cache.sessions
    assert from_totals.cache.tier_switches == from_log.cache.tier_switches
    for name in ("cache_cost_of_switching_usd", "actual_cost_usd", "warm_cache_cost_usd"):
        assert getattr(from_totals.cache, name) == pytest.approx(
            getattr(from_log.cache, name), rel=1e-12
        )
    assert from_totals.cache.strongest_tier.net_savings_usd == pytest.approx(
        from_log.cache.strongest_tier.net_savings_usd, rel=1e-12
    )
    assert from_totals.tool_loops == from_log.tool_loops
    assert from_totals.tool_loops is not None
    assert from_totals.tool_loops.inside_tool_loop > 0
    assert set(from_totals.by_segment) == set(from_log.by_segment) == {"billing", "travel"}
    for name, by_segment in from_totals.by_segment.items():
        reference = from_log.by_segment[name]
        assert by_segment.sessions == reference.sessions
        assert by_segment.first_turn_tier.net_savings_usd == pytest.approx(
            reference.first_turn_tier.net_savings_usd, rel=1e-9
        )
        assert [m.model for m in by_segment.by_model] == [m.model for m in reference.by_model]
        for model, model_reference in zip(by_segment.by_model, reference.by_model, strict=True):
            assert model.excess_cache_write_tokens == model_reference.excess_cache_write_tokens
            assert model.cache_write_usd == pytest.approx(model_reference.cache_write_usd)
    assert from_totals.tool_loops_by_segment == from_log.tool_loops_by_segment


def test_deleting_decisions_sums_their_sessions_again(
    engine: Engine, base_settings: Settings
) -> None:
    items = _items(bench.generate_turns(60, per_turn=True, seed=4))
    _ingest(engine, base_settings, items)
    session_totals.fold_new_decisions(engine, base_settings)
    # A turn in the middle of a session (its successor's counterfactual changes), then a
    # whole segment.
    middle = next(
        item["request_id"]
        for before, item in itertools.pairwise(items)
        if before["session_id"] == item["session_id"]
    )
    with Session(engine) as session:
        retention.delete_decisions(session=session, router=ROUTER, request_id=str(middle))
    after_one = _totals(engine)
    session_totals.rebuild_session_totals(engine)
    assert after_one == _totals(engine)

    with Session(engine) as session:
        retention.delete_decisions(session=session, router=ROUTER, segment="travel")
    after_segment = _totals(engine)
    assert after_segment
    assert {row["segment_value"] for row in after_segment} == {"billing"}
    session_totals.rebuild_session_totals(engine)
    assert after_segment == _totals(engine)


def test_a_session_belongs_to_the_window_of_its_first_turn(
    engine: Engine, base_settings: Settings
) -> None:
    def turn(request_id: str, session_id: str, minute: int) -> dict[str, object]:
        return decision(
            request_id,
            router=ROUTER,
            session_id=session_id,
            ts=(START + timedelta(minutes=minute)).isoformat(),
        )

    # "a" starts before the window's end and goes on after it; "b" starts after it.
    _ingest(
        engine,
        base_settings,
        [turn("a1", "a", 50), turn("a2", "a", 70), turn("a3", "a", 90), turn("b1", "b", 65)],
    )
    session_totals.fold_new_decisions(engine, base_settings)
    window = {"since": START, "until": START + timedelta(hours=1)}
    report = _report(engine, **window)
    assert report.cache is not None
    assert report.cache.sessions == 1
    assert report.cache.turns == 3  # with its turns after the window's end
    assert report.decisions == 1  # decisions are counted by their own ts
    per_turn = _report(engine, from_log=True, **window)
    assert per_turn.cache is not None
    assert per_turn.cache.turns == 1
    later = _report(engine, since=START + timedelta(hours=1))
    assert later.cache is not None
    assert later.cache.sessions == 1
    assert later.cache.turns == 1


def test_sessions_on_an_unpriced_model_are_listed_not_priced(
    engine: Engine, base_settings: Settings
) -> None:
    def turn(request_id: str, session_id: str, model: str) -> dict[str, object]:
        return decision(request_id, router=ROUTER, session_id=session_id, chosen_model=model)

    _ingest(
        engine,
        base_settings,
        [
            turn("p1", "priced", bench.CHEAP),
            turn("u1", "mixed", bench.CHEAP),
            turn("u2", "mixed", "in-house-model-7"),
        ],
    )
    session_totals.fold_new_decisions(engine, base_settings)
    report = _report(engine)
    assert report.unpriced_models == ["in-house-model-7"]
    assert report.sessions_unpriced == 1
    assert report.cache is not None
    assert report.cache.sessions == 1
    assert report.tool_loops is not None
    assert report.tool_loops.turns == 3  # turn counts need no price
