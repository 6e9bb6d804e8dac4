"""Alert lifecycle: episodes, pending/for/clear, notifications, reminders, silences
inherited across episodes; one measured value at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, select
from sqlmodel import Session

from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.alert_text import _numbers, _resolved_title, _summary, _title, dashboard_link
from shadoweval.alerts.measure_context import _aware, _Context, _iso
from shadoweval.alerts.models import Alert
from shadoweval.alerts.notification import Notification, NotificationKind
from shadoweval.alerts.rules import AlertRule, Measurement
from shadoweval.alerts.tables import ALERT_TABLE
from shadoweval.config import Settings


@dataclass
class EvaluationResult:
    rules: int = 0
    measured: int = 0
    opened: int = 0  # alerts that started firing
    pending: int = 0  # alerts that started their pending period
    cancelled: int = 0  # pending alerts whose condition stopped holding before they fired
    resolved: int = 0
    steps: int = 0  # decision-time steps evaluated, over all rules and clocks
    notifications: list[Notification] = field(default_factory=list)
    failed_rules: list[str] = field(default_factory=list)
    rules_error: str | None = None  # the rules in force did not validate: a fallback ran


def _enqueue(
    session: Session, notification: Notification, settings: Settings, now: datetime
) -> list[int]:
    # Imported here: the outbox imports channel code this module has no other use for.
    from shadoweval.alerts import outbox

    return outbox.enqueue_notification(session, notification, settings=settings, now=now)


def _notify(
    session: Session,
    settings: Settings,
    alert: Alert,
    kind: NotificationKind,
    now: datetime,
    result: EvaluationResult,
) -> None:
    ts_text = alert.numbers.get("window_end")
    notification = Notification(
        kind=kind,
        dedup_key=alert.dedup_key,
        rule=alert.rule,
        severity=cast(Any, alert.severity),
        title=_resolved_title(alert.title) if kind == "resolve" else alert.title,
        summary=alert.summary,
        ts=datetime.fromisoformat(ts_text) if ts_text else now,
        router=alert.router,
        segment=alert.segment,
        numbers=dict(alert.numbers),
        dashboard_url=alert.dashboard_url,
        runbook_url=alert.runbook_url,
        alert_id=alert.id,
        details={
            "state": alert.state,
            "level": alert.level,
            "started_at": _iso(alert.started_at),
            "resolved_at": _iso(alert.resolved_at),
            "resolve_reason": alert.resolve_reason,
            "acknowledged_by": alert.acknowledged_by,
        },
    )
    _enqueue(session, notification, settings, now)
    alert.last_notified_at = now
    alert.notifications += 1
    result.notifications.append(notification)


def _resolve(
    session: Session,
    settings: Settings,
    alert: Alert,
    reason: str,
    now: datetime,
    notify: bool,
    result: EvaluationResult,
    resolved_ts: datetime | None = None,
) -> None:
    alert.state = "resolved"
    alert.open_key = None
    alert.resolved_at = now
    alert.resolved_ts = resolved_ts
    alert.resolve_reason = reason
    alert.updated_at = now
    session.add(alert)
    session.flush()
    result.resolved += 1
    if notify:
        _notify(session, settings, alert, "resolve", now, result)


def _cancel(ctx: _Context, alert: Alert, result: EvaluationResult, reason: str) -> None:
    """A pending alert that never fired: nobody was told, so it leaves no episode behind,
    unless an operator already acted on it (their silence must keep covering the key)."""
    result.cancelled += 1
    if alert.silenced_until is None and alert.acknowledged_at is None:
        ctx.session.delete(alert)
        ctx.session.flush()
        return
    alert.state = "resolved"
    alert.open_key = None
    alert.resolved_at = ctx.now
    alert.resolve_reason = f"pending, never fired: {reason}"
    alert.updated_at = ctx.now
    ctx.session.add(alert)
    ctx.session.flush()


def _inherited_silence(session: Session, key: str, now: datetime) -> datetime | None:
    """A silence set on an earlier episode of the key still covers a new one until it ends."""
    until = session.scalar(
        select(func.max(ALERT_TABLE.c.silenced_until)).where(ALERT_TABLE.c.dedup_key == key)
    )
    if until is None:
        return None
    aware = _aware(until)
    return aware if aware > now else None


def _snapshot(rule: AlertRule, alert: Alert) -> alert_rules.AlertSnapshot:
    wall = alert_rules.KINDS[rule.kind].clock == "wall"
    return alert_rules.AlertSnapshot(
        level=cast(alert_rules.Level, alert.level),
        last_notified_at=alert.last_notified_at,
        acknowledged_at=alert.acknowledged_at,
        silenced_until=alert.silenced_until,
        state="pending" if alert.state == "pending" else "firing",
        # The pending period runs on the rule's clock.
        pending_since=alert.started_at if wall else (alert.pending_since_ts or alert.started_at),
    )


def _advance(
    ctx: _Context,
    rule: AlertRule,
    m: Measurement,
    open_alerts: dict[str, Alert],
    result: EvaluationResult,
    at: datetime | None,
) -> None:
    """One measurement's lifecycle step for its dedup key. `at` is the decision-time step
    evaluated (None for the wall-clock and detector kinds, measured as they are now)."""
    session, now, spec = ctx.session, ctx.now, alert_rules.KINDS[rule.kind]
    key = alert_rules.dedup_key(rule.name, m.router, m.segment)
    current = open_alerts.get(key)
    # The decision time the measurement stands for; the detector's state carries its own.
    decision_ts = m.ts or at or (m.window_end if spec.clock == "detector" else None)
    # The clock the pending period runs on: the step evaluated, the detector's decision
    # time, or the wall clock for the wall-clock kinds.
    rule_time = now if spec.clock == "wall" else (at or decision_ts or now)
    if (
        current is not None
        and spec.episode_per_ts
        and m.value is not None
        and decision_ts is not None
        and current.numbers.get("decision_ts") not in (None, _iso(decision_ts))
    ):
        # The budget of another decision day: that day's episode is over.
        del open_alerts[key]
        _end_for_a_new_day(ctx, current, result, decision_ts)
        current = None
    firing_level = (
        cast(alert_rules.Level, current.level)
        if current is not None and current.state == "firing"
        else None
    )
    evaluation = alert_rules.evaluate(rule, m, firing_level=firing_level)
    outcome = alert_rules.apply_missing_data_policy(rule, evaluation)
    ctx.outcomes[key] = outcome
    may_fire = outcome in ("warn", "alert") and (current is None or current.state == "pending")
    inherited = _inherited_silence(session, key, now) if may_fire else None
    step = alert_rules.step(
        _snapshot(rule, current) if current is not None else None,
        outcome,
        now=now,
        reminder_interval=timedelta(minutes=ctx.settings.alert_reminder_minutes),
        inherited_silence=inherited,
        at=rule_time,
        pending_for=rule.pending_delta,
    )
    if step.action == "none":
        return
    if step.action == "cancel":
        assert current is not None
        del open_alerts[key]
        _cancel(ctx, current, result, "condition stopped holding")
        return
    if step.action == "resolve":
        assert current is not None
        current.numbers = {**current.numbers, **_numbers(rule, m, evaluation, decision_ts)}
        current.measured_ts = decision_ts
        reason = "no data" if evaluation.outcome == "no_data" else "condition cleared"
        del open_alerts[key]
        _resolve(
            session,
            ctx.settings,
            current,
            reason,
            now,
            step.notify == "resolve",
            result,
            decision_ts,
        )
        return
    assert step.level is not None
    numbers = _numbers(rule, m, evaluation, decision_ts)
    if evaluation.outcome == "no_data":
        # Keep the last numbers seen, marked stale.
        base = current.numbers if current is not None else numbers
        numbers = {**base, "missing_data": True, "reason": evaluation.reason}
    alert = current
    if alert is None:
        pending_since_ts = rule_time if spec.clock != "wall" else None
        alert = _new_alert(ctx, rule, m, key, step, inherited, pending_since_ts)
        open_alerts[key] = alert
        if step.action == "pend":
            result.pending += 1
    if step.action in ("open", "fire"):
        alert.state = "firing"
        alert.fired_ts = decision_ts
        if inherited is not None and (
            alert.silenced_until is None or inherited > _aware(alert.silenced_until)
        ):
            alert.silenced_until = inherited
        result.opened += 1
    alert.level = step.level
    alert.severity = alert_rules.notification_severity(rule.severity, step.level)
    alert.numbers = numbers
    alert.measured_ts = decision_ts
    alert.title = _title(rule, alert.severity, m.router, m.segment)
    alert.summary = _summary(
        rule, numbers, router=m.router, segment=m.segment, dashboard_url=alert.dashboard_url
    )
    alert.runbook_url = rule.runbook_url
    alert.updated_at = now
    session.add(alert)
    session.flush()
    # Reminders are a wall-clock duty: once per pass, for the state the pass ends in
    # (evaluate_alerts), never for a step a catch-up pass has already left behind.
    if step.notify is not None and not (step.notify == "reminder" and at is not None):
        _notify(session, ctx.settings, alert, step.notify, now, result)


def _end_for_a_new_day(
    ctx: _Context, current: Alert, result: EvaluationResult, decision_ts: datetime
) -> None:
    """End an episode of another decision day's budget: cancel it while pending, else
    resolve it (notifying only if its trigger went out)."""
    if current.state == "pending":
        _cancel(ctx, current, result, "a new decision day")
        return
    _resolve(
        ctx.session,
        ctx.settings,
        current,
        "a new decision day",
        ctx.now,
        current.last_notified_at is not None,
        result,
        decision_ts,
    )


def _new_alert(
    ctx: _Context,
    rule: AlertRule,
    m: Measurement,
    key: str,
    step: alert_rules.Step,
    inherited: datetime | None,
    pending_since_ts: datetime | None,
) -> Alert:
    """The row of an episode that starts with this step (pending or firing at once)."""
    assert step.level is not None
    return Alert(
        rule=rule.name,
        kind=rule.kind,
        dedup_key=key,
        open_key=key,
        state="pending" if step.action == "pend" else "firing",
        level=step.level,
        severity="info",
        router=m.router,
        segment=m.segment,
        title="",
        summary="",
        started_at=ctx.now,
        updated_at=ctx.now,
        silenced_until=inherited,
        dashboard_url=dashboard_link(ctx.settings, rule.kind, m.router, m.segment),
        pending_since_ts=pending_since_ts,
    )


def _remind(ctx: _Context, rule: AlertRule, alert: Alert, result: EvaluationResult) -> None:
    """A firing decision-time alert at the end of a pass: wall-clock duties only — a
    reminder, or the trigger a silence held back — whether or not decision time moved."""
    step = alert_rules.step(
        _snapshot(rule, alert),
        cast(alert_rules.Level, alert.level),
        now=ctx.now,
        reminder_interval=timedelta(minutes=ctx.settings.alert_reminder_minutes),
    )
    if step.notify is not None:
        alert.updated_at = ctx.now
        ctx.session.add(alert)
        ctx.session.flush()
        _notify(ctx.session, ctx.settings, alert, step.notify, ctx.now, result)


def _apply(
    ctx: _Context,
    rule: AlertRule,
    measurements: list[Measurement],
    open_alerts: dict[str, Alert],
    result: EvaluationResult,
    *,
    at: datetime | None,
    scope: tuple[str | None] | None,
) -> None:
    """Advance every measured key, and the rule's open alerts in `scope` (the routers of the
    clock evaluated; None = all) that the inputs no longer mention: their data is missing."""
    seen: set[str] = set()
    for m in measurements:
        if not rule.covers(m.router, m.segment):
            continue
        seen.add(alert_rules.dedup_key(rule.name, m.router, m.segment))
        result.measured += 1
        _advance(ctx, rule, m, open_alerts, result, at)
    for key, alert in list(open_alerts.items()):
        if alert.rule != rule.name or key in seen:
            continue
        if scope is not None and alert.router not in scope:
            continue
        m = Measurement(alert.router, alert.segment, None, None, window_end=at or ctx.now, ts=at)
        _advance(ctx, rule, m, open_alerts, result, at)
