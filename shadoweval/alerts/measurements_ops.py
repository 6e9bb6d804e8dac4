"""Alert measurements of operations: cache loss, mid-loop escalation, shadow backlog,
provider errors, budget exhaustion and stale routers (one function per rule kind)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select

from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.measure_context import (
    _aware,
    _complete_hours,
    _Context,
    _oldest,
    _proportion,
    _unplanned_conditions,
)
from shadoweval.alerts.models import Alert
from shadoweval.alerts.rules import AlertRule, Measurement
from shadoweval.alerts.tables import (
    ALERT_TABLE,
    BUDGET_TABLE,
    DECISION_TABLE,
    EVENT_TABLE,
    OPEN_STATES,
    PERIOD_TABLE,
    RUN_TABLE,
    VERDICT_TABLE,
)
from shadoweval.analytics import sessions as sessions_analytics
from shadoweval.events.models import EventKind
from shadoweval.judge.models import VerdictStatus
from shadoweval.providers.pricing import PricingTable
from shadoweval.shadow.models import BATCH_HOLD, ShadowMode, WorkStatus

# A loss with no savings to set it against is reported as this ratio (the rule's value must
# stay a finite number in notifications and /metrics).
CACHE_LOSS_RATIO_CAP = 10.0


def _session_window(
    ctx: _Context, rule: AlertRule, router: str, at: datetime
) -> tuple[datetime, datetime, sessions_analytics.WindowFigures]:
    """The window's complete hours and the router's session figures over them."""
    start, end = _complete_hours(rule, at)
    figures = sessions_analytics.window_figures(
        session=ctx.session,
        pricing=PricingTable.from_settings(ctx.settings),
        router=router,
        since=start,
        until=end,
    )
    return start, end, figures


def _cache_loss(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    """The router's cache cost of switching as a share of its gross savings against
    session-sticky routing, over the sessions' turns in the window's complete hours (one
    query per hour, not per step: the session aggregation reads every turn)."""
    if router is None:
        return []
    start, at, figures = _session_window(ctx, rule, router, at)
    if figures.sessions == 0:
        return []
    loss, gross = figures.cache_cost_of_switching_usd, figures.gross_savings_usd
    if gross > 0:
        value = min(CACHE_LOSS_RATIO_CAP, loss / gross)
    else:
        value = CACHE_LOSS_RATIO_CAP if loss > 0 else 0.0
    return [
        Measurement(
            router,
            None,
            value,
            figures.sessions,
            estimate=value,
            window_start=start,
            window_end=at,
            details={
                "cache_cost_of_switching_usd": round(loss, 6),
                "gross_savings_usd": round(gross, 6),
                "net_savings_usd": round(gross - loss, 6),
            },
        )
    ]


def _mid_loop_escalation(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    """Escalations inside tool loops per tool-loop turn in the window's complete hours."""
    if router is None:
        return []
    start, at, figures = _session_window(ctx, rule, router, at)
    if not figures.loop_turns:
        return []
    return [
        _proportion(
            router, None, float(figures.escalations_in_loop), float(figures.loop_turns), start, at
        )
    ]


# Items in batch mode wait for their provider batch: up to batch_max_age before it goes,
# then the providers' 24 h completion window. Only time past that allowance is backlog.
BATCH_COMPLETION_WINDOW = timedelta(hours=24)


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


@dataclass(frozen=True)
class _BudgetSoFar:
    budget_usd: float
    reserved_usd: float
    refused: int


def _budget_before(
    ctx: _Context, start: datetime, at: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per account, the reservations and refusals of the sampling periods of the day that
    started before `at`: (accounts whose budget refused a sample, account → _BudgetSoFar)."""
    p = PERIOD_TABLE.c
    shadow_usd, boost_usd, refused, boost_refused = ctx.session.execute(
        select(
            func.coalesce(func.sum(p.reserved_usd), 0.0),
            func.coalesce(func.sum(p.boost_reserved_usd), 0.0),
            func.coalesce(func.sum(p.refused), 0),
            func.coalesce(func.sum(p.boost_refused), 0),
        ).where(p.period_start >= start, p.period_start < at)
    ).one()
    settings = ctx.settings
    days = {
        "shadow": _BudgetSoFar(
            settings.daily_shadow_budget_usd, float(shadow_usd), int(refused - boost_refused)
        ),
        "boost": _BudgetSoFar(
            settings.boost_daily_budget_usd, float(boost_usd), int(boost_refused)
        ),
    }
    days = {k: v for k, v in days.items() if v.reserved_usd > 0 or v.refused > 0}
    return {k: v for k, v in days.items() if v.refused > 0}, days


def _budget_exhausted(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    """Per budget account, the decision day of `at`: 1 once its budget_exhausted event is
    recorded (the event's ts is the day's 00:00 of decision time), else reserved / budget.

    The measurement stands for the day (`ts` = its 00:00), so the alert of a day is the
    same whether the evaluator met the day live or in a replay.
    """
    start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    day = start.strftime("%Y-%m-%d")
    e, a = EVENT_TABLE.c, ALERT_TABLE.c
    exhausted = {
        str((row.details or {}).get("account") or row.dedup_key.partition("/")[2]): row
        for row in ctx.session.execute(
            select(e.dedup_key, e.details).where(
                e.kind == EventKind.BUDGET_EXHAUSTED, e.ts == start
            )
        )
    }
    days = {
        row.account: row
        for row in ctx.session.execute(select(BUDGET_TABLE).where(BUDGET_TABLE.c.day == day))
    }
    if ctx.settings.sampling_mode == "hourly":
        # The day as it stood at `at`: the periods sampled before it (final once due, see
        # _due_steps), never spend or refusals of later periods a fast replay already made.
        exhausted, days = _budget_before(ctx, start, at)
    # Accounts alerting for an earlier day: measured too, so they resolve with the day.
    still_open = ctx.session.scalars(
        select(a.segment).where(
            a.rule == rule.name, a.state.in_(OPEN_STATES), a.segment.is_not(None)
        )
    ).all()
    measurements = []
    for account in sorted({*exhausted, *days, *(s for s in still_open if s is not None)}):
        row = days.get(account)
        value: float | None = 0.0
        if account in exhausted:
            value = 1.0
        elif row is not None and row.budget_usd > 0:
            value = row.reserved_usd / row.budget_usd
        # The budget account stands in the segment's place in the dedup key.
        measurements.append(
            Measurement(
                None,
                account,
                value,
                None,
                estimate=row.reserved_usd if row is not None else None,
                window_start=start,
                window_end=start + timedelta(days=1),
                ts=start,
                details={
                    "estimate_of": "reserved USD",
                    "day": day,
                    "budget_usd": row.budget_usd if row is not None else None,
                    "refused_decisions": row.refused if row is not None else None,
                    "budget_exhausted_event": account in exhausted,
                },
            )
        )
    return measurements


def _router_stale(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    session = ctx.session
    e, d = EVENT_TABLE.c, DECISION_TABLE.c
    events = session.execute(
        select(EVENT_TABLE).where(e.kind == EventKind.MODEL_CHANGE).order_by(e.ts, e.id)
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
                # The staleness is wall time; the change it stems from is decision time.
                ts=_aware(event.ts),
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
