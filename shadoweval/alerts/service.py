"""Alert evaluation: one pass measures every enabled rule (at each due decision-time step
of its clock, or once as things are now) and advances its alerts; one broken rule never stops
the others. The jobs it orchestrates live beside it: rule sets (rulesets.py), measurements
(measurements.py and the per-kind measurements_*.py), the alert lifecycle (lifecycle.py) and
what the routes call (api.py); the names callers import from here are re-exported."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from sqlalchemy import delete, select
from sqlmodel import Session

# `import x as x`: names re-exported for the routes, jobs, CLI, /metrics and tests.
from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.alert_text import dashboard_link as dashboard_link
from shadoweval.alerts.api import acknowledge as acknowledge
from shadoweval.alerts.api import firing_alerts as firing_alerts
from shadoweval.alerts.api import firing_counts as firing_counts
from shadoweval.alerts.api import get_alert as get_alert
from shadoweval.alerts.api import list_alerts as list_alerts
from shadoweval.alerts.api import silence as silence
from shadoweval.alerts.lifecycle import EvaluationResult as EvaluationResult
from shadoweval.alerts.lifecycle import _apply, _cancel, _remind, _resolve
from shadoweval.alerts.measure_context import (
    DEPLOYMENT_CLOCK,
    _aware,
    _Context,
    _due_steps,
    _routers,
)
from shadoweval.alerts.measure_context import _unplanned_conditions as _unplanned_conditions
from shadoweval.alerts.measurements import MEASURE as MEASURE
from shadoweval.alerts.measurements import MEASURE_AT as MEASURE_AT
from shadoweval.alerts.measurements import measure, measure_at
from shadoweval.alerts.measurements_quality import _calibration_windows as _calibration_windows
from shadoweval.alerts.models import (
    Alert,
    AlertCursor,
    RuleSetPublic,
)
from shadoweval.alerts.rules import AlertRule
from shadoweval.alerts.rulesets import DEFAULT_RULES_FILE as DEFAULT_RULES_FILE
from shadoweval.alerts.rulesets import check_rules_file as check_rules_file
from shadoweval.alerts.rulesets import current_rules as current_rules
from shadoweval.alerts.rulesets import put_rules as put_rules
from shadoweval.alerts.tables import ALERT_TABLE, CURSOR_TABLE, OPEN_STATES
from shadoweval.config import Settings
from shadoweval.db import take_sqlite_write_lock, utcnow

log = logging.getLogger(__name__)


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


def _evaluate_steps(
    ctx: _Context,
    rule: AlertRule,
    clock: str,
    open_alerts: dict[str, Alert],
    result: EvaluationResult,
) -> None:
    """Evaluate the rule at each due decision-time step of one clock, then move its cursor
    (in the pass's transaction: a crash repeats the steps, a commit never does)."""
    cursor = ctx.session.get(AlertCursor, (rule.name, clock))
    due = _due_steps(ctx, rule, clock, _aware(cursor.evaluated_ts) if cursor else None)
    if not due:
        return
    router = clock if clock != DEPLOYMENT_CLOCK else None
    for at in due:
        _apply(
            ctx,
            rule,
            measure_at(ctx, rule, router, at),
            open_alerts,
            result,
            at=at,
            scope=(router,),
        )
        result.steps += 1
    if cursor is None:
        cursor = AlertCursor(rule=rule.name, clock=clock, evaluated_ts=due[-1], updated_at=ctx.now)
    cursor.evaluated_ts, cursor.updated_at = due[-1], ctx.now
    ctx.session.add(cursor)
    ctx.session.flush()


def _evaluate_now(
    ctx: _Context, rule: AlertRule, open_alerts: dict[str, Alert], result: EvaluationResult
) -> None:
    """A wall-clock or detector rule: measured once, as things are now."""
    _apply(ctx, rule, measure(ctx, rule), open_alerts, result, at=None, scope=None)


def _open_alerts(session: Session) -> dict[str, Alert]:
    return {
        alert.dedup_key: alert
        for alert in session.scalars(select(Alert).where(ALERT_TABLE.c.state.in_(OPEN_STATES)))
    }


def _guarded(
    ctx: _Context,
    rule: AlertRule,
    open_alerts: dict[str, Alert],
    result: EvaluationResult,
    work: Callable[[], None],
) -> bool:
    """Run one unit of a rule's evaluation in a savepoint: one broken rule (or clock) is
    logged and rolled back, and never stops the others."""
    before = (result.opened, result.pending, result.cancelled, result.resolved)
    kept = len(result.notifications)
    try:
        with ctx.session.begin_nested():
            work()
    except Exception:
        log.exception("alert rule %s could not be evaluated", rule.name)
        # Its savepoint is rolled back: so is what it reported, and the alerts it opened.
        result.opened, result.pending, result.cancelled, result.resolved = before
        del result.notifications[kept:]
        ctx.session.expire_all()
        open_alerts.clear()
        open_alerts.update(_open_alerts(ctx.session))
        return False
    return True


def evaluate_alerts(
    *, session: Session, settings: Settings, now: datetime | None = None
) -> EvaluationResult:
    """One evaluation pass over every enabled rule; commits what it changed.

    Two clocks (DESIGN.md, Time): `now` is the wall clock (reminders, silences,
    acknowledgements, the wall-clock kinds); the decision-time kinds are evaluated at
    every `alert_decision_step_seconds` step of each router's decision time (the
    deployment's for the budget) that its watermark passed since the last pass, in order,
    so the same log gives the same alerts however fast it arrived.

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
    open_alerts = _open_alerts(session)
    for rule in enabled.values():
        result.rules += 1
        spec = alert_rules.KINDS[rule.kind]
        if spec.clock != "decision":
            units: list[Callable[[], None]] = [
                partial(_evaluate_now, ctx, rule, open_alerts, result)
            ]
        else:
            clocks = [DEPLOYMENT_CLOCK] if spec.deployment else _routers(ctx)
            units = [
                partial(_evaluate_steps, ctx, rule, clock, open_alerts, result) for clock in clocks
            ]
        failed = [unit for unit in units if not _guarded(ctx, rule, open_alerts, result, unit)]
        if failed:
            result.failed_rules.append(rule.name)
    for alert in list(open_alerts.values()):
        alert_rule = enabled.get(alert.rule)
        if alert_rule is None:
            del open_alerts[alert.dedup_key]
            if alert.state == "pending":
                _cancel(ctx, alert, result, "rule disabled or removed")
            else:
                _resolve(
                    session,
                    settings,
                    alert,
                    "rule disabled or removed",
                    now,
                    alert.last_notified_at is not None,
                    result,
                )
        elif (
            alert.state == "firing"
            and alert_rules.KINDS[alert_rule.kind].clock == "decision"
            # Missing data under keep_state changes nothing, reminders included.
            and ctx.outcomes.get(alert.dedup_key, alert.level) is not None
        ):
            _remind(ctx, alert_rule, alert, result)
    # A removed rule's cursor goes with it; a disabled one keeps its place.
    names = [rule.name for rule in rule_set.rules]
    session.execute(delete(CURSOR_TABLE).where(CURSOR_TABLE.c.rule.not_in(names)))
    session.commit()
    return result
