"""Alert evaluation and lifecycle: measure each rule's inputs, store alerts, hand notifications
to the outbox; and the read/acknowledge/silence calls of the API."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from pydantic import ValidationError
from sqlalchemy import Table, case, delete, func, or_, select, text, union_all
from sqlmodel import Session

from shadoweval import paging
from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.models import (
    Alert,
    AlertCursor,
    AlertPage,
    AlertPublic,
    AlertRuleSet,
    RuleSetPublic,
)
from shadoweval.alerts.notification import Notification, NotificationKind
from shadoweval.alerts.rules import AlertRule, Measurement, RuleSet
from shadoweval.analytics.models import (
    DriftReport,
    SequentialState,
    TrafficWindowSnapshot,
)
from shadoweval.config import Settings
from shadoweval.db import take_sqlite_write_lock, utcnow
from shadoweval.events.models import Event
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.ingest import clock as decision_clock
from shadoweval.ingest.models import AWAITING_PLAN, Decision, TrafficDelta
from shadoweval.judge.models import OPEN_VERDICT_STATUSES, Outcome, Verdict, VerdictStatus
from shadoweval.sampling.models import BudgetDay, SamplingPeriod
from shadoweval.shadow.models import BATCH_HOLD, ShadowMode, ShadowRun, WorkStatus
from shadoweval.stats.rates import wilson_interval

log = logging.getLogger(__name__)

ALERT_TABLE = cast(Table, Alert.__table__)  # type: ignore[attr-defined]
RULE_SET_TABLE = cast(Table, AlertRuleSet.__table__)  # type: ignore[attr-defined]
STATE_TABLE = cast(Table, SequentialState.__table__)  # type: ignore[attr-defined]
TRAFFIC_TABLE = cast(Table, TrafficWindowSnapshot.__table__)  # type: ignore[attr-defined]
DRIFT_TABLE = cast(Table, DriftReport.__table__)  # type: ignore[attr-defined]
EVENT_TABLE = cast(Table, Event.__table__)  # type: ignore[attr-defined]
DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
VERDICT_TABLE = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
RUN_TABLE = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]
BUDGET_TABLE = cast(Table, BudgetDay.__table__)  # type: ignore[attr-defined]
PERIOD_TABLE = cast(Table, SamplingPeriod.__table__)  # type: ignore[attr-defined]
DELTA_TABLE = cast(Table, TrafficDelta.__table__)  # type: ignore[attr-defined]
CURSOR_TABLE = cast(Table, AlertCursor.__table__)  # type: ignore[attr-defined]

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
        rules=[rule.model_dump(mode="json", by_alias=True) for rule in rule_set.rules],
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


def _traffic_rate(column: str, per_segment: bool) -> MeasureAt:
    def measure(
        ctx: _Context, rule: AlertRule, router: str | None, at: datetime
    ) -> list[Measurement]:
        start, end = _complete_hours(rule, at)
        # Folded hourly snapshots and the ingest deltas not folded yet: exact whenever the
        # aggregator last ran.
        counted = union_all(
            *(
                select(
                    table.c.segment_value.label("segment"),
                    table.c[column].label("count"),
                    table.c.decisions.label("decisions"),
                ).where(
                    table.c.router == router,
                    table.c.window_start >= start,
                    table.c.window_start < end,
                )
                for table in (TRAFFIC_TABLE, DELTA_TABLE)
            )
        ).subquery()
        keys = (counted.c.segment,) if per_segment else ()
        rows = ctx.session.execute(
            select(*keys, func.sum(counted.c.count), func.sum(counted.c.decisions))
            .group_by(*keys)
            .order_by(*keys)
        ).all()
        return [
            _proportion(
                router,
                row[0] if per_segment else None,
                float(row[-2] or 0),
                float(row[-1] or 0),
                start,
                end,
            )
            for row in rows
            if row[-1] is not None
        ]

    return measure


def _quality_drop(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    """G / h of each segment's change-point detector, read as it is now.

    G is the log GLR of the best change point among the segment's recent labels, with
    unknown pre- and post-change harm rates and a rise of at least harm_alert_rate −
    harm_baseline (stats.sequential.change_point_update). It keeps updating after an
    alarm, so the alert fires at G ≥ h (value 1, the rule's `alert`) and resolves once G
    falls back below the rule's `warn` share of h (hysteresis): when harm is back down,
    or once the raised rate has become the segment's history. h = glr_threshold(A) keeps
    the in-control ARL ≥ A = sequential_alarm_threshold labels per segment (calibrated by
    simulation for harm rates 0.01–0.5). The estimate is the post-change harm rate: the
    weighted (Hájek, 1/π) rate of the hours from the estimated change point on, as
    /v1/segments?since=window_start&until=window_end shows it, with its 95 % interval
    (the detector's own unweighted count with a Wilson interval when no hour has weights).
    """
    from shadoweval.analytics import harm

    s = STATE_TABLE.c
    latest: dict[tuple[str, str], Any] = {}
    # Several judges may have a state per segment; the one updated last is the judge in force.
    for row in ctx.session.execute(select(STATE_TABLE).where(s.direction == "forward")):
        key = (row.router, row.segment_value)
        if key not in latest or row.updated_at > latest[key].updated_at:
            latest[key] = row
    min_rise = max(0.0, round(ctx.settings.harm_alert_rate - ctx.settings.harm_baseline, 12))
    measurements = []
    for (router, segment), row in sorted(latest.items()):
        if not row.threshold or not row.labels:
            # Not fed yet (or a row the former detector left): nothing measured.
            measurements.append(
                Measurement(router, segment, None, row.labels, window_end=row.last_ts)
            )
            continue
        value = max(0.0, row.statistic) / row.threshold
        until = _hour_floor(_aware(row.last_ts)) + timedelta(hours=1) if row.last_ts else None
        since = _hour_floor(_aware(row.change_ts)) if row.change_ts else None
        detector_details: dict[str, Any] = {
            "detector": "Bernoulli GLR change point, unknown pre- and post-change rates",
            "statistic": row.statistic,
            "threshold": row.threshold,
            "min_rise": min_rise,
            "in_control_arl_labels": ctx.settings.sequential_alarm_threshold,
            "labels_used": row.labels,
            "alarmed_at_ts": _iso(row.alarmed_at_ts),
            "judge_key": row.judge_key,
        }
        if since is None or not row.post_change_labels:
            measurements.append(
                Measurement(
                    router,
                    segment,
                    value,
                    row.labels,
                    window_end=until,
                    details={
                        **detector_details,
                        "summary": f"no evidence of a harm-rate rise of {min_rise:.0%} or "
                        f"more in the {row.labels} labels so far (harm rate "
                        f"{row.positives / row.labels:.1%})",
                    },
                )
            )
            continue
        post_labels, post_harms = row.post_change_labels, row.post_change_harms
        post_rate = post_harms / post_labels
        rate = harm.harm_rates(
            ctx.session,
            since=since,
            until=until,
            router=router,
            segment=segment,
            judge_key=row.judge_key,
        ).get((router, segment, row.judge_key))
        if rate is not None and not math.isnan(rate.estimate):
            estimate, ci_low, ci_high = rate.estimate, rate.ci_low, rate.ci_high
            estimate_of = (
                "weighted (Hájek, 1/π) harm rate of the hours from the estimated change point "
                "on, as /v1/segments?since=window_start&until=window_end shows it"
            )
        else:
            estimate = post_rate
            ci_low, ci_high = wilson_interval(post_rate, post_labels)
            estimate_of = "harm rate of the labels since the estimated change point (Wilson)"
        evidence = "enough evidence" if value >= 1.0 else f"{value:.0%} of the evidence needed"
        measurements.append(
            Measurement(
                router,
                segment,
                value,
                row.labels,
                estimate=estimate,
                ci_low=ci_low,
                ci_high=ci_high,
                window_start=since,
                window_end=until,
                details={
                    **detector_details,
                    "summary": f"harm rate rose from {row.baseline_rate:.1%} "
                    f"({row.baseline_labels} labels before) to {post_rate:.1%} "
                    f"({post_harms} of the {post_labels} labels since "
                    f"{_aware(row.change_ts).isoformat()}): {evidence} for a rise of "
                    f"{min_rise:.0%} or more",
                    "estimate_of": estimate_of,
                    "effective_n": rate.effective_n if rate is not None else None,
                    "pre_change_harm_rate": row.baseline_rate,
                    "pre_change_labels": row.baseline_labels,
                    "post_change_harm_rate": post_rate,
                    "post_change_labels": post_labels,
                    "post_change_harms": post_harms,
                    "change_point_ts": _iso(_aware(row.change_ts)),
                },
            )
        )
    return measurements


def _model_change_times(ctx: _Context, router: str, before: datetime) -> list[datetime]:
    """The router's model_change times before `before`, newest first (at most two needed)."""
    e = EVENT_TABLE.c
    rows = ctx.session.scalars(
        select(e.ts)
        .where(e.kind == "model_change", e.router == router, e.ts < before)
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


def _calibration_drift(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    """Bonferroni over its two tests (drift against the previous window, and against
    perfect calibration when n and the effect are large enough, rules.calibration_value):
    the value is min(1, m · smallest counted p) for the m tests run, so the rule's
    thresholds keep their meaning as a false-alarm rate per evaluation."""
    from shadoweval.analytics import calibration_service

    assert router is not None
    window = rule.window_delta
    v = VERDICT_TABLE.c
    labelled = ctx.session.scalar(
        select(v.id)
        .where(v.router == router, v.ts >= at - window, v.ts < at, v.router_score.is_not(None))
        .limit(1)
    )
    if labelled is None:
        return []
    changes = _model_change_times(ctx, router, at)
    start, reference_start, reference_end = _calibration_windows(at, window, changes)
    reports = calibration_service.calibration_reports(
        session=ctx.session,
        router=router,
        since=start,
        until=at,
        # An empty reference window (a change just before `start`) means no drift test.
        reference_since=reference_start if reference_start is not None else reference_end,
        reference_until=reference_end,
    )
    if not reports:
        return []
    report = max(reports, key=lambda r: r.n)  # the judge with the most labels
    reference = report.drift_against_reference or {}
    minimums = rule.calibration_minimums
    slope = report.cox.get("slope")
    counted = alert_rules.calibration_value(
        alert_rules.CalibrationEvidence(
            n=report.n,
            ece=report.expected_calibration_error,
            slope=float(slope) if slope is not None else None,
            p_against_reference=reference.get("p_value"),
            p_against_perfect=report.against_perfect_calibration.get("p_value"),
        ),
        minimums,
    )
    tests = sum(
        p is not None
        for p in (reference.get("p_value"), report.against_perfect_calibration.get("p_value"))
    )
    return [
        Measurement(
            router,
            None,
            counted.value,
            report.n,
            estimate=report.expected_calibration_error,
            window_start=start,
            window_end=at,
            ts=at,
            details={
                "estimate_of": "expected calibration error (weighted, adaptive bins)",
                "judge_key": report.judge_key,
                "p_value_adjustment": f"Bonferroni over {tests} tests",
                "p_value_against_reference": reference.get("p_value"),
                "p_value_against_perfect_calibration": report.against_perfect_calibration.get(
                    "p_value"
                ),
                "perfect_calibration_counted": counted.perfect_counted,
                "conditions": counted.text,
                "conditions_held": counted.conditions,
                "calibration_slope": slope,
                "calibration_intercept": report.cox.get("intercept"),
                "perfect_calibration_min_n": minimums.min_n,
                "perfect_calibration_min_ece": minimums.min_ece,
                "perfect_calibration_min_slope_distance": minimums.min_slope_distance,
                "brier": report.brier.get("brier"),
                "reference_window_start": _iso(reference_start),
                "reference_window_end": _iso(reference_end) if reference_start else None,
                "window_starts_at_model_change": bool(changes) and start == changes[0],
            },
        )
    ]


def _feature_drift(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    d = DRIFT_TABLE.c
    row = ctx.session.execute(
        select(d.id, d.router, d.window_start, d.window_end, d.status, d.drifted_share)
        .where(d.router == router, d.window_end > at - rule.window_delta, d.window_end <= at)
        .order_by(d.window_end.desc(), d.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return []
    return [
        Measurement(
            router,
            None,
            row.drifted_share if row.status == "ok" else None,
            None,
            estimate=row.drifted_share,
            window_start=row.window_start,
            window_end=row.window_end,
            ts=at,
            details={"drift_report_id": row.id, "status": row.status},
        )
    ]


def _judge_inconsistency(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    """Share of the router's judged pairs in [at − window, at) whose orders disagree, from
    the verdicts themselves (the hourly snapshots are folded by a job, later)."""
    v = VERDICT_TABLE.c
    start = at - rule.window_delta
    bad, total = ctx.session.execute(
        select(func.sum(case((v.outcome == Outcome.INCONSISTENT, 1), else_=0)), func.count()).where(
            v.router == router, v.ts >= start, v.ts < at, v.status == VerdictStatus.DONE
        )
    ).one()
    if not total:
        return []
    return [_proportion(router, None, float(bad or 0), float(total), start, at)]


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
            select(e.dedup_key, e.details).where(e.kind == "budget_exhausted", e.ts == start)
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


MeasureNow = Callable[[_Context, AlertRule], list[Measurement]]
# The wall-clock and detector kinds: measured once per pass, as things are now.
MEASURE: dict[str, MeasureNow] = {
    "quality_drop": _quality_drop,
    "shadow_backlog": _shadow_backlog,
    "provider_error_rate": _provider_error_rate,
    "router_stale": _router_stale,
}
# The decision-time kinds: measured on one clock (a router; None = the deployment) at one
# decision-time step, over windows that end there.
MEASURE_AT: dict[str, MeasureAt] = {
    "calibration_drift": _calibration_drift,
    "feature_drift": _feature_drift,
    "cascade_escalation_rate": _traffic_rate("escalated", per_segment=True),
    "router_fallback_rate": _traffic_rate("fallback", per_segment=False),
    "provider_failover_rate": _traffic_rate("failover", per_segment=False),
    "judge_inconsistency": _judge_inconsistency,
    "budget_exhausted": _budget_exhausted,
}
# Kinds over whole hours of counts: the same value at every step within an hour.
_HOURLY = {"cascade_escalation_rate", "router_fallback_rate", "provider_failover_rate"}


def measure(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    """A wall-clock or detector rule's inputs, computed once per (kind, window) per pass."""
    key = (rule.kind, rule.window_delta, rule.alert)  # shadow_backlog reads rule.alert
    if key not in ctx.cache:
        ctx.cache[key] = MEASURE[rule.kind](ctx, rule)
    return ctx.cache[key]


def measure_at(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    """A decision-time rule's inputs at one step, shared by the rules that read the same."""
    hourly = rule.kind in _HOURLY
    key: tuple[Any, ...] = (
        rule.kind,
        rule.window_delta,
        router,
        _hour_floor(at) if hourly else at,
        rule.calibration_minimums.model_dump_json() if rule.kind == "calibration_drift" else None,
        rule.name if rule.kind == "budget_exhausted" else None,  # reads the rule's alerts
    )
    if key not in ctx.cache:
        ctx.cache[key] = MEASURE_AT[rule.kind](ctx, rule, router, at)
    return [replace(m, ts=at) if hourly else m for m in ctx.cache[key]]


# --- lifecycle --------------------------------------------------------------------------------

OPEN_STATES = ("pending", "firing")


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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _numbers(
    rule: AlertRule,
    m: Measurement,
    evaluation: alert_rules.Evaluation,
    decision_ts: datetime | None,
) -> dict[str, Any]:
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
        "decision_ts": _iso(decision_ts),
        "clock": spec.clock,
        "for": rule.pending_for,
        "clear": rule.clear,
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
    if numbers.get("conditions"):
        parts.append(str(numbers["conditions"]))
    if numbers.get("window_start") or numbers.get("window_end"):
        parts.append(
            f"decision time {numbers.get('window_start') or '…'} to "
            f"{numbers.get('window_end') or '…'}"
        )
    return "; ".join(parts)[:2000]


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
        if current.state == "pending":
            _cancel(ctx, current, result, "a new decision day")
        else:
            _resolve(
                session,
                ctx.settings,
                current,
                "a new decision day",
                now,
                current.last_notified_at is not None,
                result,
                decision_ts,
            )
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
        alert = Alert(
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
            started_at=now,
            updated_at=now,
            silenced_until=inherited,
            dashboard_url=dashboard_link(ctx.settings, rule.kind, m.router, m.segment),
            pending_since_ts=rule_time if spec.clock != "wall" else None,
        )
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
    alert.title = _title(rule, step.level, m.router, m.segment)
    alert.summary = _summary(rule, numbers)
    alert.runbook_url = rule.runbook_url
    alert.updated_at = now
    session.add(alert)
    session.flush()
    # Reminders are a wall-clock duty: once per pass, for the state the pass ends in
    # (evaluate_alerts), never for a step a catch-up pass has already left behind.
    if step.notify is not None and not (step.notify == "reminder" and at is not None):
        _notify(session, ctx.settings, alert, step.notify, now, result)


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
