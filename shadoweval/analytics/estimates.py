"""Human-corrected (PPI) and label-free (expected) harm estimates per segment: the figures
`/v1/segments` shows beside the judge-only rate, and the hourly series of
`GET /v1/segments/{segment}/estimates` with the expected-vs-observed gap test."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, Field
from sqlalchemy import Table, func, select
from sqlmodel import Session

from shadoweval.analytics import harm
from shadoweval.exceptions import NotFound


class PpiFigure(BaseModel):
    """Human-corrected harm rate (PPI++): every judge label, debiased by the human labels
    of the uniform review sample (stats/ppi.py)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    lam: float | None = Field(description="power tuning: 0 = human-only, 1 = classic PPI")
    human_labels: int = Field(description="reviewed pairs of the uniform review sample")
    effective_human_labels: float | None = Field(
        description="human labels a human-only estimate would need for this precision"
    )
    judge_bias: float | None = Field(description="judge harm rate − human harm rate on them")
    judge_bias_ci_low: float | None
    judge_bias_ci_high: float | None
    human_only: Estimate


class ExpectedFigure(BaseModel):
    """Label-free expected harm (CBPE-style): mean P(harm | router_score) over the window's
    cheap-routed decisions, the map recalibrated on labels (stats/expected_harm.py)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    decisions: int
    calibration_method: str | None = Field(description="platt or isotonic (held-out Brier)")
    calibration_scope: str | None = Field(description="segment, or router when it has few labels")
    calibration_labels: int


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def ppi_figure(value: Any) -> PpiFigure:
    return PpiFigure(
        estimate=_finite_or_none(value.estimate),
        ci_low=_finite_or_none(value.ci_low),
        ci_high=_finite_or_none(value.ci_high),
        std_error=_finite_or_none(value.std_error),
        lam=_finite_or_none(value.lam),
        human_labels=value.human_n,
        effective_human_labels=_finite_or_none(value.effective_human_n),
        judge_bias=_finite_or_none(value.judge_bias),
        judge_bias_ci_low=_finite_or_none(value.judge_bias_ci_low),
        judge_bias_ci_high=_finite_or_none(value.judge_bias_ci_high),
        human_only=Estimate(
            estimate=_finite_or_none(value.human_only_estimate),
            ci_low=_finite_or_none(value.human_only_ci_low),
            ci_high=_finite_or_none(value.human_only_ci_high),
            std_error=_finite_or_none(value.human_only_std_error),
            n=value.human_n,
            effective_n=None,
        ),
    )


def _expected_figure(
    value: Any, labels: harm.CalibrationLabels, method: str | None
) -> ExpectedFigure:
    return ExpectedFigure(
        estimate=_finite_or_none(value.estimate),
        ci_low=_finite_or_none(value.ci_low),
        ci_high=_finite_or_none(value.ci_high),
        std_error=_finite_or_none(value.std_error),
        decisions=value.decisions,
        calibration_method=method,
        calibration_scope=labels.scope,
        calibration_labels=len(labels.label),
    )


def window_expected(
    session: Session,
    settings: Any,
    router: str,
    segment: str,
    judge_key: str,
    since: datetime,
    until: datetime | None,
) -> ExpectedFigure | None:
    """Expected harm of the whole window's cheap-routed decisions, the map fitted on the
    labels up to the window's end (without `until`: up to the segment's newest decision)."""
    if until is None:
        from datetime import timedelta

        from shadoweval.ingest.models import Decision

        decisions = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
        newest = session.execute(
            select(func.max(decisions.c.ts)).where(
                decisions.c.router == router, decisions.c.segment_value == segment
            )
        ).scalar()
        if newest is None:
            return None
        until = newest + timedelta(microseconds=1)
    labels = harm.calibration_labels(
        session, router=router, segment=segment, judge_key=judge_key, until=until
    )
    bins = harm.cheap_routed_score_bins(
        session, router=router, segment=segment, since=since, until=until
    )
    fitted = harm.bootstrap(labels, n_boot=settings.expected_harm_bootstrap)
    out = harm.expected_harm(fitted, bins)
    if fitted is None or not out:
        return None
    return _expected_figure(out[None], labels, fitted.calibration.method)


class GapFigure(BaseModel):
    """Observed minus expected harm on the window's labels, the map fitted on the labels
    before the window: a significant gap is concept drift (the score's meaning changed)."""

    observed: float | None
    expected: float | None
    gap: float | None
    std_error: float | None
    z: float | None
    p_value: float | None
    labels: int
    significant: bool
    reference_labels: int


class EstimatePoint(BaseModel):
    hour: datetime = Field(description="start of the hour (decision time)")
    judge_only: Estimate | None = Field(description="judge labels' harm rate (process-level)")
    ppi: PpiFigure | None
    expected: ExpectedFigure | None


class SegmentEstimates(BaseModel):
    router: str
    segment: str
    judge_key: str | None
    since: datetime
    until: datetime
    points: list[EstimatePoint]
    gap: GapFigure | None


def segment_estimates(
    *,
    session: Session,
    settings: Any,
    router: str,
    segment: str,
    judge_key: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SegmentEstimates:
    """Hourly judge-only, human-corrected (PPI) and expected harm of one segment's cheap-
    routed traffic, and the expected-vs-observed gap test over the window.

    The window defaults to the 24 hours up to the end of the hour of the segment's newest
    decision (decision time, never the wall clock). Expected harm's map is fitted on the
    labels before `since` when there are any (so the gap test compares it with labels it
    never saw), else on the window's labels (and there is no gap test).
    """
    from datetime import timedelta

    from shadoweval.analytics.models import VerdictWindowSnapshot
    from shadoweval.exceptions import InvalidRequest
    from shadoweval.ingest.models import Decision
    from shadoweval.stats.rates import WeightedSums, process_rate_from_sums

    decisions = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
    snapshots = cast(Table, VerdictWindowSnapshot.__table__)  # type: ignore[attr-defined]
    if until is None:
        newest = session.execute(
            select(func.max(decisions.c.ts)).where(
                decisions.c.router == router, decisions.c.segment_value == segment
            )
        ).scalar()
        if newest is None:
            raise NotFound(f"segment {segment!r} of router {router!r} has no decisions")
        until = newest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if since is None:
        since = until - timedelta(hours=24)
    if since >= until:
        raise InvalidRequest("since must be before until", field="since")
    if until - since > timedelta(hours=MAX_ESTIMATE_HOURS):
        raise InvalidRequest(
            f"the window may span at most {MAX_ESTIMATE_HOURS} hours", field="since"
        )
    s = snapshots.c
    sums_query = (
        select(
            s.judge_key,
            s.window_start,
            s.labels,
            s.sum_w,
            s.sum_w2,
            s.sum_wy,
            s.sum_vw,
            s.sum_vwy,
        )
        .where(
            s.window == "hour",
            s.direction == "forward",
            s.router == router,
            s.segment_value == segment,
            s.window_start >= since,
            s.window_start < until,
        )
        .order_by(s.window_start)
    )
    if judge_key is not None:
        sums_query = sums_query.where(s.judge_key == judge_key)
    rows = list(session.execute(sums_query))
    if judge_key is None and rows:
        per_judge: dict[str, int] = {}
        for row in rows:
            per_judge[row[0]] = per_judge.get(row[0], 0) + int(row[2] or 0)
        judge_key = max(per_judge, key=lambda key: (per_judge[key], key))
    hour_sums: dict[datetime, WeightedSums] = {}
    for key, start, labels, w, w2, wy, vw, vwy in rows:
        if key != judge_key:
            continue
        hour = _as_utc(start)
        hour_sums[hour] = harm.label_sums(labels, w, w2, wy, vw, vwy)
    human = harm.review_sample_labels(
        session,
        review_probability=settings.review_sample_probability,
        since=since,
        until=until,
        router=router,
        segment=segment,
        by_hour=True,
    )

    expected_by_hour: dict[Any, Any] = {}
    method: str | None = None
    gap: GapFigure | None = None
    fit_labels: harm.CalibrationLabels | None = None
    if judge_key is not None:
        reference = harm.calibration_labels(
            session, router=router, segment=segment, judge_key=judge_key, until=since
        )
        window_labels = harm.calibration_labels(
            session,
            router=router,
            segment=segment,
            judge_key=judge_key,
            since=since,
            until=until,
        )
        bins = harm.cheap_routed_score_bins(
            session, router=router, segment=segment, since=since, until=until, by_hour=True
        )
        fit_labels = reference if reference.label else window_labels
        # One map and one set of bootstrap refits for the series and the gap test.
        fitted = harm.bootstrap(fit_labels, n_boot=settings.expected_harm_bootstrap)
        expected_by_hour = harm.expected_harm(fitted, bins)
        method = fitted.calibration.method if fitted is not None else None
        test = harm.gap_test(reference, window_labels, fitted)
        if test is not None:
            gap = GapFigure(
                observed=_finite_or_none(test.observed),
                expected=_finite_or_none(test.expected),
                gap=_finite_or_none(test.gap),
                std_error=_finite_or_none(test.std_error),
                z=_finite_or_none(test.z),
                p_value=_finite_or_none(test.p_value),
                labels=test.labels,
                significant=test.significant,
                reference_labels=len(reference.label),
            )
    points = []
    hour = since.replace(minute=0, second=0, microsecond=0)
    hour = _as_utc(hour if hour == since else hour + timedelta(hours=1))
    while hour < until:
        sums = hour_sums.get(hour)
        sample = human.get((router, segment, judge_key or "", hour))
        expected = expected_by_hour.get(hour)
        points.append(
            EstimatePoint(
                hour=hour,
                judge_only=estimate_of(process_rate_from_sums(sums)) if sums else None,
                ppi=ppi_figure(harm.ppi_rate(sums, sample)) if sums and sample else None,
                expected=_expected_figure(expected, fit_labels, method)
                if expected is not None and fit_labels is not None
                else None,
            )
        )
        hour += timedelta(hours=1)
    return SegmentEstimates(
        router=router,
        segment=segment,
        judge_key=judge_key,
        since=since,
        until=until,
        points=points,
        gap=gap,
    )


def _as_utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes; every ts here is UTC."""
    from datetime import UTC

    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class Estimate(BaseModel):
    """A rate or mean with its 95 % interval."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    n: int
    effective_n: float | None


def estimate_of(value: Any) -> Estimate:
    return Estimate(
        estimate=_finite_or_none(value.estimate),
        ci_low=_finite_or_none(value.ci_low),
        ci_high=_finite_or_none(value.ci_high),
        std_error=_finite_or_none(value.std_error),
        n=value.n,
        effective_n=_finite_or_none(value.effective_n),
    )


# The longest window a series is computed for: each request bootstraps one map.
MAX_ESTIMATE_HOURS = 24 * 14
