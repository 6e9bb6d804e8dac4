"""Alert measurements of quality and routing behaviour: traffic rates, quality drop,
calibration and feature drift, judge inconsistency (one function per rule kind)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, union_all

from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.measure_context import (
    MeasureAt,
    _aware,
    _complete_hours,
    _Context,
    _hour_floor,
    _iso,
    _proportion,
)
from shadoweval.alerts.rules import AlertRule, Measurement
from shadoweval.alerts.tables import (
    DELTA_TABLE,
    DRIFT_TABLE,
    EVENT_TABLE,
    STATE_TABLE,
    TRAFFIC_TABLE,
    VERDICT_TABLE,
)
from shadoweval.events.models import EventKind
from shadoweval.judge.models import Outcome, VerdictStatus
from shadoweval.stats.change_point import CHANGE_POINT_REARM_FRACTION
from shadoweval.stats.rates import wilson_interval


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
    harm_baseline (stats.change_point_detector.change_point_update). One alarm is one episode: the
    alert fires at the alarm (G ≥ h, value 1, the rule's `alert`) and its value stays at
    least 1 while the detector's episode lasts, i.e. while the evidence for the alarmed
    rise (its pre-change labels against those since its change point, at most the
    look-back's change_point_window_labels) stays above
    half of h; it resolves when that evidence is gone (harm back down). The alarm restarts
    the detector at the change point, so G then measures a further rise against the raised
    rate. h = glr_threshold(A) keeps
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
        if row.alarmed_at_ts is not None:
            # The episode is open until the detector re-arms: one alarm, one alert.
            value = max(value, 1.0)
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
        # The detector's history: every label, or those since the last alarm's change point.
        watched = row.baseline_labels + row.post_change_labels
        watched_harms = row.baseline_positives + row.post_change_harms
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
                        f"more in the {watched} labels it watches (harm rate "
                        f"{watched_harms / max(watched, 1):.1%})",
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
            level="process",
        ).get((router, segment, row.judge_key))
        if rate is not None and not math.isnan(rate.estimate):
            estimate, ci_low, ci_high = rate.estimate, rate.ci_low, rate.ci_high
            estimate_of = (
                "weighted (Hájek, 1/π) harm rate of the hours from the estimated change point "
                "on, with its process-level interval (the segment's harm probability, never "
                "zero width), as /v1/segments?since=window_start&until=window_end shows it"
            )
        else:
            estimate = post_rate
            ci_low, ci_high = wilson_interval(post_rate, post_labels)
            estimate_of = "harm rate of the labels since the estimated change point (Wilson)"
        evidence = (
            f"alarm since {_aware(row.alarmed_at_ts).isoformat()}, evidence "
            f"{row.statistic / row.threshold:.0%} of the threshold (it ends below "
            f"{CHANGE_POINT_REARM_FRACTION:.0%})"
            if row.alarmed_at_ts is not None
            else "enough evidence"
            if value >= 1.0
            else f"{value:.0%} of the evidence needed"
        )
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
        .where(e.kind == EventKind.MODEL_CHANGE, e.router == router, e.ts < before)
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
    thresholds keep their meaning as a false-alarm rate per evaluation. Neither test counts
    unless the current window shows an effect that matters (ECE ≥ min_ece or |1 − slope|
    ≥ min_slope_distance): a p-value alone is not a drift a user needs to hear about."""
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
    # The test against the previous window needs the same effect as the one against perfect
    # calibration (ECE ≥ min_ece or |1 − slope| ≥ min_slope_distance in the current window):
    # with a day of labels on each side its p-value alone flagged well-calibrated windows
    # (bench scenario, seed 2, 17 h before the model swap: ECE 0.039, p = 0.002).
    # Dropping a test from the count only shrinks the rejection region (Bonferroni holds).
    effect = bool(counted.conditions.get("effect"))
    conditions_text = counted.text
    value = counted.value
    if not effect and value is not None and reference.get("p_value") is not None:
        value = 1.0
        conditions_text = (
            f"{counted.text}; the previous-window test does not count either: the current "
            "window's calibration error is below the minimum effect"
        )
    gap = _gap_evidence(
        ctx, router, report.judge_key, (reference_start, reference_end), (start, at)
    )
    return [
        Measurement(
            router,
            None,
            value,
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
                "conditions": conditions_text,
                "previous_window_counted": effect and reference.get("p_value") is not None,
                "conditions_held": counted.conditions,
                "calibration_slope": slope,
                "calibration_intercept": report.cox.get("intercept"),
                "perfect_calibration_min_n": minimums.min_n,
                "perfect_calibration_min_ece": minimums.min_ece,
                "perfect_calibration_min_slope_distance": minimums.min_slope_distance,
                "brier": report.brier.get("brier"),
                **gap,
                "reference_window_start": _iso(reference_start),
                "reference_window_end": _iso(reference_end) if reference_start else None,
                "window_starts_at_model_change": bool(changes) and start == changes[0],
            },
        )
    ]


def _gap_evidence(
    ctx: _Context,
    router: str,
    judge_key: str,
    reference: tuple[datetime | None, datetime],
    window: tuple[datetime, datetime],
) -> dict[str, Any]:
    """The expected-vs-observed gap (stats.expected_harm.calibration_gap_evidence, `gap_*`
    details) as evidence beside the two tests: the reference window's score map predicts
    this window's labels, and a significant gap says the score's meaning changed (concept
    drift), not just its distribution. Evidence only: it is not a third test in the
    Bonferroni count, so the rule's false-alarm rate is unchanged."""
    from shadoweval.analytics import calibration_service
    from shadoweval.stats.expected_harm import calibration_gap_evidence

    if reference[0] is None:
        return {}
    before = calibration_service.labelled_scores(ctx.session, router, reference[0], reference[1])
    now = calibration_service.labelled_scores(ctx.session, router, window[0], window[1])
    if judge_key not in before or judge_key not in now:
        return {}
    return calibration_gap_evidence(
        *before[judge_key], *now[judge_key], n_boot=ctx.settings.expected_harm_bootstrap
    )


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
