"""The session rules `cache_loss` and `mid_loop_escalation` fire and resolve in decision time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from shadoweval.alerts import service
from shadoweval.alerts.models import Alert
from shadoweval.alerts.rules import RuleSet
from shadoweval.config import Settings
from tests.integration.alerts.stream import decision_row, move_decision_time

ROUTER = "chat-router"
T0 = datetime(2026, 11, 27, 10, tzinfo=UTC)
CHEAP = "claude-haiku-4-5"
STRONG = "claude-sonnet-4-6"


def _rules(session: Session, rule: dict[str, Any]) -> None:
    service.put_rules(
        session=session, rule_set=RuleSet.model_validate({"rules": [rule]}), updated_by="test"
    )


def _turn(
    session: Session,
    request_id: str,
    ts: datetime,
    session_id: str,
    tier: str,
    *,
    read: int = 0,
    write: int = 0,
    tool: bool = False,
    escalated: bool = False,
) -> None:
    row = decision_row(request_id, ts, router=ROUTER)
    row.tier = tier
    row.chosen_model = row.served_model = CHEAP if tier == "cheap" else STRONG
    row.session_id = session_id
    row.input_tokens, row.output_tokens, row.cache_read_tokens = 100, 200, read
    row.extra = {"usage": {"cache_write_tokens": write}}
    row.features = {"has_tool_calls": True} if tool else {}
    row.escalated_from = "cheap" if escalated else None
    session.add(row)


def _alerts(session: Session, name: str) -> list[Alert]:
    session.expire_all()
    query = select(Alert).where(Alert.rule == name).order_by(Alert.id)  # type: ignore[arg-type]
    return list(session.scalars(query))


def _pass(session: Session, settings: Settings, decision_time: datetime) -> None:
    """The router's log reaches `decision_time`; one evaluation pass just after it."""
    move_decision_time(session, decision_time, router=ROUTER)
    service.evaluate_alerts(
        session=session, settings=settings, now=decision_time + timedelta(minutes=1)
    )


def test_cache_loss_fires_on_switching_sessions_and_resolves_on_sticky_ones(
    session: Session, base_settings: Settings
) -> None:
    _rules(
        session,
        {
            "name": "cache_loss",
            "kind": "cache_loss",
            "warn": 0.25,
            "alert": 0.5,
            "clear": 0.2,
            "window": "1h",
            "min_samples": 1,
            "on_missing_data": "keep_state",
        },
    )
    # 10:00–10:22: five cheap → strong → cheap sessions (loss 0.01426 USD against gross
    # savings of 0.01628 each, tests/unit/stats/test_sessions.py).
    for i in range(5):
        start = T0 + timedelta(minutes=5 * i)
        _turn(session, f"a{i}-1", start, f"a{i}", "cheap", write=4000)
        _turn(session, f"a{i}-2", start + timedelta(minutes=1), f"a{i}", "strong", write=4400)
        _turn(
            session, f"a{i}-3", start + timedelta(minutes=2), f"a{i}", "cheap", read=4000, write=800
        )
    session.commit()
    _pass(session, base_settings, T0 + timedelta(hours=1, minutes=10))
    (alert,) = _alerts(session, "cache_loss")
    assert (alert.state, alert.level) == ("firing", "alert")
    # Measured on complete hours of decision time: the first step that sees 10:00–11:00.
    assert alert.fired_ts == T0 + timedelta(hours=1)
    assert alert.numbers["estimate"] > 0.8

    # 11:00–12:00: sticky sessions, nothing lost. The alert resolves at the first step whose
    # complete hour holds no switching turn.
    for i in range(6):
        start = T0 + timedelta(hours=1, minutes=10 * i)
        _turn(session, f"b{i}-1", start, f"b{i}", "cheap", write=4000)
        _turn(session, f"b{i}-2", start + timedelta(minutes=1), f"b{i}", "cheap", read=4000)
    session.commit()
    _pass(session, base_settings, T0 + timedelta(hours=2))
    (alert,) = _alerts(session, "cache_loss")
    assert alert.state == "resolved"
    assert alert.resolved_ts == T0 + timedelta(hours=2)


def test_mid_loop_escalation_fires_and_resolves(session: Session, base_settings: Settings) -> None:
    _rules(
        session,
        {
            "name": "mid_loop",
            "kind": "mid_loop_escalation",
            "warn": 0.05,
            "alert": 0.10,
            "clear": 0.03,
            "window": "1h",
            "min_samples": 4,
            "on_missing_data": "keep_state",
        },
    )
    # 10:00: a tool loop of four turns after a plain first turn; two of them escalated.
    _turn(session, "t-0", T0, "t", "cheap")
    for k in range(1, 5):
        when = T0 + timedelta(minutes=k)
        _turn(session, f"t-{k}", when, "t", "strong", tool=True, escalated=k in (2, 3))
    session.commit()
    _pass(session, base_settings, T0 + timedelta(hours=1, minutes=10))
    (alert,) = _alerts(session, "mid_loop")
    assert (alert.state, alert.level) == ("firing", "alert")
    assert alert.fired_ts == T0 + timedelta(hours=1)
    assert alert.numbers["estimate"] == 0.5

    # 11:00–11:50: tool loops that stay on their tier.
    for i in range(6):
        start = T0 + timedelta(hours=1, minutes=10 * i)
        _turn(session, f"u{i}-0", start, f"u{i}", "strong")
        for k in range(1, 4):
            _turn(session, f"u{i}-{k}", start + timedelta(minutes=k), f"u{i}", "strong", tool=True)
    session.commit()
    _pass(session, base_settings, T0 + timedelta(hours=2))
    (alert,) = _alerts(session, "mid_loop")
    assert alert.state == "resolved"
    # The hour 11:00–12:00 holds 18 loop turns and no escalation.
    assert alert.resolved_ts == T0 + timedelta(hours=2)
