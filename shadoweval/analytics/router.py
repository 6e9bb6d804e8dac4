"""Read routes for the dashboard: verdicts side by side, shadow runs, spend, judge quality."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from shadoweval.analytics import (
    calibration_service,
    calibration_windows,
    drift_service,
    economics_days,
    estimates,
    service,
)
from shadoweval.analytics import judge_quality as judge_quality_service
from shadoweval.analytics import spend as spend_service
from shadoweval.analytics.calibration_service import (
    CalibrationReport,
    CalibrationReportPage,
    EconomicsReport,
)
from shadoweval.analytics.calibration_windows import CalibrationWindows
from shadoweval.analytics.drift_service import DriftReportPublic
from shadoweval.analytics.estimates import SegmentEstimates
from shadoweval.analytics.judge_quality import JudgePairs, JudgeQualityReport, JudgeTimelineBucket
from shadoweval.analytics.service import (
    SegmentQuality,
    SegmentQualityPage,
    ShadowRunPage,
    VerdictPage,
)
from shadoweval.analytics.spend import DailySpend, SpendPage
from shadoweval.db import SessionDep
from shadoweval.deps import ReadScope, RowId, RowIdFilter, SettingsDep, Since, Until, UtcDay
from shadoweval.events import service as events_service
from shadoweval.events.models import EventPage, EventPublic
from shadoweval.judge.models import VerdictPublic
from shadoweval.sampling import periods
from shadoweval.sampling import service as sampling_service
from shadoweval.sampling.models import BudgetPublic, PeriodPublic, StratumPublic

router = APIRouter(prefix="/v1", tags=["analytics"], dependencies=[ReadScope])

Limit = Annotated[int, Query(ge=1, le=500)]
# The reports and the event log answered bare arrays before they paged. `paged=true` answers
# {items, next_cursor} like every other list; the array stays the default for one release.
Paged = Annotated[
    bool,
    Query(
        description="Answer {items, next_cursor} like every other list (recommended); without "
        "it the answer is the bare array of the first page (deprecated, kept for one release)."
    ),
]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]


@router.get("/verdicts")
def list_verdicts(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    segment: str | None = None,
    status: str | None = None,
    outcome: str | None = None,
    strong_needed: Annotated[int | None, Query(ge=0, le=1)] = None,
    routed_tier: str | None = None,
    direction: Annotated[str | None, Query(pattern="^(forward|reverse)$")] = None,
    since: Since = None,
    until: Until = None,
    include_answers: bool = False,
    verdict_ids: Annotated[
        list[int] | None,
        Query(alias="id", max_length=500, description="only these verdicts (repeat `id`)"),
    ] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> VerdictPage:
    """Judged pairs in (ts, id) order; `include_answers` adds both answers side by side."""
    return service.list_verdicts(
        session=session,
        router=router_name,
        segment=segment,
        status=status,
        outcome=outcome,
        strong_needed=strong_needed,
        routed_tier=routed_tier,
        direction=direction,
        since=since,
        until=until,
        include_answers=include_answers,
        verdict_ids=verdict_ids,
        cursor=cursor,
        limit=limit,
    )


@router.get("/verdicts/{verdict_id}")
def get_verdict(verdict_id: RowId, session: SessionDep) -> VerdictPublic:
    """One verdict with the request, both answers, and both orders' raw verdicts."""
    return service.get_verdict(session=session, verdict_id=verdict_id)


@router.get("/shadow-runs")
def list_shadow_runs(
    session: SessionDep,
    status: str | None = None,
    kind: Annotated[str | None, Query(pattern="^(shadow|routed_rerun)$")] = None,
    decision_id: RowIdFilter = None,
    since: Since = None,
    until: Until = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> ShadowRunPage:
    return service.list_shadow_runs(
        session=session,
        status=status,
        kind=kind,
        decision_id=decision_id,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )


@router.get("/spend")
def spend(
    session: SessionDep,
    since: Since = None,
    until: Until = None,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    segment: Annotated[str | None, Query(description="only this segment's decisions")] = None,
    paged: Paged = False,
    cursor: Cursor = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=500, description="days per page (default: 100 with paged, else all)"),
    ] = None,
) -> SpendPage | list[DailySpend]:
    """Shadow and judge spend in USD per UTC day of the decisions' ts, oldest day first (of
    one router's, and one segment's, decisions with `router` and `segment`).
    The report is computed per request; a cursor is a position in its day order."""
    page = spend_service.spend_page(
        session=session,
        since=since,
        until=until,
        router=router_name,
        segment=segment,
        cursor=cursor,
        limit=limit or (100 if paged else None),
    )
    return page if paged else page.items


@router.get("/judge/quality")
def judge_quality(
    session: SessionDep, since: Since = None, until: Until = None
) -> list[JudgeQualityReport]:
    """Per judge model and prompt hash: swap consistency, position-A preference and the
    length–verdict correlation (verbosity bias), each with a 95 % interval."""
    return judge_quality_service.judge_quality_report(session=session, since=since, until=until)


@router.get("/judge/timeline")
def judge_timeline(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    segment: str | None = None,
    since: Since = None,
    until: Until = None,
) -> list[JudgeTimelineBucket]:
    """Per UTC hour of decision ts, oldest first: finished verdicts, swap-consistent ones,
    and the decisive calls of either order with those that picked position A."""
    return judge_quality_service.judge_timeline(
        session=session, router=router_name, segment=segment, since=since, until=until
    )


@router.get("/judge/pairs")
def judge_pairs(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    segment: str | None = None,
    outcome: str | None = None,
    direction: Annotated[str | None, Query(pattern="^(forward|reverse)$")] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> JudgePairs:
    """How many verdicts (any status) match the filters, and the newest ones' ids, newest
    first (read them with GET /v1/verdicts?id=…)."""
    return judge_quality_service.judge_pairs(
        session=session,
        limit=limit,
        router=router_name,
        segment=segment,
        outcome=outcome,
        direction=direction,
        since=since,
        until=until,
    )


@router.get("/segments")
def segments(
    session: SessionDep,
    settings: SettingsDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    since: Since = None,
    until: Until = None,
    expected: Annotated[
        bool,
        Query(description="Add label-free expected harm (needs since; bootstraps per segment)."),
    ] = False,
    paged: Paged = False,
    cursor: Cursor = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=500, description="rows per page (default: 100 with paged, else all)"),
    ] = None,
) -> SegmentQualityPage | list[SegmentQuality]:
    """Per segment: harm (or missed-savings) rate, win/tie/loss and score delta with 95 %
    intervals, the coverage funnel, and the sequential test's state; riskiest first.
    Rates carry process-level intervals (the rate on the segment's traffic); forward rows
    add the human-corrected (PPI) rate and, with since/until, the expected harm.
    The report is computed per request; a cursor is a position in its riskiest-first order."""
    page = service.segment_quality_page(
        session=session,
        settings=settings,
        router=router_name,
        since=since,
        until=until,
        include_expected=expected,
        cursor=cursor,
        limit=limit or (100 if paged else None),
    )
    return page if paged else page.items


@router.get("/segments/{segment}/estimates")
def segment_estimates(
    segment: str,
    session: SessionDep,
    settings: SettingsDep,
    router_name: Annotated[str, Query(alias="router")],
    judge_key: str | None = None,
    since: Since = None,
    until: Until = None,
) -> SegmentEstimates:
    """Hourly harm of a segment's cheap-routed traffic three ways, each with a 95 %
    interval: judge-only, human-corrected (PPI) and label-free expected harm (router score
    recalibrated on labels), with the expected-vs-observed gap test (concept drift).
    Defaults to the 24 hours up to the segment's newest decision."""
    return estimates.segment_estimates(
        session=session,
        settings=settings,
        router=router_name,
        segment=segment,
        judge_key=judge_key,
        since=since,
        until=until,
    )


@router.get("/calibration")
def router_calibration(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    since: Since = None,
    until: Until = None,
    reference_since: Since = None,
    reference_until: Until = None,
    bins: Annotated[int, Query(ge=2, le=50)] = 10,
    paged: Paged = False,
    cursor: Cursor = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=100, description="reports per page (default: 20 with paged, else all)"),
    ] = None,
) -> CalibrationReportPage | list[CalibrationReport]:
    """Calibration of `router_score` (p_strong_needed) against `strong_needed`, per judge:
    reliability curve with intervals, ECE, Brier (CORP), Spiegelhalter z, Cox intercept and
    slope, the test against perfect calibration, and the drift test against a reference."""
    page = calibration_service.calibration_report_page(
        session=session,
        router=router_name,
        since=since,
        until=until,
        reference_since=reference_since,
        reference_until=reference_until,
        n_bins=bins,
        cursor=cursor,
        limit=limit or (20 if paged else None),
    )
    return page if paged else page.items


@router.get("/calibration/windows")
def router_calibration_windows(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    since: Since = None,
    until: Until = None,
    windows: Annotated[int, Query(ge=2, le=48, description="equal windows of decision time")] = 6,
    bins: Annotated[int, Query(ge=2, le=50)] = 10,
) -> CalibrationWindows:
    """Calibration over decision time in one call: the span from `since` (default: the
    router's first decision) to `until` (default: its newest, the last window left open)
    cut into `windows` equal windows, each with the reports `/v1/calibration` gives for it
    and the drift test against the first window."""
    return calibration_windows.calibration_windows(
        session=session, router=router_name, since=since, until=until, count=windows, n_bins=bins
    )


@router.get("/economics")
def router_economics(
    session: SessionDep,
    settings: SettingsDep,
    router_name: Annotated[str, Query(alias="router")],
    since: Since = None,
    until: Until = None,
    strong_tier: str = "strong",
    by: Annotated[
        Literal["day"] | None,
        Query(description="day: also the figures per UTC day of decision ts (`days`)"),
    ] = None,
) -> EconomicsReport:
    """Realized cost per request (USD) against the always-strong baseline, savings, router
    overhead, the break-even check, escalation/fallback/failover rates and latency tails (ms)."""
    from shadoweval.providers.pricing import PricingTable

    pricing = PricingTable.from_settings(settings)
    # With days, one grouped scan gives both: the window's sums are its days' added up.
    days = (
        economics_days.day_groups(session=session, router=router_name, since=since, until=until)
        if by == "day"
        else None
    )
    report = calibration_service.router_economics_report(
        session=session,
        pricing=pricing,
        router=router_name,
        since=since,
        until=until,
        strong_tier=strong_tier,
        groups=economics_days.window_groups(days) if days is not None else None,
    )
    if days and report.n_requests:
        report.days = economics_days.economics_per_day(
            session=session,
            pricing=pricing,
            router=router_name,
            since=since,
            until=until,
            strong_tier=strong_tier,
            groups=days,
        )
    return report


@router.get("/sampling")
def sampling_plan(
    session: SessionDep, router_name: Annotated[str | None, Query(alias="router")] = None
) -> list[StratumPublic]:
    """π per stratum as the planner last set it, with boosts, the labels a day planned and
    any shortfall against the floor that detects the configured drop."""
    return sampling_service.list_strata(session=session, router=router_name)


@router.get("/sampling/periods")
def sampling_periods(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 48
) -> list[PeriodPublic]:
    """The latest sampling periods the planner closed (hourly mode), newest first: when the
    plan's labels stop, decisions, samples, refusals, reserved and reconciled USD."""
    return periods.list_periods(session=session, limit=limit)


@router.get("/budget")
def budget(session: SessionDep, since_day: UtcDay | None = None) -> list[BudgetPublic]:
    """Shadow budget per UTC day and account: reserved USD, samples taken and refused."""
    return sampling_service.list_budget(session=session, since_day=since_day)


@router.get("/events")
def list_events(
    session: SessionDep,
    kind: str | None = None,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    since: Since = None,
    until: Until = None,
    paged: Paged = False,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventPage | list[EventPublic]:
    """Budget exhaustion, quality drops, model and judge changes and other events, newest
    first (decision time), of one router with `router`."""
    page = events_service.list_events_page(
        session=session,
        kind=kind,
        router=router_name,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return page if paged else page.items


@router.get("/drift")
def drift_reports(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DriftReportPublic]:
    """Feature and router-score drift per window against the window before (Evidently)."""
    return drift_service.list_reports(session=session, router=router_name, limit=limit)


@router.get("/drift/{report_id}/report.html", response_class=HTMLResponse)
def drift_report_html(report_id: RowId, session: SessionDep) -> HTMLResponse:
    """The stored Evidently HTML report."""
    return HTMLResponse(drift_service.report_html(session=session, report_id=report_id))
