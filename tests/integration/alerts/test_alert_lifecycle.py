"""Alert lifecycle on both databases: fires once, reminds, resolves, ack, silence, missing data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from shadoweval.jobs import scheduler
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.alerts import service
from shadoweval.alerts.delivery_models import AlertDelivery
from shadoweval.alerts.measure_context import _Context
from shadoweval.alerts.measurements_quality import _calibration_drift
from shadoweval.alerts.models import Alert
from shadoweval.alerts.rules import AlertRule, RuleSet
from shadoweval.analytics.models import (
    DriftReport,
    SequentialState,
    VerdictWindowSnapshot,
)
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.events.service import record_event
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict
from shadoweval.runtime.worker import WorkerRuntime
from shadoweval.sampling.models import BudgetDay
from shadoweval.shadow.models import BATCH_HOLD, ShadowRun
from shadoweval.stats.change_point import glr_threshold
from tests.integration.alerts.stream import decision_row, hour_traffic, move_decision_time
from tests.integration.alerts.verdicts import judged_verdict

NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
HOUR = NOW.replace(minute=0)
PREVIOUS = HOUR - timedelta(hours=1)


@pytest.fixture
def settings(base_settings: Settings, engine: Engine) -> Settings:
    # A webhook channel so every notification leaves an outbox row to count.
    return base_settings.model_copy(
        update={
            "alert_webhook_url": "http://127.0.0.1:9/hook",
            "alert_webhook_secret": "s3cret",
            "alert_reminder_minutes": 60.0,
        }
    )


def use_rules(session: Session, *rules: dict[str, Any]) -> None:
    service.put_rules(
        session=session, rule_set=RuleSet.model_validate({"rules": list(rules)}), updated_by="test"
    )


ESCALATION = {
    "name": "escalation",
    "kind": "cascade_escalation_rate",
    "warn": 0.25,
    "alert": 0.30,
    "window": "1h",
    "min_samples": 50,
    "on_missing_data": "keep_state",
    "severity": "critical",
    "runbook_url": "https://runbooks.example/escalation",
}


def traffic(
    session: Session,
    *,
    decisions: int,
    escalated: int,
    segment: str = "billing",
    hour: datetime = PREVIOUS,
    fallback: int = 0,
) -> None:
    hour_traffic(
        session,
        hour=hour,
        decisions=decisions,
        escalated=escalated,
        fallback=fallback,
        segment=segment,
    )


def evaluate(session: Session, settings: Settings, now: datetime = NOW) -> service.EvaluationResult:
    """A pass at wall time `now`; decision time stays where the log has it."""
    return service.evaluate_alerts(session=session, settings=settings, now=now)


def live(session: Session, settings: Settings, now: datetime = NOW) -> service.EvaluationResult:
    """A pass at `now` after the router logged a decision at `now`, as a live router does."""
    move_decision_time(session, now)
    return evaluate(session, settings, now)


def deliveries(session: Session) -> list[tuple[str, str]]:
    rows = session.scalars(select(AlertDelivery).order_by(AlertDelivery.id)).all()  # type: ignore[arg-type]
    return [(row.kind, row.dedup_key) for row in rows]


def alerts(session: Session) -> list[Alert]:
    session.expire_all()
    return list(session.scalars(select(Alert).order_by(Alert.id)))  # type: ignore[arg-type]


def test_fires_once_reminds_after_the_interval_then_resolves(
    session: Session, settings: Settings
) -> None:
    use_rules(session, ESCALATION)
    traffic(session, decisions=100, escalated=40)

    first = live(session, settings)
    assert [n.kind for n in first.notifications] == ["trigger"]
    (alert,) = alerts(session)
    assert (alert.state, alert.level, alert.severity) == ("firing", "alert", "critical")
    assert alert.dedup_key == "escalation|support-router|billing"
    # Fired at the first step of decision time that saw the whole hour.
    assert alert.fired_ts == HOUR
    assert alert.measured_ts == NOW
    numbers = alert.numbers
    assert numbers["estimate"] == pytest.approx(0.40)
    assert numbers["ci_low"] < 0.40 < numbers["ci_high"]
    assert (numbers["n"], numbers["threshold"]) == (100, 0.30)
    # Whole hours of counts only: the hour of the decision time is still growing.
    assert numbers["window_start"] == PREVIOUS.isoformat()
    assert numbers["window_end"] == HOUR.isoformat()
    assert numbers["decision_ts"] == NOW.isoformat()
    assert alert.dashboard_url == (
        "http://127.0.0.1:8501/routing?router=support-router&segment=billing"
    )
    assert alert.runbook_url == "https://runbooks.example/escalation"
    assert "95 % CI" in alert.summary

    # Still firing: no repeat within the reminder interval, one reminder after it (wall
    # clock: decision time does not move without decisions).
    assert evaluate(session, settings, NOW + timedelta(minutes=30)).notifications == []
    reminder = evaluate(session, settings, NOW + timedelta(minutes=61))
    assert [n.kind for n in reminder.notifications] == ["reminder"]
    assert evaluate(session, settings, NOW + timedelta(minutes=62)).notifications == []

    traffic(session, decisions=100, escalated=5, hour=HOUR)
    resolved = live(session, settings, NOW + timedelta(minutes=63))
    assert [n.kind for n in resolved.notifications] == ["resolve"]
    (alert,) = alerts(session)
    assert (alert.state, alert.resolve_reason) == ("resolved", "condition cleared")
    assert alert.resolved_at == NOW + timedelta(minutes=63)
    assert alert.resolved_ts == HOUR + timedelta(hours=1)
    assert deliveries(session) == [
        ("trigger", "escalation|support-router|billing"),
        ("reminder", "escalation|support-router|billing"),
        ("resolve", "escalation|support-router|billing"),
    ]


def test_a_new_episode_keeps_the_dedup_key_and_escalation_triggers_again(
    session: Session, settings: Settings
) -> None:
    use_rules(session, ESCALATION)
    # An hour of wall time per hour of decision time: no reminder in between.
    settings = settings.model_copy(update={"alert_reminder_minutes": 240.0})
    kinds = []
    for i, escalated in enumerate((27, 35, 0, 50)):
        hour = PREVIOUS + timedelta(hours=i)
        traffic(session, decisions=100, escalated=escalated, hour=hour)
        result = live(session, settings, hour + timedelta(hours=1, minutes=1))
        kinds.append([(n.kind, n.severity) for n in result.notifications])
    # warn (critical → warning), escalation to alert, resolve, a new episode.
    assert kinds == [
        [("trigger", "warning")],
        [("trigger", "critical")],
        [("resolve", "critical")],
        [("trigger", "critical")],
    ]
    first, second = alerts(session)
    assert first.dedup_key == second.dedup_key == "escalation|support-router|billing"
    assert (first.state, second.state) == ("resolved", "firing")
    assert [kind for kind, _ in deliveries(session)] == ["trigger", "trigger", "resolve", "trigger"]


def test_acknowledged_alerts_get_no_reminder(session: Session, settings: Settings) -> None:
    use_rules(session, ESCALATION)
    traffic(session, decisions=100, escalated=40)
    live(session, settings)
    (alert,) = alerts(session)
    acked = service.acknowledge(
        session=session, settings=settings, alert_id=alert.id or 0, by="sek_oncall"
    )
    assert acked.acknowledged_by == "sek_oncall"
    assert acked.state == "firing"
    assert evaluate(session, settings, NOW + timedelta(hours=3)).notifications == []


def test_silenced_alerts_are_not_notified_until_the_silence_ends(
    session: Session, settings: Settings
) -> None:
    use_rules(session, ESCALATION)
    traffic(session, decisions=100, escalated=27)
    live(session, settings)
    (alert,) = alerts(session)
    service.silence(session=session, alert_id=alert.id or 0, minutes=240, now=NOW)
    # Escalation and reminders are swallowed while silenced.
    traffic(session, decisions=100, escalated=40, hour=HOUR)
    assert live(session, settings, NOW + timedelta(minutes=35)).notifications == []
    # A new episode of the same key inherits the silence.
    traffic(session, decisions=100, escalated=0, hour=HOUR + timedelta(hours=1))
    live(session, settings, NOW + timedelta(minutes=95))
    traffic(session, decisions=100, escalated=40, hour=HOUR + timedelta(hours=2))
    assert live(session, settings, NOW + timedelta(minutes=155)).notifications == []
    assert [a.state for a in alerts(session)] == ["resolved", "firing"]
    # After it ends, the unnotified episode triggers (wall clock only).
    after = evaluate(session, settings, NOW + timedelta(minutes=241))
    assert [n.kind for n in after.notifications] == ["trigger"]


@pytest.mark.parametrize(
    ("policy", "state", "notified"),
    [
        ("keep_state", "firing", []),
        ("resolve", "resolved", ["resolve"]),
        # Still alerting, past the reminder interval.
        ("alert", "firing", ["reminder"]),
    ],
)
def test_missing_data_policy(
    session: Session, settings: Settings, policy: str, state: str, notified: list[str]
) -> None:
    use_rules(session, {**ESCALATION, "on_missing_data": policy})
    traffic(session, decisions=100, escalated=40)
    live(session, settings)
    # Two hours of decision time later the 1 h window holds no traffic at all.
    later = live(session, settings, NOW + timedelta(hours=2))
    assert [n.kind for n in later.notifications] == notified
    (alert,) = alerts(session)
    assert alert.state == state
    if state == "firing":
        assert alert.numbers["estimate"] == pytest.approx(0.40)  # the last numbers seen
    if policy == "alert":
        assert alert.numbers["missing_data"] is True


def test_too_few_samples_never_fire(session: Session, settings: Settings) -> None:
    use_rules(session, ESCALATION)
    traffic(session, decisions=10, escalated=10)
    assert live(session, settings).opened == 0
    assert alerts(session) == []


def test_missing_data_policy_alert_fires_without_data(session: Session, settings: Settings) -> None:
    use_rules(session, {**ESCALATION, "on_missing_data": "alert"})
    traffic(session, decisions=10, escalated=0)  # below min_samples
    result = live(session, settings)
    assert [n.kind for n in result.notifications] == ["trigger"]
    assert alerts(session)[0].numbers["outcome"] == "no_data"


def test_labels_filter_and_disabling_a_rule_resolves_its_alerts(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {**ESCALATION, "labels": {"segment": "bill*"}})
    traffic(session, decisions=100, escalated=40, segment="billing")
    traffic(session, decisions=100, escalated=40, segment="refunds")
    live(session, settings)
    assert [a.segment for a in alerts(session)] == ["billing"]
    use_rules(session, {**ESCALATION, "enabled": False})
    result = evaluate(session, settings, NOW + timedelta(minutes=1))
    assert [n.kind for n in result.notifications] == ["resolve"]
    assert alerts(session)[0].resolve_reason == "rule disabled or removed"


def test_a_pending_alert_fires_only_after_holding_for_its_period(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {**ESCALATION, "for": "90m"})
    # One bad hour: crossing at the steps of 12:00–12:55 only, 55 min < 90 min.
    traffic(session, decisions=100, escalated=40)
    result = live(session, settings)
    assert (result.pending, result.opened, result.notifications) == (1, 0, [])
    (pending,) = alerts(session)
    assert (pending.state, pending.pending_since_ts, pending.fired_ts) == ("pending", HOUR, None)
    traffic(session, decisions=100, escalated=0, hour=HOUR)
    result = live(session, settings, HOUR + timedelta(hours=1, minutes=5))
    # It never fired: nobody was told, and no episode is left behind.
    assert (result.cancelled, result.notifications) == (1, [])
    assert alerts(session) == []

    # Three bad hours: it fires 90 minutes of decision time after the condition began.
    for i in range(1, 4):
        traffic(session, decisions=100, escalated=40, hour=HOUR + timedelta(hours=i))
    result = live(session, settings, HOUR + timedelta(hours=4, minutes=30))
    assert [n.kind for n in result.notifications] == ["trigger"]
    (alert,) = alerts(session)
    assert alert.state == "firing"
    assert alert.pending_since_ts == HOUR + timedelta(hours=2)
    assert alert.fired_ts == HOUR + timedelta(hours=3, minutes=30)


def test_hysteresis_keeps_firing_until_the_clear_level(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {**ESCALATION, "clear": 0.15})
    settings = settings.model_copy(update={"alert_reminder_minutes": 600.0})
    levels = []
    for i, escalated in enumerate((40, 20, 24, 16, 10)):
        hour = PREVIOUS + timedelta(hours=i)
        traffic(session, decisions=100, escalated=escalated, hour=hour)
        live(session, settings, hour + timedelta(hours=1, minutes=1))
        (alert,) = alerts(session)
        levels.append((alert.state, alert.level))
        if escalated == 20:
            assert alert.numbers["reason"] == "0.2 not yet < the clear level 0.15"
    # 0.20 and 0.24 sit below warn (0.25) but not below clear (0.15): still firing, at the
    # lowest level; 0.16 too; 0.10 resolves.
    assert levels == [
        ("firing", "alert"),
        ("firing", "warn"),
        ("firing", "warn"),
        ("firing", "warn"),
        ("resolved", "warn"),
    ]
    assert [kind for kind, _ in deliveries(session)] == ["trigger", "resolve"]


def test_pending_state_survives_a_restart_without_repeating(
    engine: Engine, settings: Settings
) -> None:
    """Each pass in a fresh session, one decision-time step per pass (a worker restarted
    between every step): the same episode as one pass over all the steps."""
    one_step = settings.model_copy(update={"alert_max_steps_per_pass": 1})
    with Session(engine) as session:
        use_rules(session, {**ESCALATION, "for": "30m"})
        for i in range(2):
            traffic(session, decisions=100, escalated=40, hour=PREVIOUS + timedelta(hours=i))
        move_decision_time(session, HOUR + timedelta(minutes=50))
    passes = []
    for _ in range(40):
        with Session(engine) as session:
            result = evaluate(session, one_step, HOUR + timedelta(minutes=50))
            passes.append((result.steps, result.pending, result.opened, len(result.notifications)))
    with Session(engine) as session:
        (alert,) = alerts(session)
        triggers = deliveries(session)
    assert (alert.state, alert.pending_since_ts, alert.fired_ts) == (
        "firing",
        HOUR,
        HOUR + timedelta(minutes=30),
    )
    assert triggers == [("trigger", "escalation|support-router|billing")]
    assert sum(p[1] for p in passes) == 1  # pending once
    assert sum(p[2] for p in passes) == 1  # fired once
    assert passes[-1][0] == 0  # every step done, none repeated


def verdict_hour(
    session: Session, hour: datetime, *, harm: int, fine: int, fine_weight: float = 1.0
) -> None:
    """An hour of forward labels: harm labels sampled with π = 1, fine ones with π = 1/w."""
    w = fine_weight
    session.add(
        VerdictWindowSnapshot(
            router="support-router",
            segment_value="billing",
            direction="forward",
            judge_key="judge-a",
            window="hour",
            window_start=hour,
            labels=harm + fine,
            sum_w=harm + fine * w,
            sum_w2=harm + fine * w * w,
            sum_wy=float(harm),
            sum_vw=fine * (1 - 1 / w) * w * w,
            sum_vwy=0.0,
            updated_at=NOW,
        )
    )
    session.commit()


def test_quality_drop_fires_at_the_alarm_and_resolves_when_the_detector_rearms(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {"name": "quality", "kind": "quality_drop", "warn": 0.5, "alert": 1.0})
    h = glr_threshold(settings.sequential_alarm_threshold)
    # 100 labels before the change point, then two hours with weighted labels after it.
    verdict_hour(session, HOUR - timedelta(hours=3), harm=8, fine=92)
    verdict_hour(session, HOUR - timedelta(hours=2), harm=20, fine=30, fine_weight=4.0)
    verdict_hour(session, HOUR - timedelta(hours=1), harm=30, fine=70, fine_weight=4.0)
    state = SequentialState(
        router="support-router",
        segment_value="billing",
        direction="forward",
        judge_key="judge-a",
        labels=250,
        positives=58,
        baseline_rate=0.08,
        baseline_labels=100,
        baseline_positives=8,
        statistic=0.2 * h,
        threshold=h,
        post_change_labels=150,
        post_change_harms=50,
        change_ts=HOUR - timedelta(hours=2, minutes=-5),
        last_ts=HOUR - timedelta(minutes=10),
        updated_at=NOW,
    )
    session.add(state)
    session.commit()
    assert evaluate(session, settings).opened == 0
    state.statistic = 1.1 * h
    state.alarmed_at_ts = NOW - timedelta(minutes=20)
    session.add(state)
    session.commit()
    result = evaluate(session, settings, NOW + timedelta(minutes=1))
    (notification,) = result.notifications
    assert (notification.kind, notification.details["level"]) == ("trigger", "alert")
    assert notification.dedup_key == "quality|support-router|billing"
    assert notification.severity == "warning"  # the rule's default severity
    numbers = notification.numbers
    assert numbers["value"] == pytest.approx(1.1)  # statistic / threshold
    # The post-change rate: weighted (1/π) over the hours from the change point on, not
    # 50/150 labels.
    assert numbers["estimate"] == pytest.approx(50 / (50 + 100 * 4.0))
    assert numbers["n"] == 250
    assert numbers["pre_change_harm_rate"] == pytest.approx(0.08)
    assert numbers["post_change_harm_rate"] == pytest.approx(50 / 150)
    assert numbers["change_point_ts"] == (HOUR - timedelta(hours=2, minutes=-5)).isoformat()
    assert "rose from 8.0% (100 labels before) to 33.3%" in numbers["summary"]
    assert numbers["window_start"] == (HOUR - timedelta(hours=2)).isoformat()
    assert numbers["window_end"] == HOUR.isoformat()
    from shadoweval.analytics.service import segment_quality

    [row] = [
        q
        for q in segment_quality(
            session=session,
            settings=settings,
            router="support-router",
            since=HOUR - timedelta(hours=2),
            until=HOUR,
        )
        if q.direction == "forward"
    ]
    assert row.rate is not None
    assert (numbers["estimate"], numbers["ci_low"], numbers["ci_high"]) == pytest.approx(
        (row.rate.estimate, row.rate.ci_low, row.rate.ci_high)
    )
    assert numbers["ci_low"] < numbers["estimate"] < numbers["ci_high"]
    assert notification.dashboard_url == (
        "http://127.0.0.1:8501/quality?router=support-router&segment=billing"
    )

    # The evidence for the alarmed rise keeps updating: while the detector's episode lasts
    # (alarmed_at_ts set), the alert stays firing at value ≥ 1, even below warn …
    for share in (0.7, 0.3):
        state.statistic = share * h
        session.add(state)
        session.commit()
        result = evaluate(session, settings, NOW + timedelta(minutes=2))
        assert result.notifications == []
        assert alerts(session)[0].state == "firing"
        assert alerts(session)[0].numbers["value"] == pytest.approx(1.0)
    # … and once the detector re-arms (the evidence fell below half of h) it resolves.
    state.alarmed_at_ts = None
    session.add(state)
    session.commit()
    result = evaluate(session, settings, NOW + timedelta(minutes=3))
    assert [n.kind for n in result.notifications] == ["resolve"]
    assert alerts(session)[0].resolve_reason == "condition cleared"


def test_router_stale_clears_on_a_new_router_version(session: Session, settings: Settings) -> None:
    use_rules(session, {"name": "stale", "kind": "router_stale", "alert": 1})
    for i, (ts, version) in enumerate(
        [(NOW - timedelta(hours=2), "v1"), (NOW - timedelta(minutes=30), "v1")]
    ):
        session.add(_decision(f"d{i}", ts, version))
    session.commit()
    record_event(
        session,
        kind="model_change",
        dedup_key="support-router|cheap|haiku-5",
        ts=NOW - timedelta(hours=1),
        router="support-router",
        details={"tier": "cheap", "model": "haiku-5", "previous_models": ["haiku-4"]},
    )
    session.commit()
    fired = evaluate(session, settings)
    (notification,) = fired.notifications
    assert notification.dedup_key == "stale|support-router|*"
    assert notification.numbers["model"] == "haiku-5"

    session.add(_decision("d-new", NOW - timedelta(minutes=5), "v2"))
    session.commit()
    cleared = evaluate(session, settings, NOW + timedelta(minutes=1))
    assert [n.kind for n in cleared.notifications] == ["resolve"]
    assert alerts(session)[0].numbers["cleared_by"] == "new router_version or threshold"


def test_router_stale_clears_on_acknowledge(session: Session, settings: Settings) -> None:
    use_rules(session, {"name": "stale", "kind": "router_stale", "alert": 1})
    session.add(_decision("d0", NOW - timedelta(hours=2), "v1"))
    record_event(
        session,
        kind="model_change",
        dedup_key="support-router|cheap|haiku-5",
        ts=NOW - timedelta(hours=1),
        router="support-router",
        details={"tier": "cheap", "model": "haiku-5"},
    )
    session.commit()
    evaluate(session, settings)
    (alert,) = alerts(session)
    acked = service.acknowledge(
        session=session, settings=settings, alert_id=alert.id or 0, by="sek_a", now=NOW
    )
    assert (acked.state, acked.resolve_reason) == ("resolved", "acknowledged")
    assert evaluate(session, settings, NOW + timedelta(minutes=5)).opened == 0
    assert [kind for kind, _ in deliveries(session)] == ["trigger", "resolve"]


def _budget_event(session: Session, day: str, account: str) -> None:
    record_event(
        session,
        kind="budget_exhausted",
        dedup_key=f"{day}/{account}",
        ts=datetime.fromisoformat(day + "T00:00:00+00:00"),
        details={"day": day, "account": account},
    )
    session.commit()


def test_budget_exhausted_per_account_and_decision_day(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {"name": "budget", "kind": "budget_exhausted", "warn": 0.9, "alert": 1.0})
    day = NOW.replace(hour=0, minute=0)
    move_decision_time(session, day + timedelta(minutes=10))
    session.add(BudgetDay(day="2026-11-28", account="shadow", budget_usd=20.0, reserved_usd=19.0))
    session.add(
        BudgetDay(
            day="2026-11-28",
            account="boost",
            budget_usd=5.0,
            reserved_usd=4.99,
            refused=3,
            # Wall time, not decision time: the alert goes by the event's decision day.
            exhausted_at=NOW + timedelta(days=30),
        )
    )
    session.commit()
    _budget_event(session, "2026-11-28", "boost")
    live(session, settings)
    levels = {a.dedup_key: (a.level, a.fired_ts) for a in alerts(session)}
    assert levels == {"budget|*|shadow": ("warn", day), "budget|*|boost": ("alert", day)}

    # The next decision day: the day's episodes end; the new day's exhaustion is a new one.
    next_day = day + timedelta(days=1)
    _budget_event(session, "2026-11-29", "boost")
    live(session, settings, next_day + timedelta(minutes=30))
    episodes = [(a.segment, a.state, a.fired_ts, a.resolved_ts) for a in alerts(session)]
    assert sorted(episodes, key=str) == sorted(
        [
            ("shadow", "resolved", day, next_day),
            ("boost", "resolved", day, next_day),
            ("boost", "firing", next_day, None),
        ],
        key=str,
    )


def test_shadow_backlog_with_nothing_open_is_quiet(session: Session, settings: Settings) -> None:
    use_rules(session, {"name": "backlog", "kind": "shadow_backlog", "warn": 60, "alert": 240})
    result = evaluate(session, settings)
    assert (result.measured, result.opened) == (1, 0)


def test_a_broken_rule_does_not_stop_the_others(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_rules(
        session,
        {"name": "backlog", "kind": "shadow_backlog", "alert": 1},
        ESCALATION,
    )

    def broken(ctx: object, rule: object) -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setitem(service.MEASURE, "shadow_backlog", broken)
    traffic(session, decisions=100, escalated=40)
    result = live(session, settings)
    assert result.failed_rules == ["backlog"]
    assert result.opened == 1


def _decision(request_id: str, ts: datetime, version: str) -> Decision:
    return decision_row(request_id, ts, version=version)


def _run(session: Session, decision_id: int, status: str, **fields: Any) -> ShadowRun:
    run = ShadowRun(
        decision_id=decision_id,
        kind="shadow",
        direction="forward",
        routed_tier="cheap",
        target_tier="strong",
        target_model="sonnet",
        ts=NOW - timedelta(minutes=20),
        status=status,
        next_attempt_at=NOW,
        **{"created_at": NOW - timedelta(minutes=20), **fields},
    )
    session.add(run)
    return run


def test_provider_error_rate_from_finished_shadow_runs(
    session: Session, settings: Settings
) -> None:
    use_rules(
        session,
        {"name": "errors", "kind": "provider_error_rate", "warn": 0.05, "alert": 0.2},
    )
    # Batch results: decisions of two days ago whose runs finished 20 minutes ago count
    # in the window they finished in (operational time, not decision time).
    old_ts = NOW - timedelta(days=2)
    for i in range(10):
        decision = _decision(f"d{i}", old_ts, "v1")
        session.add(decision)
        session.flush()
        _run(
            session,
            decision.id or 0,
            "failed" if i < 3 else "succeeded",
            mode="batch",
            finished_at=NOW - timedelta(minutes=20),
        )
    # Finished before the window: not counted, however recent its decision.
    decision = _decision("late", NOW - timedelta(minutes=30), "v1")
    session.add(decision)
    session.flush()
    _run(session, decision.id or 0, "failed", finished_at=NOW - timedelta(hours=2))
    session.commit()
    evaluate(session, settings)
    (alert,) = alerts(session)
    assert (alert.dedup_key, alert.level) == ("errors|support-router|*", "alert")
    assert (alert.numbers["estimate"], alert.numbers["n"]) == (pytest.approx(0.3), 10)


def test_shadow_backlog_gives_batch_items_their_allowance(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {"name": "backlog", "kind": "shadow_backlog", "warn": 60, "alert": 240})
    decision = _decision("b0", NOW - timedelta(hours=6), "v1")
    decision.sampled = True
    session.add(decision)
    session.flush()
    # Waiting six hours for its provider batch: normal in batch mode.
    run = _run(
        session,
        decision.id or 0,
        "running",
        mode="batch",
        created_at=NOW - timedelta(hours=6),
        lease_until=BATCH_HOLD,
    )
    session.add(judged_verdict(decision, score=0.5, strong_needed=0))
    session.flush()
    verdict = session.scalars(select(Verdict)).one()
    verdict.status, verdict.created_at = "waiting", NOW - timedelta(hours=6)
    session.commit()
    evaluate(session, settings)
    assert alerts(session) == []

    # Past batch_max_age + 24 h it is overdue, by the time beyond that allowance.
    run.created_at = NOW - timedelta(hours=26)
    session.add(run)
    session.commit()
    evaluate(session, settings, NOW + timedelta(minutes=1))
    (alert,) = alerts(session)
    allowance = settings.batch_max_age_seconds / 60 + 24 * 60
    overdue = 26 * 60 + 1 - allowance
    assert alert.numbers["batch_overdue_minutes"] == pytest.approx(overdue)
    assert alert.numbers["oldest_open_item_age_minutes"] == 0.0
    assert alert.level == ("alert" if overdue >= 240 else "warn")


def test_shadow_backlog_ages_and_stuck_leases(session: Session, settings: Settings) -> None:
    use_rules(session, {"name": "backlog", "kind": "shadow_backlog", "warn": 60, "alert": 240})
    waiting = _decision("d0", NOW - timedelta(hours=3), "v1")
    waiting.sampled, waiting.received_at = True, NOW - timedelta(minutes=90)
    session.add(waiting)
    session.commit()
    evaluate(session, settings)
    (alert,) = alerts(session)
    assert alert.level == "warn"
    assert alert.numbers["oldest_open_item_age_minutes"] == pytest.approx(90)

    # A run whose worker died holding its lease: alert at once, whatever its age.
    _run(session, waiting.id or 0, "running", lease_until=NOW - timedelta(minutes=1))
    session.commit()
    evaluate(session, settings, NOW + timedelta(minutes=1))
    (alert,) = alerts(session)
    assert (alert.level, alert.numbers["stuck_leases"]) == ("alert", 1)


def test_judge_inconsistency_and_feature_drift(session: Session, settings: Settings) -> None:
    use_rules(
        session,
        {"name": "judge", "kind": "judge_inconsistency", "warn": 0.25, "alert": 0.4},
        {"name": "drift", "kind": "feature_drift", "warn": 0.3, "alert": 0.5, "window": "2d"},
    )
    # 40 judged pairs in the last hour, 12 of them with disagreeing orders.
    for i in range(40):
        decision = _decision(f"j{i}", HOUR + timedelta(seconds=i), "v1")
        session.add(decision)
        session.flush()
        verdict = judged_verdict(decision, score=0.3, strong_needed=0)
        verdict.outcome = "inconsistent" if i < 12 else "tie"
        session.add(verdict)
    day = NOW.replace(hour=0, minute=0)
    session.add(
        DriftReport(
            router="support-router",
            window_start=day - timedelta(days=1),
            window_end=day,
            reference_start=day - timedelta(days=2),
            reference_end=day - timedelta(days=1),
            status="ok",
            dataset_drift=True,
            drifted_share=0.6,
            created_at=day,
        )
    )
    session.commit()
    live(session, settings)
    levels = {a.rule: (a.level, a.numbers["value"]) for a in alerts(session)}
    assert levels == {"judge": ("warn", pytest.approx(0.3)), "drift": ("alert", 0.6)}


CALIBRATION = {
    "name": "calibration",
    "kind": "calibration_drift",
    "warn": 0.01,
    "alert": 0.001,
    "window": "1d",
    "min_samples": 100,
}


def _miscalibrated_labels(session: Session, n: int, *, seed: int = 7) -> None:
    """Scores of 0.05–0.35 where strong is needed about 60 % of the time: badly
    miscalibrated (an over-confident router), labelled in the two hours before NOW."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        ts = NOW - timedelta(hours=2) + timedelta(hours=2) * (i / n)
        decision = _decision(f"c{i}", ts, "v1")
        session.add(decision)
        session.flush()
        score = 0.05 + 0.3 * float(rng.random())
        label = int(rng.random() < 0.6)
        session.add(judged_verdict(decision, score=score, strong_needed=label))
    session.commit()


def test_calibration_drift_against_perfect_calibration(
    session: Session, settings: Settings
) -> None:
    use_rules(session, CALIBRATION)
    _miscalibrated_labels(session, 400)
    live(session, settings)
    (alert,) = alerts(session)
    assert (alert.rule, alert.level, alert.numbers["n"]) == ("calibration", "alert", 400)
    assert alert.numbers["p_value_against_perfect_calibration"] < 0.001
    assert alert.numbers["perfect_calibration_counted"] is True
    assert alert.numbers["conditions_held"]["min_n"] is True
    # The alert says which conditions held.
    assert "n=400 ≥ 300" in alert.summary
    assert "ECE" in alert.summary
    assert ": counts" in alert.summary
    assert alert.dashboard_url == "http://127.0.0.1:8501/calibration?router=support-router"
    # Bonferroni over the tests run: twice the smallest p-value (one test here: no reference).
    tests = [
        p
        for p in (
            alert.numbers["p_value_against_reference"],
            alert.numbers["p_value_against_perfect_calibration"],
        )
        if p is not None
    ]
    assert alert.numbers["value"] == pytest.approx(min(1.0, len(tests) * min(tests)))


def test_a_p_value_alone_is_not_enough_against_perfect_calibration(
    session: Session, settings: Settings
) -> None:
    """n = 150 (≥ min_samples, < min_n): the test rejects, but does not count; the
    measurement says so, and nothing fires."""
    use_rules(session, CALIBRATION)
    _miscalibrated_labels(session, 150)
    result = live(session, settings)
    assert (result.opened, result.pending) == (0, 0)
    assert alerts(session) == []
    use_rules(session, {**CALIBRATION, "calibration": {"min_n": 100}})
    live(session, settings, NOW + timedelta(minutes=5))
    (alert,) = alerts(session)
    assert alert.numbers["conditions_held"] == {
        "min_n": True,
        "min_ece": True,
        "min_slope_distance": None,
        "effect": True,
    }
    assert alert.numbers["perfect_calibration_min_n"] == 100


def _labels_around_a_model_change(session: Session) -> datetime:
    """150 well-calibrated labels in the 10 h before a model change and 150 in the 2 h
    after it; returns the change's ts."""
    change = NOW - timedelta(hours=3)
    record_event(
        session,
        kind="model_change",
        dedup_key="support-router|cheap|haiku-5",
        ts=change,
        router="support-router",
        details={"tier": "cheap", "model": "haiku-5"},
    )
    rng = np.random.default_rng(11)
    for i in range(300):
        # Before the change: 10 h of labels that must neither count as current nor be
        # mixed with the labels after it.
        ts = change - timedelta(hours=10) * (i / 300) - timedelta(seconds=1)
        if i % 2:
            ts = change + timedelta(hours=2) * (i / 300)
        decision = _decision(f"m{i}", ts, "v1")
        session.add(decision)
        session.flush()
        score = float(rng.random())
        session.add(judged_verdict(decision, score=score, strong_needed=int(rng.random() < score)))
    session.commit()
    return change


def test_calibration_drift_bonferroni_and_model_change_split(
    session: Session, settings: Settings
) -> None:
    # warn at p ≤ 1: one episode from the first labels on, its numbers those of the last step.
    # Both effect minimums off: a p-value alone counts.
    use_rules(
        session,
        {
            "name": "calibration",
            "kind": "calibration_drift",
            "warn": 1.0,
            "window": "1d",
            "calibration": {"min_ece": None, "min_slope_distance": None},
        },
    )
    change = _labels_around_a_model_change(session)
    live(session, settings)
    (alert,) = alerts(session)
    numbers = alert.numbers
    assert numbers["n"] == 150  # only the labels since the change
    assert numbers["window_start"] == change.isoformat()
    assert numbers["window_starts_at_model_change"] is True
    assert numbers["reference_window_start"] == (change - timedelta(days=1)).isoformat()
    assert numbers["reference_window_end"] == change.isoformat()
    p_ref = numbers["p_value_against_reference"]
    p_perfect = numbers["p_value_against_perfect_calibration"]
    assert p_ref is not None
    assert p_perfect is not None
    # 150 labels < min_n: only the drift test counts, Bonferroni still over the two run.
    assert numbers["perfect_calibration_counted"] is False
    assert numbers["previous_window_counted"] is True
    assert numbers["value"] == pytest.approx(min(1.0, 2 * p_ref))
    # The expected-vs-observed gap rides along as evidence, not as a third test: the value
    # above is the Bonferroni over the two tests whatever the gap says.
    assert (numbers["gap_reference_labels"], numbers["gap_labels"]) == (150, 150)
    assert numbers["gap_status"] == "tested"
    assert numbers["gap_ci_low"] <= numbers["gap"] <= numbers["gap_ci_high"]
    assert isinstance(numbers["gap_significant"], bool)


def test_a_changed_score_meaning_shows_as_a_significant_gap(
    session: Session, settings: Settings
) -> None:
    """After the change the score no longer means what it did (strong needed far more often
    than the score says): the alert carries a significant expected-vs-observed gap."""
    use_rules(
        session,
        {"name": "calibration", "kind": "calibration_drift", "warn": 1.0, "window": "1d"},
    )
    change = NOW - timedelta(hours=3)
    record_event(
        session,
        kind="model_change",
        dedup_key="support-router|cheap|haiku-5",
        ts=change,
        router="support-router",
        details={"tier": "cheap", "model": "haiku-5"},
    )
    rng = np.random.default_rng(5)
    for i in range(400):
        before = i % 2 == 0
        ts = (
            change - timedelta(hours=10) * (i / 400) - timedelta(seconds=1)
            if before
            else change + timedelta(hours=2) * (i / 400)
        )
        decision = _decision(f"g{i}", ts, "v1")
        session.add(decision)
        session.flush()
        score = float(rng.random())
        truth = score if before else min(1.0, score + 0.4)
        session.add(judged_verdict(decision, score=score, strong_needed=int(rng.random() < truth)))
    session.commit()
    rule = AlertRule(name="calibration", kind="calibration_drift", warn=1.0, window="1d")
    ctx = _Context(session=session, settings=settings, now=NOW)
    (measurement,) = _calibration_drift(ctx, rule, "support-router", NOW)
    details = measurement.details
    assert details["gap_status"] == "tested"
    assert details["gap_significant"] is True
    assert details["gap_ci_low"] > 0  # observed harm above what the old map expects
    assert "concept drift" in details["gap_reading"]


def test_drift_against_the_previous_window_needs_an_effect_too(
    session: Session, settings: Settings
) -> None:
    """Issue 13: the previous-window test fired between two well-calibrated windows. With a
    minimum ECE the current window does not reach, neither test counts: value 1, nothing
    pending, and the measurement says why."""
    use_rules(
        session,
        {
            "name": "calibration",
            "kind": "calibration_drift",
            "warn": 0.5,
            "window": "1d",
            "calibration": {"min_n": 0, "min_ece": 0.95},
        },
    )
    _labels_around_a_model_change(session)
    result = live(session, settings)
    assert (result.opened, result.pending) == (0, 0)
    assert alerts(session) == []
    rule = AlertRule(
        name="calibration",
        kind="calibration_drift",
        warn=0.5,
        window="1d",
        calibration={"min_n": 0, "min_ece": 0.95},
    )
    ctx = _Context(session=session, settings=settings, now=NOW)
    (measurement,) = _calibration_drift(ctx, rule, "support-router", NOW)
    assert measurement.value == 1.0
    assert measurement.details["p_value_against_reference"] is not None
    assert measurement.details["previous_window_counted"] is False
    assert "below the minimum effect" in measurement.details["conditions"]


def test_calibration_windows_never_straddle_a_model_change() -> None:
    day = timedelta(days=1)
    windows = service._calibration_windows
    assert windows(NOW, day, []) == (NOW - day, NOW - 2 * day, NOW - day)
    # A change inside the current window starts it; the reference ends there.
    change = NOW - timedelta(hours=5)
    assert windows(NOW, day, [change]) == (change, change - day, change)
    # A change inside the reference window starts the reference.
    older = NOW - timedelta(hours=30)
    assert windows(NOW, day, [older]) == (NOW - day, older, NOW - day)
    # Two changes: the reference runs back to the earlier one only.
    between = NOW - timedelta(hours=20)
    assert windows(NOW, day, [change, between]) == (change, between, change)
    assert windows(NOW, day, [change, older]) == (change, change - day, change)


def test_the_worker_job_evaluates_on_the_leader(engine: Engine, settings: Settings) -> None:
    with Session(engine) as session:
        use_rules(session, ESCALATION)
        now = utcnow()
        traffic(session, decisions=100, escalated=40, hour=_hour_floor(now) - timedelta(hours=1))
        move_decision_time(session, now)

    def no_provider(model: str) -> Any:
        raise AssertionError("alert evaluation calls no provider")

    runtime = WorkerRuntime(
        engine=engine, settings=settings, provider_for_model=no_provider, price_per_mtok=no_provider
    )
    (job,) = [job for job in scheduler.PERIODIC_JOBS if job.name == "evaluate_alerts"]
    assert job.leader_only
    assert job.interval(runtime) == settings.alert_evaluate_interval_seconds
    changed = asyncio.run(runtime.run_job(job.name, job.run))
    assert runtime.stats["evaluate_alerts"].last_error is None
    assert changed == 2  # one alert opened, one trigger queued
    with Session(engine) as session:
        assert [a.state for a in alerts(session)] == ["firing"]


def _hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def test_a_broken_rule_file_keeps_the_last_good_rules(
    session: Session, settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "_last_good_rules", None)
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - {name: escalation, kind: cascade_escalation_rate, warn: 0.25, alert: 0.3}\n"
    )
    from_file = settings.model_copy(update={"alert_rules_file": path})
    traffic(session, decisions=100, escalated=40)
    assert live(session, from_file).rules_error is None
    (alert,) = alerts(session)
    assert alert.state == "firing"

    path.write_text("rules:\n  - {name: escalation, kind: cascade_escalation_rate, warn: [}\n")
    traffic(session, decisions=100, escalated=10, hour=HOUR)
    result = live(session, from_file, NOW + timedelta(hours=1))
    assert result.rules_error is not None
    assert str(path) in result.rules_error
    # Still evaluated, with the last rules that validated: the alert resolves as it should.
    assert result.rules == 1
    assert [n.kind for n in result.notifications] == ["resolve"]


def test_shadow_backlog_reads_unplanned_decisions_through_the_sampled_index(
    engine: Engine,
) -> None:
    from sqlalchemy import func, text

    query = select(func.min(Decision.received_at)).where(
        *service._unplanned_conditions(NOW - timedelta(hours=8))
    )
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
            plan = connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            details = " ".join(str(row[-1]) for row in plan)
        else:
            compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            plan = connection.execute(text(f"EXPLAIN {compiled}")).all()
            details = " ".join(str(row[0]) for row in plan)
            partitions = connection.execute(
                text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'decision'::regclass")
            ).scalar_one()
            if partitions:
                # Day partitions (migration 0023): every partition has its copy of the
                # index, and on these near-empty partitions the planner may pick any index
                # bounded by ts; what matters is that no partition is read whole.
                copies = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_inherits"
                        " WHERE inhparent = 'ix_decision_sampled_ts'::regclass"
                    )
                ).scalar_one()
                assert copies == partitions
                assert "Seq Scan on decision" not in details, details
                assert "Index Cond: (ts >=" in details, details
                return
    assert "ix_decision_sampled_ts" in details, details
