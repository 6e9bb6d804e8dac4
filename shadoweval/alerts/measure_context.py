"""What every alert measurement reads: the pass's context, its routers and their
decision-time watermarks, the due decision-time steps, and small shared helpers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlmodel import Session

from shadoweval import clock as decision_clock
from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.rules import AlertRule, Measurement
from shadoweval.alerts.tables import DECISION_TABLE, VERDICT_TABLE
from shadoweval.config import Settings
from shadoweval.ingest.models import AWAITING_PLAN
from shadoweval.judge.models import OPEN_VERDICT_STATUSES
from shadoweval.stats.rates import wilson_interval


@dataclass
class _Context:
    """One evaluation pass: `now` is the wall clock; decision time comes per clock."""

    session: Session
    settings: Settings
    now: datetime
    cache: dict[tuple[Any, ...], list[Measurement]] = field(default_factory=dict)
    routers: list[str] | None = None
    watermarks: dict[str, datetime | None] = field(default_factory=dict)
    unlabelled: dict[tuple[str, datetime, datetime], datetime | None] = field(default_factory=dict)
    # The last outcome acted on per dedup key this pass (None: missing data, state kept).
    outcomes: dict[str, alert_rules.Outcome | None] = field(default_factory=dict)

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=self.settings.alert_decision_step_seconds)


MeasureAt = Callable[[_Context, AlertRule, str | None, datetime], list[Measurement]]


def _hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


# Steps are multiples of the step length since the epoch, so every pass, worker and replay
# meets the same decision times.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEPLOYMENT_CLOCK = ""  # the cursor clock of deployment-wide rules (the budget accounts)


def _step_floor(ts: datetime, step: timedelta) -> datetime:
    return _EPOCH + ((ts - _EPOCH) // step) * step


def _routers(ctx: _Context) -> list[str]:
    """Every router with decisions: a loose index scan of ix_decision_router_ts (one probe
    per router on both databases, never a scan of the log)."""
    if ctx.routers is None:
        rows = ctx.session.execute(
            text(
                "WITH RECURSIVE r(router) AS ("
                " SELECT min(router) FROM decision"
                " UNION ALL"
                " SELECT (SELECT min(d.router) FROM decision d WHERE d.router > r.router)"
                " FROM r WHERE r.router IS NOT NULL"
                ") SELECT router FROM r WHERE router IS NOT NULL"
            )
        )
        ctx.routers = [str(router) for (router,) in rows]
    return ctx.routers


def _watermark(ctx: _Context, clock: str) -> datetime | None:
    """The clock's decision time: a router's watermark, or the latest of them for the
    deployment (DESIGN.md, Time); None before the first decision."""
    if clock not in ctx.watermarks:
        if clock == DEPLOYMENT_CLOCK:
            marks = [m for m in (_watermark(ctx, r) for r in _routers(ctx)) if m is not None]
            ctx.watermarks[clock] = max(marks) if marks else None
        else:
            ctx.watermarks[clock] = decision_clock.decision_now(
                ctx.session,
                clock,
                skew_seconds=ctx.settings.decision_clock_skew_seconds,
                wall_now=ctx.now,
            )
    return ctx.watermarks[clock]


def _first_decision(ctx: _Context, clock: str) -> datetime | None:
    d = DECISION_TABLE.c
    query = select(func.min(d.ts))
    if clock != DEPLOYMENT_CLOCK:
        query = query.where(d.router == clock)
    value = ctx.session.execute(query).scalar()
    return _aware(value) if value is not None else None


def _earliest_unlabelled(
    ctx: _Context, router: str, since: datetime, until: datetime
) -> datetime | None:
    """The earliest ts in [since, until) of the router's decisions whose label may still
    come: a verdict not finished, a sampled decision without one, or one awaiting its
    sampling plan."""
    key = (router, since, until)
    if key not in ctx.unlabelled:
        d, v = DECISION_TABLE.c, VERDICT_TABLE.c
        found = [
            _oldest(
                ctx.session,
                v.ts,
                v.router == router,
                v.ts >= since,
                v.ts < until,
                v.status.in_(OPEN_VERDICT_STATUSES),
            ),
            _oldest(
                ctx.session, d.ts, d.router == router, d.ts < until, *_unplanned_conditions(since)
            ),
            _oldest(
                ctx.session,
                d.ts,
                d.router == router,
                d.ts >= since,
                d.ts < until,
                d.sampling_skip_reason == AWAITING_PLAN,
            ),
        ]
        known = [t for t in found if t is not None]
        ctx.unlabelled[key] = min(known) if known else None
    return ctx.unlabelled[key]


def _due_steps(
    ctx: _Context, rule: AlertRule, clock: str, evaluated: datetime | None
) -> list[datetime]:
    """The decision times at which to evaluate the rule on this clock, oldest first.

    A step t is due once the clock's watermark has reached it (the log before t is in);
    for kinds that read verdicts, also once every sampled decision before t is judged.
    A clock seen for the first time starts after its first decision, at most
    `alert_catch_up_hours` back; one pass takes `alert_max_steps_per_pass`.
    """
    step = ctx.step
    watermark = _watermark(ctx, clock)
    if watermark is None:
        return []
    last = _step_floor(watermark, step)
    if alert_rules.KINDS[rule.kind].deployment:
        # Budget days: a step is due once every decision before it has its sampling decided
        # (hourly sampling decides a period after it closes), so the spend it reads is final;
        # capped before the catch-up bound, or a replay would skip the days still planned.
        awaiting = _oldest(
            ctx.session, DECISION_TABLE.c.ts, DECISION_TABLE.c.sampling_skip_reason == AWAITING_PLAN
        )
        if awaiting is not None:
            last = min(last, _step_floor(awaiting, step))
    if evaluated is not None:
        # Floored: a changed step length moves the grid, never off it. Every step after
        # the cursor is taken, however far decision time jumped since (a fast replay moves
        # it days in one pass): skipping some would make the replay's alerts differ.
        first = _step_floor(evaluated, step) + step
    else:
        first_ts = _first_decision(ctx, clock)
        if first_ts is None:
            return []
        first = _step_floor(first_ts, step) + step
        # A rule or router new to the evaluator does not replay its whole history.
        catch_up = timedelta(hours=ctx.settings.alert_catch_up_hours) // step
        first = max(first, last - catch_up * step)
    if last < first:
        return []
    if alert_rules.KINDS[rule.kind].uses_labels and clock != DEPLOYMENT_CLOCK:
        # The current and the reference window of the earliest due step.
        unlabelled = _earliest_unlabelled(ctx, clock, first - 2 * rule.window_delta, last)
        if unlabelled is not None:
            last = min(last, _step_floor(unlabelled, step))
    count = min(ctx.settings.alert_max_steps_per_pass, (last - first) // step + 1)
    return [first + i * step for i in range(max(0, count))]


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


def _complete_hours(rule: AlertRule, at: datetime) -> tuple[datetime, datetime]:
    """The whole hours of the rule's window before the hour of `at`: hourly counts of the
    hour `at` is in are still growing in a live run but complete in a replay."""
    end = _hour_floor(at)
    hours = max(1, math.ceil(rule.window_delta / timedelta(hours=1)))
    return end - timedelta(hours=hours), end


def _aware(value: datetime) -> datetime:
    # Defensive: an aggregate may come back as naive UTC or as text on SQLite.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
