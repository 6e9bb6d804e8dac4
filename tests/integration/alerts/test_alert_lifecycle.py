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
from shadoweval.alerts.models import Alert
from shadoweval.alerts.rules import RuleSet
from shadoweval.analytics.models import (
    DriftReport,
    SequentialState,
    TrafficWindowSnapshot,
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
from tests.integration.alerts.verdicts import judged_verdict

NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
HOUR = NOW.replace(minute=0)


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
    hour: datetime = HOUR,
    fallback: int = 0,
) -> None:
    row = session.scalars(
        select(TrafficWindowSnapshot).where(
            TrafficWindowSnapshot.segment_value == segment,  # type: ignore[arg-type]
            TrafficWindowSnapshot.window_start == hour,  # type: ignore[arg-type]
        )
    ).first()
    if row is None:
        row = TrafficWindowSnapshot(
            router="support-router", segment_value=segment, tier="cheap", window_start=hour
        )
    row.decisions, row.escalated, row.fallback = decisions, escalated, fallback
    session.add(row)
    session.commit()


def evaluate(session: Session, settings: Settings, now: datetime = NOW) -> service.EvaluationResult:
    return service.evaluate_alerts(session=session, settings=settings, now=now)


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

    first = evaluate(session, settings)
    assert [n.kind for n in first.notifications] == ["trigger"]
    (alert,) = alerts(session)
    assert (alert.state, alert.level, alert.severity) == ("firing", "alert", "critical")
    assert alert.dedup_key == "escalation|support-router|billing"
    numbers = alert.numbers
    assert numbers["estimate"] == pytest.approx(0.40)
    assert numbers["ci_low"] < 0.40 < numbers["ci_high"]
    assert (numbers["n"], numbers["threshold"]) == (100, 0.30)
    # Hour snapshots: the window reaches back to the start of the hour 1 h ago.
    assert numbers["window_start"] == (HOUR - timedelta(hours=1)).isoformat()
    assert numbers["window_end"] == NOW.isoformat()
    assert alert.dashboard_url == (
        "http://127.0.0.1:8501/routing?router=support-router&segment=billing"
    )
    assert alert.runbook_url == "https://runbooks.example/escalation"
    assert "95 % CI" in alert.summary

    # Still firing: no repeat within the reminder interval, one reminder after it.
    assert evaluate(session, settings, NOW + timedelta(minutes=30)).notifications == []
    reminder = evaluate(session, settings, NOW + timedelta(minutes=61))
    assert [n.kind for n in reminder.notifications] == ["reminder"]
    assert evaluate(session, settings, NOW + timedelta(minutes=62)).notifications == []

    traffic(session, decisions=100, escalated=5)
    resolved = evaluate(session, settings, NOW + timedelta(minutes=63))
    assert [n.kind for n in resolved.notifications] == ["resolve"]
    (alert,) = alerts(session)
    assert (alert.state, alert.resolve_reason) == ("resolved", "condition cleared")
    assert alert.resolved_at == NOW + timedelta(minutes=63)
    assert deliveries(session) == [
        ("trigger", "escalation|support-router|billing"),
        ("reminder", "escalation|support-router|billing"),
        ("resolve", "escalation|support-router|billing"),
    ]


def test_a_new_episode_keeps_the_dedup_key_and_escalation_triggers_again(
    session: Session, settings: Settings
) -> None:
    use_rules(session, ESCALATION)
    traffic(session, decisions=100, escalated=27)
    evaluate(session, settings)
    traffic(session, decisions=100, escalated=35)
    escalated = evaluate(session, settings, NOW + timedelta(minutes=1))
    assert [(n.kind, n.severity) for n in escalated.notifications] == [("trigger", "critical")]
    traffic(session, decisions=100, escalated=0)
    evaluate(session, settings, NOW + timedelta(minutes=2))
    traffic(session, decisions=100, escalated=50)
    evaluate(session, settings, NOW + timedelta(minutes=3))

    first, second = alerts(session)
    assert first.dedup_key == second.dedup_key == "escalation|support-router|billing"
    assert (first.state, second.state) == ("resolved", "firing")
    assert [kind for kind, _ in deliveries(session)] == ["trigger", "trigger", "resolve", "trigger"]


def test_acknowledged_alerts_get_no_reminder(session: Session, settings: Settings) -> None:
    use_rules(session, ESCALATION)
    traffic(session, decisions=100, escalated=40)
    evaluate(session, settings)
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
    evaluate(session, settings)
    (alert,) = alerts(session)
    service.silence(session=session, alert_id=alert.id or 0, minutes=20, now=NOW)
    traffic(session, decisions=100, escalated=40)
    # Escalation and reminders are swallowed while silenced.
    assert evaluate(session, settings, NOW + timedelta(minutes=10)).notifications == []
    # A new episode of the same key inherits the silence.
    traffic(session, decisions=100, escalated=0)
    evaluate(session, settings, NOW + timedelta(minutes=11))
    traffic(session, decisions=100, escalated=40)
    assert evaluate(session, settings, NOW + timedelta(minutes=12)).notifications == []
    # After it ends, the unnotified episode triggers.
    after = evaluate(session, settings, NOW + timedelta(minutes=21))
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
    evaluate(session, settings)
    # Two hours later the 1 h window holds no traffic at all.
    later = evaluate(session, settings, NOW + timedelta(hours=2))
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
    assert evaluate(session, settings).opened == 0
    assert alerts(session) == []


def test_missing_data_policy_alert_fires_without_data(session: Session, settings: Settings) -> None:
    use_rules(session, {**ESCALATION, "on_missing_data": "alert"})
    traffic(session, decisions=10, escalated=0)  # below min_samples
    result = evaluate(session, settings)
    assert [n.kind for n in result.notifications] == ["trigger"]
    assert alerts(session)[0].numbers["outcome"] == "no_data"


def test_labels_filter_and_disabling_a_rule_resolves_its_alerts(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {**ESCALATION, "labels": {"segment": "bill*"}})
    traffic(session, decisions=100, escalated=40, segment="billing")
    traffic(session, decisions=100, escalated=40, segment="refunds")
    evaluate(session, settings)
    assert [a.segment for a in alerts(session)] == ["billing"]
    use_rules(session, {**ESCALATION, "enabled": False})
    result = evaluate(session, settings, NOW + timedelta(minutes=1))
    assert [n.kind for n in result.notifications] == ["resolve"]
    assert alerts(session)[0].resolve_reason == "rule disabled or removed"


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


def test_quality_drop_fires_at_the_alarm_and_resolves_below_warn(
    session: Session, settings: Settings
) -> None:
    use_rules(session, {"name": "quality", "kind": "quality_drop", "warn": 0.5, "alert": 1.0})
    log_a = np.log(settings.sequential_alarm_threshold)
    # 100 reference labels in the first hour, then monitored hours with weighted labels.
    verdict_hour(session, HOUR - timedelta(hours=3), harm=8, fine=92)
    verdict_hour(session, HOUR - timedelta(hours=2), harm=20, fine=30, fine_weight=4.0)
    verdict_hour(session, HOUR - timedelta(hours=1), harm=30, fine=70, fine_weight=4.0)
    state = SequentialState(
        router="support-router",
        segment_value="billing",
        direction="forward",
        judge_key="judge-a",
        baseline_rate=0.1,
        baseline_labels=100,
        baseline_positives=8,
        labels=150,
        positives=50,
        log_shiryaev_roberts=0.2 * log_a,
        last_ts=HOUR - timedelta(minutes=10),
        updated_at=NOW,
    )
    session.add(state)
    session.commit()
    assert evaluate(session, settings).opened == 0
    state.log_shiryaev_roberts = 1.1 * log_a
    state.alarmed_at_ts = NOW - timedelta(minutes=20)
    session.add(state)
    session.commit()
    result = evaluate(session, settings, NOW + timedelta(minutes=1))
    (notification,) = result.notifications
    assert (notification.kind, notification.details["level"]) == ("trigger", "alert")
    assert notification.dedup_key == "quality|support-router|billing"
    assert notification.severity == "warning"  # the rule's default severity
    # The weighted (1/π) harm rate of the monitored hours, not 50/150 labels.
    numbers = notification.numbers
    assert numbers["estimate"] == pytest.approx(50 / (50 + 100 * 4.0))
    assert numbers["n"] == 150
    assert numbers["baseline_harm_rate"] == pytest.approx(0.1)
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
    assert notification.dashboard_url == (
        "http://127.0.0.1:8501/quality?router=support-router&segment=billing"
    )

    # R keeps updating after the alarm: between warn and alert the alert stays firing …
    state.log_shiryaev_roberts = 0.7 * log_a
    session.add(state)
    session.commit()
    result = evaluate(session, settings, NOW + timedelta(minutes=2))
    assert result.notifications == []
    assert alerts(session)[0].state == "firing"
    # … and once log R falls below the warn level the episode resolves (hysteresis).
    state.log_shiryaev_roberts = 0.3 * log_a
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


def test_budget_exhausted_per_account(session: Session, settings: Settings) -> None:
    use_rules(session, {"name": "budget", "kind": "budget_exhausted", "warn": 0.9, "alert": 1.0})
    session.add(BudgetDay(day="2026-11-28", account="shadow", budget_usd=20.0, reserved_usd=19.0))
    session.add(
        BudgetDay(
            day="2026-11-28",
            account="boost",
            budget_usd=5.0,
            reserved_usd=4.99,
            refused=3,
            exhausted_at=NOW - timedelta(hours=1),
        )
    )
    session.commit()
    evaluate(session, settings)
    levels = {a.dedup_key: a.level for a in alerts(session)}
    assert levels == {"budget|*|shadow": "warn", "budget|*|boost": "alert"}


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
    result = evaluate(session, settings)
    assert result.failed_rules == ["backlog"]
    assert result.opened == 1


def _decision(request_id: str, ts: datetime, version: str) -> Decision:
    return Decision(
        router="support-router",
        request_id=request_id,
        router_version=version,
        ts=ts,
        received_at=ts,
        tier="cheap",
        chosen_model="haiku-4",
        served_model="haiku-4",
        threshold=0.5,
        segment={},
        segment_value="billing",
        inclusion_probability=0.0,
        sampled=False,
    )


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
    session.add(
        VerdictWindowSnapshot(
            router="support-router",
            segment_value="billing",
            direction="forward",
            judge_key="judge-a",
            window="hour",
            window_start=HOUR,
            labels=40,
            inconsistent=12,
            updated_at=NOW,
        )
    )
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
    evaluate(session, settings)
    levels = {a.rule: (a.level, a.numbers["value"]) for a in alerts(session)}
    assert levels == {"judge": ("warn", pytest.approx(0.3)), "drift": ("alert", 0.6)}


def test_calibration_drift_against_perfect_calibration(
    session: Session, settings: Settings
) -> None:
    use_rules(
        session,
        {
            "name": "calibration",
            "kind": "calibration_drift",
            "warn": 0.01,
            "alert": 0.001,
            "window": "1d",
            "min_samples": 100,
        },
    )
    rng = np.random.default_rng(7)
    # Scores of 0.05–0.35 where strong is needed about 60 % of the time: badly miscalibrated.
    for i in range(200):
        ts = NOW - timedelta(hours=2, seconds=i)
        decision = _decision(f"c{i}", ts, "v1")
        session.add(decision)
        session.flush()
        score = 0.05 + 0.3 * float(rng.random())
        label = int(rng.random() < 0.6)
        session.add(judged_verdict(decision, score=score, strong_needed=label))
    session.commit()
    evaluate(session, settings)
    (alert,) = alerts(session)
    assert (alert.rule, alert.level, alert.numbers["n"]) == ("calibration", "alert", 200)
    assert alert.numbers["p_value_against_perfect_calibration"] < 0.001
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


def test_calibration_drift_bonferroni_and_model_change_split(
    session: Session, settings: Settings
) -> None:
    use_rules(
        session,
        {"name": "calibration", "kind": "calibration_drift", "warn": 0.5, "window": "1d"},
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
    evaluate(session, settings)
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
    assert numbers["value"] == pytest.approx(min(1.0, 2 * min(p_ref, p_perfect)))


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
        traffic(session, decisions=100, escalated=40, hour=_hour_floor(utcnow()))

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
    assert evaluate(session, from_file).rules_error is None
    (alert,) = alerts(session)
    assert alert.state == "firing"

    path.write_text("rules:\n  - {name: escalation, kind: cascade_escalation_rate, warn: [}\n")
    traffic(session, decisions=100, escalated=10)
    result = evaluate(session, from_file, NOW + timedelta(minutes=1))
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
    assert "ix_decision_sampled_ts" in details, details
