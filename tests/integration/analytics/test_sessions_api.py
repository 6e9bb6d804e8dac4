"""/v1/sessions over stored decisions, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import session_totals
from shadoweval.analytics import sessions as sessions_service
from shadoweval.bench import sessions as bench
from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.providers.pricing import PricingTable
from tests.conftest import Keys, LiveApi, decision

START = datetime(2026, 11, 27, 12, tzinfo=UTC)
CHEAP = "claude-haiku-4-5"
STRONG = "claude-sonnet-4-6"


def _turn(
    request_id: str,
    session_id: str,
    minute: int,
    tier: str,
    read: int,
    write: int,
    **fields: object,
) -> dict[str, object]:
    return decision(
        request_id,
        router="chat",
        session_id=session_id,
        ts=(START + timedelta(minutes=minute)).isoformat(),
        tier=tier,
        chosen_model=CHEAP if tier == "cheap" else STRONG,
        segment={"topic": "billing"},
        usage={
            "input_tokens": 100,
            "output_tokens": 200 if tier == "cheap" else 300,
            "cache_read_tokens": read,
            "cache_write_tokens": write,
        },
        **fields,
    )


def _ingest(engine: Engine, settings: Settings, items: list[dict[str, object]]) -> None:
    with Session(engine) as session:
        ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items)
        )


def test_switching_and_sticky_sessions_in_usd(
    engine: Engine, base_settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    items = [
        # cheap → strong → cheap, the hand-worked session of tests/unit/stats/test_sessions.py
        # (posted out of order: the turns are ordered by ts, not by arrival)
        _turn("a3", "a", 2, "cheap", read=4000, write=800),
        _turn("a1", "a", 0, "cheap", read=0, write=4000),
        _turn("a2", "a", 1, "strong", read=0, write=4400),
        # sticky on the cheap tier
        _turn("b1", "b", 0, "cheap", read=0, write=4000),
        _turn("b2", "b", 1, "cheap", read=4000, write=400),
        _turn("b3", "b", 2, "cheap", read=4400, write=400),
        # a tool loop: escalated at the start, then once inside the loop
        _turn("t1", "t", 0, "strong", read=0, write=0, escalated_from="cheap"),
        _turn("t2", "t", 1, "strong", read=0, write=0, features={"has_tool_calls": True}),
        _turn(
            "t3",
            "t",
            2,
            "strong",
            read=0,
            write=0,
            escalated_from="cheap",
            features={"has_tool_calls": True},
        ),
        # outside the window
        _turn("late", "z", 600, "strong", read=0, write=9000),
    ]
    _ingest(engine, base_settings, items)
    # A router that logs no session_id.
    _ingest(engine, base_settings, [decision("n1", router="no-sessions")])
    # A tool feature that is not a boolean is read as "no tool use", never an error.
    _ingest(
        engine,
        base_settings,
        [decision("o1", router="odd", session_id="o", features={"has_tool_calls": "yes"})],
    )
    session_totals.fold_new_decisions(engine, base_settings)

    with live_api.client(keys.read) as client:
        response = client.get(
            "/v1/sessions",
            params={"router": "chat", "until": (START + timedelta(hours=1)).isoformat()},
        )
        assert response.status_code == 200, response.text
        report = response.json()
        none = client.get("/v1/sessions", params={"router": "no-sessions"}).json()
        odd = client.get("/v1/sessions", params={"router": "odd"}).json()
        missing = client.get("/v1/sessions", params={"router": ""})

    assert report["status"] == "ok"
    assert report["decisions"] == 9
    assert report["decisions_with_session"] == 9
    cache = report["cache"]
    assert cache["sessions"] == 3
    assert cache["turns"] == 9
    assert cache["tier_switches"] == 2
    assert cache["switching_share"] == pytest.approx(1 / 3)
    assert cache["cache_cost_of_switching_usd"] == pytest.approx(0.01426, abs=1e-12)
    # Session t (strong, no cache) costs 300 × 3 + 900 × 15 per Mtok, the same on both sides.
    t_cost = (300 * 3 + 900 * 15) / 1e6
    assert cache["actual_cost_usd"] == pytest.approx(0.0299 + 0.01014 + t_cost, abs=1e-12)
    strongest = cache["strongest_tier"]
    assert strongest["gross_savings_usd"] == pytest.approx(0.03192 - 0.01564, abs=1e-12)
    assert strongest["net_savings_usd"] == pytest.approx(0.03192 - 0.0299, abs=1e-12)
    assert cache["first_turn_tier"]["net_savings_usd"] == pytest.approx(0.01064 - 0.0299)
    assert set(report["by_segment"]) == {"billing"}

    loops = report["tool_loops"]
    assert loops["tool_turns"] == 2
    assert loops["escalations"] == 2
    assert loops["at_conversation_start"] == 1
    assert loops["inside_tool_loop"] == 1
    assert loops["mid_loop_share"] == pytest.approx(0.5)

    assert odd["tool_loops"]["tool_turns"] == 0
    assert none["status"] == "no sessions logged"
    assert none["decisions"] == 1
    assert none["cache"] is None
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["query", "router"]


def test_tool_turns_from_payloads_and_their_harm(
    engine: Engine, base_settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    tool_request = {
        "messages": [
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "f"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]},
        ]
    }
    plain_request = {"messages": [{"role": "user", "content": "hello"}]}
    with Session(engine) as session:
        for i in range(8):
            ts = START + timedelta(minutes=i)
            is_tool = i % 2 == 1
            row = Decision(
                router="tools",
                request_id=f"v{i}",
                ts=ts,
                received_at=ts,
                tier="cheap",
                chosen_model=CHEAP,
                served_model=CHEAP,
                segment_value="support",
                inclusion_probability=0.5,
                sampled=True,
                session_id="s",
                has_request=True,
                payload_stored=True,
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            session.add(
                DecisionPayload(
                    decision_id=row.id,
                    request=tool_request if is_tool else plain_request,
                    stored_at=ts,
                )
            )
            harmed = is_tool and i != 7  # 3 of 4 tool turns harmed, no plain turn
            session.add(
                Verdict(
                    decision_id=row.id,
                    router="tools",
                    request_id=row.request_id,
                    ts=ts,
                    segment_value="support",
                    routed_tier="cheap",
                    direction="forward",
                    inclusion_probability=0.5,
                    cheaper_tier="cheap",
                    stronger_tier="strong",
                    cheaper_model=CHEAP,
                    stronger_model=STRONG,
                    judge_key="j#1",
                    judge_model="j",
                    prompt_hash="1",
                    status=VerdictStatus.DONE,
                    next_attempt_at=ts,
                    created_at=ts,
                    outcome=Outcome.STRONGER_WINS if harmed else Outcome.TIE,
                    strong_needed=int(harmed),
                    cheap_acceptable=1 - int(harmed),
                )
            )
        session.commit()
    session_totals.fold_new_decisions(engine, base_settings)

    with live_api.client(keys.read) as client:
        report = client.get("/v1/sessions", params={"router": "tools"}).json()

    assert report["tool_loops"]["tool_turns"] == 4
    (harm,) = report["harm_by_tool_use"]
    assert harm["segment"] == "support"
    assert harm["tool_turns"]["estimate"] == pytest.approx(0.75)
    assert harm["tool_turns"]["n"] == 4
    assert harm["other_turns"]["estimate"] == 0.0


@pytest.mark.parametrize("from_log", [False, True], ids=["totals", "log"])
def test_sql_aggregation_matches_the_numpy_reference(
    engine: Engine, base_settings: Settings, from_log: bool
) -> None:
    """A seeded generated log (per-turn routing, expiring caches): the SQL LAG over each
    session gives the same cache cost of switching and costs as the per-turn reference,
    read from the running totals and recomputed from the log."""
    turns = bench.generate_turns(400, per_turn=True, seed=3)
    bench._load(engine, "generated", turns)
    session_totals.fold_new_decisions(engine, base_settings)
    reference = bench.reference_figures(turns)
    with Session(engine) as session:
        report = sessions_service.sessions_report(
            session=session, pricing=PricingTable(), router="generated", from_log=from_log
        )
    assert report.cache is not None
    assert report.cache.cache_cost_of_switching_usd > 0
    assert report.cache.cache_cost_of_switching_usd == pytest.approx(
        reference["cache_cost_of_switching_usd"], rel=1e-9
    )
    assert report.cache.actual_cost_usd == pytest.approx(reference["actual_cost_usd"], rel=1e-9)
    assert report.cache.turns == 400
