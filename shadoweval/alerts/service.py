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

from pydantic import ValidationError
from sqlalchemy import Table, case, func, or_, select
from sqlmodel import Session

from shadoweval import paging
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
from shadoweval.db import take_sqlite_write_lock, utcnow
from shadoweval.events.models import Event
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.sampling.models import BudgetDay
from shadoweval.shadow.models import BATCH_HOLD, ShadowMode, ShadowRun, WorkStatus
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


def check_rules_file(settings: Settings) -> RuleSet:
    """Startup check of the API and the worker: a rule file that does not validate stops
    them with its path and every error, rather than leaving a deployment that never alerts."""
    return _file_rules(settings)[0]


def startup_checks(settings: Settings) -> None:
    """The worker's start: validate the rule file (raises RuleFileError) and say once,
    loudly, that webhook bodies go out unsigned when no secret is set."""
    check_rules_file(settings)
    unsigned = [
        name
        for name in ("alert_webhook_url", "retrain_webhook_url")
        if getattr(settings, name) and not settings.alert_webhook_secret
    ]
    if unsigned:
        log.warning(
            "%s set without alert_webhook_secret: webhook bodies are sent unsigned, so "
            "receivers cannot tell them from forgeries; set SHADOWEVAL_ALERT_WEBHOOK_SECRET",
            " and ".join(unsigned),
        )


def current_rules(*, session: Session, settings: Settings) -> RuleSetPublic:
    """The rule set in force: the newest one put through the API, else the rule file.

    Raises RuleFileError (an InvalidConfiguration) naming the source and each field path.
    """
    row = session.execute(
        select(RULE_SET_TABLE).order_by(RULE_SET_TABLE.c.id.desc()).limit(1)
    ).first()
    if row is not None:
        source = f"alert rule set {row.id} (PUT /v1/alert-rules)"
        try:
            rules = RuleSet.model_validate({"rules": row.rules}).rules
        except ValidationError as error:
            # Stored by an older version whose schema this one no longer accepts.
            raise alert_rules.RuleFileError(
                source, [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()]
            ) from error
        return RuleSetPublic(
            source="api", updated_at=row.created_at, updated_by=row.updated_by, rules=rules
        )
    rule_set, path = _file_rules(settings)
    return RuleSetPublic(source=str(path), updated_at=None, updated_by=None, rules=rule_set.rules)


# The evaluator's fallback while the rules in force do not validate: one per process.
_last_good_rules: RuleSetPublic | None = None


def _rules_for_evaluation(
    session: Session, settings: Settings, result: EvaluationResult
) -> RuleSetPublic:
    """The rules in force; if they stopped validating, the last set that did (else the
    packaged defaults), so a typo in the rule file never silences every alert."""
    global _last_good_rules
    try:
        rule_set = current_rules(session=session, settings=settings)
    except alert_rules.RuleFileError as error:
        result.rules_error = error.message
        fallback = _last_good_rules
        if fallback is None:
            default = alert_rules.parse_rules(
                DEFAULT_RULES_FILE.read_text(encoding="utf-8"), source=str(DEFAULT_RULES_FILE)
            )
            fallback = RuleSetPublic(
                source=str(DEFAULT_RULES_FILE),
                updated_at=None,
                updated_by=None,
                rules=default.rules,
            )
        log.error(
            "ALERT RULES INVALID, evaluating the last valid set (%s) instead: %s",
            fallback.source,
            error.message,
        )
        return fallback
    _last_good_rules = rule_set
    return rule_set


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
    """log R / log A of each segment's Shiryaev–Roberts detector, read as it is now.

    R keeps updating after an alarm (stats.sequential.shiryaev_roberts_update), so the
    value is never pinned at the alarm: the alert fires at log R ≥ log A (the rule's
    `alert`, 1) and resolves once log R falls back below the rule's `warn` level
    (hysteresis), i.e. the repeated Shiryaev–Roberts procedure, at most n/A expected
    false alarms per n labels. The estimate shown is the Hájek harm rate with its 95 %
    interval over the hours since monitoring began, as /v1/segments gives for them.
    """
    from shadoweval.analytics import harm

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
        since = harm.first_hour_with_labels_after(
            ctx.session,
            router=router,
            segment=segment,
            judge_key=row.judge_key,
            skip=row.baseline_labels,
        )
        until = _hour_floor(_aware(row.last_ts)) + timedelta(hours=1) if row.last_ts else None
        rate = (
            harm.harm_rates(
                ctx.session,
                since=since,
                until=until,
                router=router,
                segment=segment,
                judge_key=row.judge_key,
            ).get((router, segment, row.judge_key))
            if since is not None
            else None
        )
        weighted = rate is not None and not math.isnan(rate.estimate)
        measurements.append(
            Measurement(
                router,
                segment,
                progress,
                row.labels,
                estimate=rate.estimate if rate is not None and weighted else None,
                ci_low=rate.ci_low if rate is not None and weighted else None,
                ci_high=rate.ci_high if rate is not None and weighted else None,
                window_start=since,
                window_end=until,
                details={
                    "estimate_of": "weighted (Hájek, 1/π) harm rate of the hours since the "
                    "baseline, as /v1/segments?since=window_start&until=window_end shows it",
                    "effective_n": rate.effective_n if rate is not None and weighted else None,
                    "baseline_harm_rate": row.baseline_rate,
                    "reference_labels": row.baseline_labels,
                    "log_shiryaev_roberts": row.log_shiryaev_roberts,
                    "log_alarm_threshold": log_a,
                    "first_alarm_at_ts": _iso(row.alarmed_at_ts),
                    "judge_key": row.judge_key,
                },
            )
        )
    return measurements


def _model_change_times(ctx: _Context, router: str) -> list[datetime]:
    """The router's model_change times before now, newest first (at most two needed)."""
    e = EVENT_TABLE.c
    rows = ctx.session.scalars(
        select(e.ts)
        .where(e.kind == "model_change", e.router == router, e.ts < ctx.now)
        .group_by(e.ts)  # several tiers changing at one ts are one change
        .order_by(e.ts.desc())
        .limit(2)
    ).all()
    return [_aware(ts) for ts in rows]


def _calibration_windows(
    now: datetime, window: timedelta, changes: list[datetime]
) -> tuple[datetime, datetime | None, datetime]:
    """(current start, reference start, reference end = current start); neither window
    straddles a model change, as in analytics.calibration_service: a change inside the
    current window starts it, and the reference never reaches back past the change
    before that (None = no reference left)."""
    start = now - window
    latest = changes[0] if changes else None
    if latest is not None and latest > start:
        start = latest
        earlier = changes[1] if len(changes) > 1 else None
    else:
        earlier = latest
    reference_start = start - window
    if earlier is not None and earlier > reference_start:
        reference_start = earlier
    return start, (reference_start if reference_start < start else None), start


def _calibration_drift(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    """Bonferroni over its two tests (drift against the previous window, and against
    perfect calibration): the value is min(1, m · smallest p) for the m tests run, so
    the rule's thresholds keep their meaning as a false-alarm rate per evaluation."""
    from shadoweval.analytics import calibration_service

    window = rule.window_delta
    v = VERDICT_TABLE.c
    routers = ctx.session.scalars(
        select(v.router)
        .where(v.ts >= ctx.now - window, v.ts < ctx.now, v.router_score.is_not(None))
        .group_by(v.router)
    ).all()
    measurements = []
    for router in routers:
        changes = _model_change_times(ctx, router)
        start, reference_start, reference_end = _calibration_windows(ctx.now, window, changes)
        reports = calibration_service.calibration_reports(
            session=ctx.session,
            router=router,
            since=start,
            until=ctx.now,
            # An empty reference window (a change just before `start`) means no drift test.
            reference_since=reference_start if reference_start is not None else reference_end,
            reference_until=reference_end,
        )
        if not reports:
            continue
        report = max(reports, key=lambda r: r.n)  # the judge with the most labels
        p_values = [
            float(test["p_value"])
            for test in (report.drift_against_reference, report.against_perfect_calibration)
            if test is not None and test.get("p_value") is not None
        ]
        adjusted = min(1.0, len(p_values) * min(p_values)) if p_values else None
        measurements.append(
            Measurement(
                router,
                None,
                adjusted,
                report.n,
                estimate=report.expected_calibration_error,
                window_start=start,
                window_end=ctx.now,
                details={
                    "estimate_of": "expected calibration error (weighted, adaptive bins)",
                    "judge_key": report.judge_key,
                    "p_value_adjustment": f"Bonferroni over {len(p_values)} tests",
                    "p_value_against_reference": (report.drift_against_reference or {}).get(
                        "p_value"
                    ),
                    "p_value_against_perfect_calibration": report.against_perfect_calibration.get(
                        "p_value"
                    ),
                    "brier": report.brier.get("brier"),
                    "reference_window_start": _iso(reference_start),
                    "reference_window_end": _iso(reference_end) if reference_start else None,
                    "window_starts_at_model_change": bool(changes) and start == changes[0],
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


# Items in batch mode wait for their provider batch: up to batch_max_age before it goes,
# then the providers' 24 h completion window. Only time past that allowance is backlog.
BATCH_COMPLETION_WINDOW = timedelta(hours=24)


def _oldest(session: Session, column: Any, *conditions: Any) -> datetime | None:
    value = session.scalar(select(func.min(column)).where(*conditions))
    return _aware(value) if value is not None else None


def _unplanned_conditions(since: datetime) -> tuple[Any, ...]:
    """Sampled decisions since `since` (decision time) without a verdict row: a range of
    the partial index ix_decision_sampled_ts, never a scan of the decision table."""
    d, v = DECISION_TABLE.c, VERDICT_TABLE.c
    return (
        d.ts >= since,
        d.sampled.is_(True),
        ~select(v.id).where(v.decision_id == d.id).exists(),
    )


def _shadow_backlog(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    """Minutes the oldest unfinished item has waited beyond its allowance (none for
    realtime items, batch_max_age + 24 h for items in batch mode). Verdicts still
    waiting for their answers follow their shadow runs and are measured through them.

    Every query is bounded: open runs and verdicts through their (status, …) claim
    indexes, and sampled decisions not planned yet only over a look-back of twice the
    rule's largest threshold in decision time (an older one still counts: the enqueue
    job plans in ts order, so newer decisions then wait too).
    """
    session, now = ctx.session, ctx.now
    r, v, d = RUN_TABLE.c, VERDICT_TABLE.c, DECISION_TABLE.c
    open_run = r.status.in_((WorkStatus.QUEUED, WorkStatus.RUNNING))
    in_batch = or_(v.next_attempt_at == BATCH_HOLD, v.lease_until == BATCH_HOLD)
    claimable_verdict = v.status.in_((VerdictStatus.QUEUED, VerdictStatus.RUNNING))
    thresholds = [t for t in (rule.warn, rule.alert) if t is not None]
    look_back = timedelta(minutes=2 * max([*thresholds, 60.0]))
    realtime = [
        _oldest(session, v.created_at, claimable_verdict, ~in_batch),
        _oldest(session, r.created_at, open_run, r.mode != ShadowMode.BATCH),
        # Sampled, but no verdict planned yet.
        _oldest(session, d.received_at, *_unplanned_conditions(now - look_back)),
    ]
    batched = [
        _oldest(session, v.created_at, claimable_verdict, in_batch),
        _oldest(session, r.created_at, open_run, r.mode == ShadowMode.BATCH),
    ]
    allowance = timedelta(seconds=ctx.settings.batch_max_age_seconds) + BATCH_COMPLETION_WINDOW
    stuck = 0
    for table in (VERDICT_TABLE, RUN_TABLE):
        stuck += int(
            session.scalar(
                select(func.count()).where(table.c.status == "running", table.c.lease_until < now)
            )
            or 0
        )

    def minutes(times: list[datetime | None], grace: timedelta) -> float:
        known = [t for t in times if t is not None]
        return max(0.0, (now - grace - min(known)).total_seconds() / 60) if known else 0.0

    age_minutes = minutes(realtime, timedelta(0))
    batch_overdue = minutes(batched, allowance)
    value = max(age_minutes, batch_overdue)
    if stuck and rule.alert is not None:
        value = max(value, rule.alert)
    return [
        Measurement(
            None,
            None,
            value,
            None,
            estimate=value,
            window_end=now,
            details={
                "oldest_open_item_age_minutes": age_minutes,
                "oldest_batch_item_age_minutes": minutes(batched, timedelta(0)),
                "batch_allowance_minutes": allowance.total_seconds() / 60,
                "batch_overdue_minutes": batch_overdue,
                "stuck_leases": stuck,
            },
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
            # Operational time, not decision time: batch results land hours after their
            # decisions and must still count in the window they finished in.
            r.finished_at >= start,
            r.finished_at < ctx.now,
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
    rules_error: str | None = None  # the rules in force did not validate: a fallback ran


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
    # A savepoint opens a deferred transaction that reads first; on SQLite its first write
    # then fails at once (SQLITE_BUSY_SNAPSHOT) whenever another connection committed in
    # between, constantly under ingest load: the lock is taken up front instead.
    take_sqlite_write_lock(session)
    ctx = _Context(session=session, settings=settings, now=now)
    result = EvaluationResult()
    rule_set = _rules_for_evaluation(session, settings, result)
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
        query = query.where(a.id < paging.decode_id(cursor))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPage(
        items=[_public(row) for row in rows],
        next_cursor=paging.encode_id(cast(int, rows[-1].id)) if more and rows else None,
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
