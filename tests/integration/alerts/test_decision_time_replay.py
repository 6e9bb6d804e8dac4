"""Replay equivalence of the alert rules (DESIGN.md, Time), on both databases.

One seeded two-day log — decisions, verdicts arriving two hours late, hourly traffic
counts, the budget's day — evaluated (a) as a live run, an evaluation pass after every
hour of decisions, (b) as a fast replay, one pass after the whole log is in, and (c) as
that replay by a worker restarted after every few steps. All three give the same alerts,
compared by (rule, router, segment, decision time fired, decision time resolved).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.alerts import service
from shadoweval.alerts.models import Alert, AlertCursor
from shadoweval.alerts.rules import RuleSet
from shadoweval.config import Settings
from shadoweval.events.service import record_event
from shadoweval.ingest.models import Decision, TrafficDelta
from shadoweval.judge.models import Verdict
from shadoweval.sampling.models import BudgetDay
from tests.conftest import _empty_tables
from tests.integration.alerts.stream import decision_row
from tests.integration.alerts.verdicts import judged_verdict

ROUTER = "replay-router"
START = datetime(2026, 11, 20, tzinfo=UTC)
HOURS = 48
SEGMENTS = ("billing", "legal")
PER_HOUR = 30  # decisions per segment and hour
LABELLED = 20  # of which sampled and judged
LABEL_LAG_HOURS = 2
BUDGET_USD = 20.0
EXHAUSTED_AT = START + timedelta(hours=9, minutes=40)

RULES: list[dict[str, Any]] = [
    {
        "name": "escalation",
        "kind": "cascade_escalation_rate",
        "warn": 0.25,
        "alert": 0.3,
        "clear": 0.2,
        "window": "1h",
        "for": "1h",
        "min_samples": 20,
        "on_missing_data": "resolve",
    },
    {
        "name": "calibration",
        "kind": "calibration_drift",
        "warn": 0.01,
        "alert": 0.001,
        "clear": 0.05,
        "window": "6h",
        "for": "1h",
        "min_samples": 50,
        "calibration": {"min_n": 100},
    },
    {
        "name": "judge",
        "kind": "judge_inconsistency",
        "warn": 0.25,
        "alert": 0.4,
        "window": "6h",
        "min_samples": 30,
    },
    {"name": "budget", "kind": "budget_exhausted", "warn": 0.9, "alert": 1.0},
]


@dataclass
class Hour:
    """One hour of the log: what a live router and pipeline add during it."""

    start: datetime
    decisions: list[tuple[str, datetime, str, bool]]  # (request_id, ts, segment, sampled)
    labels: list[tuple[str, float, int, bool]]  # (request_id, score, label, inconsistent)
    escalated: dict[str, int]  # per segment, of PER_HOUR decisions
    reserved_usd: float  # the day's reservations by the end of the hour


def escalation_rate(segment: str, hour: int) -> float:
    # legal: four bad hours on day 1 (an alert), one on day 2 (a blip `for` keeps quiet).
    if segment == "legal" and (10 <= hour < 14 or hour == 24 + 3):
        return 0.45
    return 0.05


def make_log(seed: int = 5) -> list[Hour]:
    rng = np.random.default_rng(seed)
    hours = []
    for h in range(HOURS):
        start = START + timedelta(hours=h)
        decisions: list[tuple[str, datetime, str, bool]] = []
        labels: list[tuple[str, float, int, bool]] = []
        for segment in SEGMENTS:
            offsets = np.sort(rng.uniform(0, 3600, PER_HOUR))
            for i, offset in enumerate(offsets):
                request_id = f"{segment}-{h}-{i}"
                sampled = i < LABELLED
                decisions.append(
                    (request_id, start + timedelta(seconds=float(offset)), segment, sampled)
                )
                if sampled:
                    score = float(rng.uniform(0.02, 0.98))
                    # From day 2, 06:00 the router turns over-confident: strong is needed
                    # far more often than its score says.
                    p = score if h < 30 else min(1.0, 0.35 + 0.65 * score)
                    labels.append(
                        (request_id, score, int(rng.random() < p), bool(rng.random() < 0.05))
                    )
        day_hour = h % 24
        reserved = (
            min(BUDGET_USD, 0.08 * BUDGET_USD * (day_hour + 1))
            if h < 24
            else 0.02 * BUDGET_USD * (day_hour + 1)
        )
        escalated = {s: round(PER_HOUR * escalation_rate(s, h)) for s in SEGMENTS}
        hours.append(Hour(start, decisions, labels, escalated, reserved))
    return hours


# Rows through Core inserts from one template each: building thousands of ORM objects
# would take most of the test's time.
DECISION_TEMPLATE = decision_row("template", START, router=ROUTER).model_dump(exclude={"id"})


def add_decisions(session: Session, hour: Hour) -> None:
    """The hour's decisions, with the traffic counts ingest appends beside them."""
    session.execute(
        insert(Decision),
        [
            {
                **DECISION_TEMPLATE,
                "request_id": request_id,
                "ts": ts,
                "received_at": ts,
                "segment_value": segment,
                "sampled": sampled,
                "inclusion_probability": 1.0 if sampled else 0.0,
            }
            for request_id, ts, segment, sampled in hour.decisions
        ],
    )
    for segment, escalated in hour.escalated.items():
        session.add(
            TrafficDelta(
                router=ROUTER,
                segment_value=segment,
                tier="cheap",
                window_start=hour.start,
                decisions=PER_HOUR,
                escalated=escalated,
            )
        )
    day = hour.start.strftime("%Y-%m-%d")
    row = session.get(BudgetDay, (day, "shadow"))
    if row is None:
        row = BudgetDay(day=day, account="shadow", budget_usd=BUDGET_USD)
    row.reserved_usd = hour.reserved_usd
    session.add(row)
    if hour.start <= EXHAUSTED_AT < hour.start + timedelta(hours=1):
        record_event(
            session,
            kind="budget_exhausted",
            dedup_key=f"{day}/shadow",
            ts=hour.start.replace(hour=0),
            details={"day": day, "account": "shadow"},
        )
    session.commit()


def add_verdicts(session: Session, hour: Hour) -> None:
    decisions = {
        d.request_id: d
        for d in session.execute(
            select(Decision.id, Decision.request_id, Decision.ts, Decision.segment_value).where(  # type: ignore[call-overload]
                Decision.router == ROUTER,
                Decision.request_id.in_([label[0] for label in hour.labels]),  # type: ignore[attr-defined]
            )
        )
    }
    template = judged_verdict(
        decision_row("template", START, router=ROUTER), score=0.5, strong_needed=0
    ).model_dump(exclude={"id"})
    rows = []
    for request_id, score, label, inconsistent in hour.labels:
        d = decisions[request_id]
        rows.append(
            {
                **template,
                "decision_id": d.id,
                "request_id": request_id,
                "ts": d.ts,
                "segment_value": d.segment_value,
                "router_score": score,
                "strong_needed": label,
                "cheap_acceptable": 1 - label,
                "outcome": "inconsistent" if inconsistent else "tie",
                "next_attempt_at": d.ts,
                "created_at": d.ts,
                "finished_at": d.ts,
            }
        )
    session.execute(insert(Verdict), rows)
    session.commit()


def episodes(session: Session) -> set[tuple[Any, ...]]:
    rows = session.scalars(select(Alert)).all()
    return {(a.rule, a.router, a.segment, a.fired_ts, a.resolved_ts) for a in rows}


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings.model_copy(
        update={
            "alert_decision_step_seconds": 3600.0,
            "alert_catch_up_hours": 72.0,
            "alert_max_steps_per_pass": 1000,
        }
    )


def evaluate(engine: Engine, settings: Settings, now: datetime) -> service.EvaluationResult:
    with Session(engine, expire_on_commit=False) as session:
        return service.evaluate_alerts(session=session, settings=settings, now=now)


def test_live_and_replayed_logs_raise_the_same_alerts(engine: Engine, settings: Settings) -> None:
    log = make_log()
    end = START + timedelta(hours=HOURS)

    def start_run() -> None:
        _empty_tables(engine)
        with Session(engine) as session:
            service.put_rules(
                session=session, rule_set=RuleSet.model_validate({"rules": RULES}), updated_by=None
            )

    # (a) live: an hour of decisions, the verdicts of two hours ago, an evaluation pass.
    start_run()
    with Session(engine) as session:
        for h, hour in enumerate(log):
            add_decisions(session, hour)
            if h >= LABEL_LAG_HOURS:
                add_verdicts(session, log[h - LABEL_LAG_HOURS])
            evaluate(engine, settings, hour.start + timedelta(hours=1))
        for hour in log[-LABEL_LAG_HOURS:]:
            add_verdicts(session, hour)
        evaluate(engine, settings, end)
        live = episodes(session)

    # (b) replay: the whole log first, then one pass.
    start_run()
    with Session(engine) as session:
        for hour in log:
            add_decisions(session, hour)
        for hour in log:
            add_verdicts(session, hour)
    result = evaluate(engine, settings, end)
    assert result.failed_rules == []
    with Session(engine) as session:
        replayed = episodes(session)

    # (c) the replay by a worker restarted every 7 steps (pending state and cursors
    # live in the database).
    start_run()
    with Session(engine) as session:
        for hour in log:
            add_decisions(session, hour)
        for hour in log:
            add_verdicts(session, hour)
    restarted = settings.model_copy(update={"alert_max_steps_per_pass": 7})
    while evaluate(engine, restarted, end).steps:
        pass
    with Session(engine) as session:
        resumed = episodes(session)

    assert live == replayed == resumed
    day1, day2 = START, START + timedelta(days=1)
    fired = {(rule, segment): (f, r) for rule, _, segment, f, r in live}
    # legal's four bad hours fire an hour (`for`) after the step that first sees one, and
    # resolve at the first step that sees a good hour; its one-hour blip on day 2 (one
    # step) never fires.
    assert fired[("escalation", "legal")] == (
        day1 + timedelta(hours=12),
        day1 + timedelta(hours=15),
    )
    assert sum(1 for rule, *_ in live if rule == "escalation") == 1
    # The budget's episode is its decision day, resolved when the next day begins.
    assert fired[("budget", "shadow")] == (day1, day2)
    # The router's calibration turns over-confident on day 2, 06:00. Neither test counts
    # before the 6 h window's ECE reaches min_ece (0.1): about when the window holds only
    # over-confident hours, and `for` (1 h) later it fires.
    calibration = fired[("calibration", None)]
    assert day2 + timedelta(hours=6) < calibration[0] <= day2 + timedelta(hours=13)
    assert not any(rule == "judge" for rule, *_ in live)


def test_a_label_still_to_come_holds_the_verdict_rules_back(
    engine: Engine, settings: Settings, session: Session
) -> None:
    """Calibration steps wait for every sampled decision before them to be judged, while
    the traffic rules move on with decision time."""
    service.put_rules(
        session=session, rule_set=RuleSet.model_validate({"rules": RULES}), updated_by=None
    )
    log = make_log()
    for hour in log[:6]:
        add_decisions(session, hour)
    for hour in log[:3]:
        add_verdicts(session, hour)
    evaluate(engine, settings, START + timedelta(hours=6))
    cursors = {c.rule: c.evaluated_ts.astimezone(UTC) for c in session.scalars(select(AlertCursor))}
    assert cursors["escalation"] == START + timedelta(hours=5)
    assert cursors["calibration"] == START + timedelta(hours=3)
    # Once they are judged, the verdict rules catch up.
    for hour in log[3:6]:
        add_verdicts(session, hour)
    evaluate(engine, settings, START + timedelta(hours=6))
    session.expire_all()
    cursors = {c.rule: c.evaluated_ts.astimezone(UTC) for c in session.scalars(select(AlertCursor))}
    assert cursors["calibration"] == START + timedelta(hours=5)
