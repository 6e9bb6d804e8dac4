"""Alert evaluation and lifecycle: measure each rule's inputs, store alerts, hand notifications
to the outbox; and the read/acknowledge/silence calls of the API."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from sqlalchemy import Table, case, func, or_, select
from sqlmodel import Session

from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.models import Alert, AlertPage, AlertPublic, AlertRuleSet, RuleSetPublic
from shadoweval.alerts.notification import Notification, NotificationKind
from shadoweval.alerts.rules import AlertRule, Measurement, RuleSet
from shadoweval.analytics.models import (
    DriftReport,
    SequentialState,
    TrafficWindowSnapshot,
    VerdictWindowSnapshot,
)
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.events.models import Event
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import OPEN_VERDICT_STATUSES, Verdict
from shadoweval.sampling.models import BudgetDay
from shadoweval.shadow.models import ShadowRun, WorkStatus
from shadoweval.stats.rates import wilson_interval

log = logging.getLogger(__name__)

ALERT_TABLE = cast(Table, Alert.__table__)  # type: ignore[attr-defined]
RULE_SET_TABLE = cast(Table, AlertRuleSet.__table__)  # type: ignore[attr-defined]
STATE_TABLE = cast(Table, SequentialState.__table__)  # type: ignore[attr-defined]
TRAFFIC_TABLE = cast(Table, TrafficWindowSnapshot.__table__)  # type: ignore[attr-defined]
SNAPSHOT_TABLE = cast(Table, VerdictWindowSnapshot.__table__)  # type: ignore[attr-defined]
DRIFT_TABLE = cast(Table, DriftReport.__table__)  # type: ignore[attr-defined]
EVENT_TABLE = cast(Table, Event.__table__)  # type: ignore[attr-defined]
DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
VERDICT_TABLE = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
RUN_TABLE = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]
BUDGET_TABLE = cast(Table, BudgetDay.__table__)  # type: ignore[attr-defined]

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.yaml")


# --- rule sets --------------------------------------------------------------------------------


def _file_rules(settings: Settings) -> tuple[RuleSet, Path]:
    path = settings.alert_rules_file or DEFAULT_RULES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise alert_rules.RuleFileError(
            str(path), [{"loc": [], "msg": f"cannot read: {error}"}]
        ) from error
    return alert_rules.parse_rules(text, source=str(path)), path


def current_rules(*, session: Session, settings: Settings) -> RuleSetPublic:
    """The rule set in force: the newest one put through the API, else the rule file."""
    row = session.execute(
        select(RULE_SET_TABLE).order_by(RULE_SET_TABLE.c.id.desc()).limit(1)
    ).first()
    if row is not None:
        return RuleSetPublic(
            source="api",
            updated_at=row.created_at,
            updated_by=row.updated_by,
            rules=RuleSet.model_validate({"rules": row.rules}).rules,
        )
    rule_set, path = _file_rules(settings)
    return RuleSetPublic(source=str(path), updated_at=None, updated_by=None, rules=rule_set.rules)


def put_rules(*, session: Session, rule_set: RuleSet, updated_by: str | None) -> RuleSetPublic:
    """Store a validated rule set; it replaces the file (and earlier sets) from now on."""
    row = AlertRuleSet(
        rules=[rule.model_dump(mode="json") for rule in rule_set.rules],
        updated_by=updated_by,
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return RuleSetPublic(
        source="api", updated_at=row.created_at, updated_by=updated_by, rules=rule_set.rules
    )


# --- measurements: one function per kind ----------------------------------------------------


@dataclass
class _Context:
    session: Session
    settings: Settings
    now: datetime
    cache: dict[tuple[str, timedelta, float | None], list[Measurement]] = field(
        default_factory=dict
    )


def _hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _proportion(
    router: str | None,
    segment: str | None,
    count: float,
    total: float,
    start: datetime,
    end: datetime,
    **details: Any,
) -> Measurement:
    if total <= 0:
        return Measurement(router, segment, None, 0, window_start=start, window_end=end)
    rate = count / total
    low, high = wilson_interval(rate, total)
    return Measurement(
        router,
        segment,
        rate,
        int(total),
        estimate=rate,
        ci_low=low,
        ci_high=high,
        window_start=start,
        window_end=end,
        details={"count": int(count), **details},
    )


def _traffic_rate(
    column: str, per_segment: bool
) -> Callable[[_Context, AlertRule], list[Measurement]]:
    def measure(ctx: _Context, rule: AlertRule) -> list[Measurement]:
        t = TRAFFIC_TABLE.c
        start = _hour_floor(ctx.now - rule.window_delta)
        keys = (t.router, t.segment_value) if per_segment else (t.router,)
        rows = ctx.session.execute(
            select(*keys, func.sum(t[column]), func.sum(t.decisions))
            .where(t.window_start >= start, t.window_start <= ctx.now)
            .group_by(*keys)
        ).all()
        return [
            _proportion(
                row[0],
                row[1] if per_segment else None,
                float(row[-2] or 0),
                float(row[-1] or 0),
                start,
                ctx.now,
            )
            for row in rows
        ]

    return measure


def _quality_drop(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    s = STATE_TABLE.c
    log_a = math.log(ctx.settings.sequential_alarm_threshold)
    latest: dict[tuple[str, str], Any] = {}
    # Several judges may have a state per segment; the one updated last is the judge in force.
    for row in ctx.session.execute(select(STATE_TABLE).where(s.direction == "forward")):
        key = (row.router, row.segment_value)
        if key not in latest or row.updated_at > latest[key].updated_at:
            latest[key] = row
    measurements = []
    for (router, segment), row in sorted(latest.items()):
        if row.baseline_rate is None:
            # Still collecting the reference labels: nothing to test against yet.
            measurements.append(
                Measurement(router, segment, None, row.baseline_labels, window_end=row.last_ts)
            )
            continue
        progress = max(0.0, row.log_shiryaev_roberts / log_a)
        if row.alarmed_at_ts is not None:
            progress = max(progress, 1.0)
        rate = row.positives / row.labels if row.labels else None
        low, high = wilson_interval(rate, row.labels) if rate is not None else (None, None)
        measurements.append(
            Measurement(
                router,
                segment,
                progress,
                row.labels,
                estimate=rate,
                ci_low=low,
                ci_high=high,
                window_start=None,
                window_end=row.last_ts,
                details={
                    "estimate_of": "harm rate since the baseline",
                    "baseline_harm_rate": row.baseline_rate,
                    "reference_labels": row.baseline_labels,
                    "log_shiryaev_roberts": row.log_shiryaev_roberts,
                    "log_alarm_threshold": log_a,
                    "alarmed_at_ts": row.alarmed_at_ts.isoformat() if row.alarmed_at_ts else None,
                    "judge_key": row.judge_key,
                },
            )
        )
    return measurements


def _calibration_drift(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    from shadoweval.analytics import calibration_service

    window = rule.window_delta
    start, reference_start = ctx.now - window, ctx.now - 2 * window
    v = VERDICT_TABLE.c
    routers = ctx.session.scalars(
        select(v.router)
        .where(v.ts >= start, v.ts < ctx.now, v.router_score.is_not(None))
        .group_by(v.router)
    ).all()
    measurements = []
    for router in routers:
        reports = calibration_service.calibration_reports(
            session=ctx.session,
            router=router,
            since=start,
            until=ctx.now,
            reference_since=reference_start,
            reference_until=start,
        )
        if not reports:
            continue
        report = max(reports, key=lambda r: r.n)  # the judge with the most labels
        p_values = [
            test["p_value"]
            for test in (report.drift_against_reference, report.against_perfect_calibration)
            if test is not None and test.get("p_value") is not None
        ]
        measurements.append(
            Measurement(
                router,
                None,
                min(p_values) if p_values else None,
                report.n,
                estimate=report.expected_calibration_error,
                window_start=start,
                window_end=ctx.now,
                details={
                    "estimate_of": "expected calibration error (weighted, adaptive bins)",
                    "judge_key": report.judge_key,
                    "p_value_against_reference": (report.drift_against_reference or {}).get(
                        "p_value"
                    ),
                    "p_value_against_perfect_calibration": report.against_perfect_calibration.get(
                        "p_value"
                    ),
                    "brier": report.brier.get("brier"),
                    "reference_window_start": reference_start.isoformat(),
                },
            )
        )
    return measurements


def _feature_drift(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    d = DRIFT_TABLE.c
    rows = ctx.session.execute(
        select(d.id, d.router, d.window_start, d.window_end, d.status, d.drifted_share)
        .where(d.window_end > ctx.now - rule.window_delta)
        .order_by(d.window_end)
    ).all()
    newest = {row.router: row for row in rows}  # ordered by window_end: the last one wins
    return [
        Measurement(
            router,
            None,
            row.drifted_share if row.status == "ok" else None,
            None,
            estimate=row.drifted_share,
            window_start=row.window_start,
            window_end=row.window_end,
            details={"drift_report_id": row.id, "status": row.status},
        )
        for router, row in sorted(newest.items())
    ]


def _judge_inconsistency(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    s = SNAPSHOT_TABLE.c
    start = _hour_floor(ctx.now - rule.window_delta)
    rows = ctx.session.execute(
        select(s.router, func.sum(s.inconsistent), func.sum(s.labels))
        .where(s.window == "hour", s.window_start >= start, s.window_start <= ctx.now)
        .group_by(s.router)
    ).all()
    return [
        _proportion(router, None, float(bad or 0), float(n or 0), start, ctx.now)
        for router, bad, n in rows
    ]


def _shadow_backlog(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    session, now = ctx.session, ctx.now
    oldest = [
        session.scalar(
            select(func.min(VERDICT_TABLE.c.created_at)).where(
                VERDICT_TABLE.c.status.in_(OPEN_VERDICT_STATUSES)
            )
        ),
        session.scalar(
            select(func.min(RUN_TABLE.c.created_at)).where(
                RUN_TABLE.c.status.in_((WorkStatus.QUEUED, WorkStatus.RUNNING))
            )
        ),
        # Sampled, but no verdict planned yet.
        session.scalar(
            select(func.min(DECISION_TABLE.c.received_at)).where(
                DECISION_TABLE.c.sampled.is_(True),
                ~select(VERDICT_TABLE.c.id)
                .where(VERDICT_TABLE.c.decision_id == DECISION_TABLE.c.id)
                .exists(),
            )
        ),
    ]
    stuck = 0
    for table in (VERDICT_TABLE, RUN_TABLE):
        stuck += int(
            session.scalar(
                select(func.count()).where(table.c.status == "running", table.c.lease_until < now)
            )
            or 0
        )
    times = [_aware(t) for t in oldest if t is not None]
    age_minutes = max(0.0, (now - min(times)).total_seconds() / 60) if times else 0.0
    value = age_minutes
    if stuck and rule.alert is not None:
        value = max(value, rule.alert)
    return [
        Measurement(
            None,
            None,
            value,
            None,
            estimate=age_minutes,
            window_end=now,
            details={"oldest_open_item_age_minutes": age_minutes, "stuck_leases": stuck},
        )
    ]


def _aware(value: datetime) -> datetime:
    # Defensive: an aggregate may come back as naive UTC or as text on SQLite.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _provider_error_rate(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    r = RUN_TABLE.c
    start = ctx.now - rule.window_delta
    failed = func.sum(case((r.status == WorkStatus.FAILED, 1), else_=0))
    rows = ctx.session.execute(
        select(DECISION_TABLE.c.router, failed, func.count())
        .select_from(RUN_TABLE.join(DECISION_TABLE, DECISION_TABLE.c.id == r.decision_id))
        .where(
            r.ts >= start,
            r.ts < ctx.now,
            r.status.in_((WorkStatus.SUCCEEDED, WorkStatus.FAILED)),
        )
        .group_by(DECISION_TABLE.c.router)
    ).all()
    return [
        _proportion(router, None, float(bad or 0), float(n or 0), start, ctx.now)
        for router, bad, n in rows
    ]


def _budget_exhausted(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    day = ctx.now.strftime("%Y-%m-%d")
    rows = ctx.session.execute(select(BUDGET_TABLE).where(BUDGET_TABLE.c.day == day)).all()
    start = datetime.fromisoformat(day + "T00:00:00+00:00")
    measurements = []
    for row in rows:
        if row.exhausted_at is not None:
            value: float | None = 1.0
        elif row.budget_usd > 0:
            value = row.reserved_usd / row.budget_usd
        else:
            value = None
        # The budget account (shadow, boost) stands in the segment's place in the dedup key.
        measurements.append(
            Measurement(
                None,
                row.account,
                value,
                None,
                estimate=row.reserved_usd,
                window_start=start,
                window_end=start + timedelta(days=1),
                details={
                    "estimate_of": "reserved USD",
                    "budget_usd": row.budget_usd,
                    "refused_decisions": row.refused,
                    "exhausted_at": row.exhausted_at.isoformat() if row.exhausted_at else None,
                },
            )
        )
    return measurements


def _router_stale(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    session = ctx.session
    e, d = EVENT_TABLE.c, DECISION_TABLE.c
    events = session.execute(
        select(EVENT_TABLE).where(e.kind == "model_change").order_by(e.ts, e.id)
    ).all()
    latest = {row.router: row for row in events if row.router is not None}
    measurements = []
    for router, event in sorted(latest.items()):
        before = session.execute(
            select(d.router_version, d.threshold)
            .where(d.router == router, d.ts < event.ts)
            .order_by(d.ts.desc(), d.id.desc())
            .limit(1)
        ).first()
        retrained = False
        if before is not None:
            retrained = (
                session.scalar(
                    select(d.id)
                    .where(
                        d.router == router,
                        d.ts >= event.ts,
                        or_(
                            d.router_version.is_distinct_from(before.router_version),
                            d.threshold.is_distinct_from(before.threshold),
                        ),
                    )
                    .limit(1)
                )
                is not None
            )
        key = alert_rules.dedup_key(rule.name, router, None)
        last = session.scalars(
            select(Alert).where(ALERT_TABLE.c.dedup_key == key).order_by(ALERT_TABLE.c.id.desc())
        ).first()
        acknowledged = (
            last is not None
            and last.acknowledged_at is not None
            and last.numbers.get("event_id") == event.id
        )
        details = event.details or {}
        measurements.append(
            Measurement(
                router,
                None,
                0.0 if retrained or acknowledged else 1.0,
                None,
                window_start=event.ts,
                window_end=ctx.now,
                details={
                    "event_id": event.id,
                    "tier": details.get("tier"),
                    "model": details.get("model"),
                    "previous_models": details.get("previous_models"),
                    "export_url": details.get("export_url"),
                    "cleared_by": "new router_version or threshold"
                    if retrained
                    else "acknowledged"
                    if acknowledged
                    else None,
                },
            )
        )
    return measurements


MEASURE: dict[str, Callable[[_Context, AlertRule], list[Measurement]]] = {
    "quality_drop": _quality_drop,
    "calibration_drift": _calibration_drift,
    "feature_drift": _feature_drift,
    "cascade_escalation_rate": _traffic_rate("escalated", per_segment=True),
    "router_fallback_rate": _traffic_rate("fallback", per_segment=False),
    "provider_failover_rate": _traffic_rate("failover", per_segment=False),
    "judge_inconsistency": _judge_inconsistency,
    "shadow_backlog": _shadow_backlog,
    "provider_error_rate": _provider_error_rate,
    "budget_exhausted": _budget_exhausted,
    "router_stale": _router_stale,
}


def measure(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    """The rule's inputs, computed once per (kind, window) per evaluation pass."""
    key = (rule.kind, rule.window_delta, rule.alert)  # shadow_backlog reads rule.alert
    if key not in ctx.cache:
        ctx.cache[key] = MEASURE[rule.kind](ctx, rule)
    return ctx.cache[key]


# --- lifecycle --------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    rules: int = 0
    measured: int = 0
    opened: int = 0
    resolved: int = 0
    notifications: list[Notification] = field(default_factory=list)
    failed_rules: list[str] = field(default_factory=list)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _numbers(rule: AlertRule, m: Measurement, evaluation: alert_rules.Evaluation) -> dict[str, Any]:
    spec = alert_rules.KINDS[rule.kind]
    return {
        "value": m.value,
        "unit": spec.unit,
        "measures": spec.measures,
        "outcome": evaluation.outcome,
        "reason": evaluation.reason,
        "threshold": evaluation.threshold,
        "warn": rule.warn,
        "alert": rule.alert,
        "estimate": m.estimate,
        "ci_low": m.ci_low,
        "ci_high": m.ci_high,
        "confidence": 0.95 if m.ci_low is not None else None,
        "n": m.n,
        "min_samples": rule.min_samples,
        "window": rule.window if spec.uses_window else None,
        "window_start": _iso(m.window_start),
        "window_end": _iso(m.window_end),
        **m.details,
    }


# Page paths of the Streamlit dashboard (dashboard/app.py: st.Page infers them from file names).
_DASHBOARD_PAGE = {
    "quality_drop": "quality",
    "cascade_escalation_rate": "routing",
    "router_fallback_rate": "routing",
    "provider_failover_rate": "routing",
    "calibration_drift": "calibration",
    "feature_drift": "drift",
    "judge_inconsistency": "judge",
}


def dashboard_link(settings: Settings, kind: str, router: str | None, segment: str | None) -> str:
    query = {k: v for k, v in (("router", router), ("segment", segment)) if v is not None}
    page = _DASHBOARD_PAGE.get(kind, "alerts")
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{settings.dashboard_url.rstrip('/')}/{page}{suffix}"


def _title(rule: AlertRule, level: str, router: str | None, segment: str | None) -> str:
    where = " / ".join(part for part in (router, segment) if part) or "deployment"
    return f"[{level}] {rule.name} on {where}"


def _summary(rule: AlertRule, numbers: dict[str, Any]) -> str:
    spec = alert_rules.KINDS[rule.kind]
    parts = [f"{spec.measures}: {_fmt(numbers['value'])} {spec.unit} ({numbers['reason']})"]
    if numbers.get("estimate") is not None and numbers.get("ci_low") is not None:
        parts.append(
            f"estimate {_fmt(numbers['estimate'])} (95 % CI {_fmt(numbers['ci_low'])}–"
            f"{_fmt(numbers['ci_high'])}, n={numbers['n']})"
        )
    elif numbers.get("n") is not None:
        parts.append(f"n={numbers['n']}")
    if numbers.get("window_start") or numbers.get("window_end"):
        parts.append(
            f"decision time {numbers.get('window_start') or '…'} to "
            f"{numbers.get('window_end') or '…'}"
        )
    return "; ".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


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
        title=("[resolved] " + alert.title.split("] ", 1)[-1])
        if kind == "resolve"
        else alert.title,
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
) -> None:
    alert.state = "resolved"
    alert.open_key = None
    alert.resolved_at = now
    alert.resolve_reason = reason
    alert.updated_at = now
    session.add(alert)
    session.flush()
    result.resolved += 1
    if notify:
        _notify(session, settings, alert, "resolve", now, result)


def _inherited_silence(session: Session, key: str, now: datetime) -> datetime | None:
    """A silence set on an earlier episode of the key still covers a new one until it ends."""
    until = session.scalar(
        select(func.max(ALERT_TABLE.c.silenced_until)).where(ALERT_TABLE.c.dedup_key == key)
    )
    if until is None:
        return None
    aware = _aware(until)
    return aware if aware > now else None


def _advance(
    ctx: _Context,
    rule: AlertRule,
    m: Measurement,
    evaluation: alert_rules.Evaluation,
    outcome: alert_rules.Outcome | None,
    current: Alert | None,
    result: EvaluationResult,
) -> None:
    session, now = ctx.session, ctx.now
    key = alert_rules.dedup_key(rule.name, m.router, m.segment)
    snapshot = (
        alert_rules.AlertSnapshot(
            level=cast(alert_rules.Level, current.level),
            last_notified_at=current.last_notified_at,
            acknowledged_at=current.acknowledged_at,
            silenced_until=current.silenced_until,
        )
        if current is not None
        else None
    )
    opening = current is None and outcome in ("warn", "alert")
    inherited = _inherited_silence(session, key, now) if opening else None
    step = alert_rules.step(
        snapshot,
        outcome,
        now=now,
        reminder_interval=timedelta(minutes=ctx.settings.alert_reminder_minutes),
        inherited_silence=inherited,
    )
    if step.action == "none":
        return
    if step.action == "resolve":
        assert current is not None
        current.numbers = {**current.numbers, **_numbers(rule, m, evaluation)}
        reason = "no data" if evaluation.outcome == "no_data" else "condition cleared"
        _resolve(session, ctx.settings, current, reason, now, step.notify == "resolve", result)
        return
    assert step.level is not None
    numbers = _numbers(rule, m, evaluation)
    if evaluation.outcome == "no_data":
        # Keep the last numbers seen, marked stale.
        base = current.numbers if current is not None else numbers
        numbers = {**base, "missing_data": True, "reason": evaluation.reason}
    alert = current
    if alert is None:
        alert = Alert(
            rule=rule.name,
            kind=rule.kind,
            dedup_key=key,
            open_key=key,
            state="firing",
            level=step.level,
            severity="info",
            router=m.router,
            segment=m.segment,
            title="",
            summary="",
            started_at=now,
            updated_at=now,
            silenced_until=inherited,
            dashboard_url=dashboard_link(ctx.settings, rule.kind, m.router, m.segment),
        )
        result.opened += 1
    alert.level = step.level
    alert.severity = alert_rules.notification_severity(rule.severity, step.level)
    alert.numbers = numbers
    alert.title = _title(rule, step.level, m.router, m.segment)
    alert.summary = _summary(rule, numbers)
    alert.runbook_url = rule.runbook_url
    alert.updated_at = now
    session.add(alert)
    session.flush()
    if step.notify is not None:
        _notify(session, ctx.settings, alert, step.notify, now, result)


def evaluate_alerts(
    *, session: Session, settings: Settings, now: datetime | None = None
) -> EvaluationResult:
    """One evaluation pass over every enabled rule; commits what it changed.

    A rule whose inputs fail to compute is logged and skipped, its alerts left as they
    are: one broken rule never silences the others.
    """
    now = now or utcnow()
    ctx = _Context(session=session, settings=settings, now=now)
    result = EvaluationResult()
    rule_set = current_rules(session=session, settings=settings)
    enabled = {rule.name: rule for rule in rule_set.rules if rule.enabled}
    firing = {
        alert.dedup_key: alert
        for alert in session.scalars(select(Alert).where(ALERT_TABLE.c.state == "firing"))
    }
    for rule in enabled.values():
        result.rules += 1
        before = (result.opened, result.resolved, len(result.notifications))
        try:
            with session.begin_nested():
                _evaluate_rule(ctx, rule, firing, result)
        except Exception:  # one broken rule must not stop the others
            log.exception("alert rule %s could not be evaluated", rule.name)
            result.failed_rules.append(rule.name)
            # Its savepoint is rolled back: so is what it reported.
            result.opened, result.resolved, kept = before
            del result.notifications[kept:]
            session.expire_all()
    for alert in firing.values():
        if alert.state == "firing" and alert.rule not in enabled:
            _resolve(
                session,
                settings,
                alert,
                "rule disabled or removed",
                now,
                alert.last_notified_at is not None,
                result,
            )
    session.commit()
    return result


def _evaluate_rule(
    ctx: _Context, rule: AlertRule, firing: dict[str, Alert], result: EvaluationResult
) -> None:
    seen: set[str] = set()
    for m in measure(ctx, rule):
        if not rule.covers(m.router, m.segment):
            continue
        key = alert_rules.dedup_key(rule.name, m.router, m.segment)
        seen.add(key)
        result.measured += 1
        evaluation = alert_rules.evaluate(rule, m)
        outcome = alert_rules.apply_missing_data_policy(rule, evaluation)
        _advance(ctx, rule, m, evaluation, outcome, firing.get(key), result)
    # Firing alerts the inputs no longer mention: their data is missing.
    for key, alert in list(firing.items()):
        if alert.rule != rule.name or key in seen or alert.state != "firing":
            continue
        m = Measurement(alert.router, alert.segment, None, None, window_end=ctx.now)
        evaluation = alert_rules.Evaluation("no_data", None, "no data in the window")
        outcome = alert_rules.apply_missing_data_policy(rule, evaluation)
        _advance(ctx, rule, m, evaluation, outcome, alert, result)


# --- API reads and operator actions -----------------------------------------------------------


def _public(alert: Alert) -> AlertPublic:
    return AlertPublic.model_validate(alert, from_attributes=True)


def list_alerts(
    *,
    session: Session,
    state: str = "all",
    router: str | None = None,
    segment: str | None = None,
    rule: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> AlertPage:
    """Newest first; `next_cursor` continues the listing."""
    a = ALERT_TABLE.c
    query = select(Alert).order_by(a.id.desc()).limit(limit + 1)
    if state != "all":
        query = query.where(a.state == state)
    for column, value in ((a.router, router), (a.segment, segment), (a.rule, rule)):
        if value is not None:
            query = query.where(column == value)
    if cursor is not None:
        try:
            before = int(cursor)
        except ValueError as error:
            raise InvalidRequest(
                "cursor is not valid; pass next_cursor from a previous page"
            ) from error
        query = query.where(a.id < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPage(
        items=[_public(row) for row in rows],
        next_cursor=str(rows[-1].id) if more and rows else None,
    )


def _get(session: Session, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id} not found", alert_id=alert_id)
    return alert


def get_alert(*, session: Session, alert_id: int) -> AlertPublic:
    return _public(_get(session, alert_id))


def acknowledge(
    *,
    session: Session,
    settings: Settings,
    alert_id: int,
    by: str | None,
    now: datetime | None = None,
) -> AlertPublic:
    """Stops reminders for the episode. A `router_stale` alert is cleared by it (DESIGN.md,
    Model changes), and says so to the receivers that were told it fired."""
    now = now or utcnow()
    alert = _get(session, alert_id)
    if alert.acknowledged_at is None:
        alert.acknowledged_at = now
        alert.acknowledged_by = by
        alert.updated_at = now
    session.add(alert)
    if alert.kind == "router_stale" and alert.state == "firing":
        _resolve(
            session,
            settings,
            alert,
            "acknowledged",
            now,
            alert.last_notified_at is not None,
            EvaluationResult(),
        )
    session.commit()
    return _public(alert)


def silence(
    *,
    session: Session,
    alert_id: int,
    minutes: int | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> AlertPublic:
    """No notification for the alert (and later episodes of its key) until `until`."""
    now = now or utcnow()
    end = until if until is not None else now + timedelta(minutes=minutes or 0)
    if end <= now:
        raise InvalidRequest("`until` must be in the future", field="until")
    alert = _get(session, alert_id)
    alert.silenced_until = end
    alert.updated_at = now
    session.add(alert)
    session.commit()
    return _public(alert)


# --- gauges for /metrics ----------------------------------------------------------------------


def firing_counts(session: Session) -> list[tuple[str, str, str, int]]:
    """(rule, severity, level, firing alerts) for /metrics."""
    a = ALERT_TABLE.c
    rows = session.execute(
        select(a.rule, a.severity, a.level, func.count())
        .where(a.state == "firing")
        .group_by(a.rule, a.severity, a.level)
    ).all()
    return [(rule, severity, level, int(n)) for rule, severity, level, n in rows]


def firing_alerts(session: Session) -> list[Alert]:
    return list(session.scalars(select(Alert).where(ALERT_TABLE.c.state == "firing").limit(1000)))
