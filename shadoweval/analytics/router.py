"""Read routes for the dashboard: verdicts side by side, shadow runs, spend, judge quality."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from shadoweval.analytics import service
from shadoweval.analytics.service import (
    DailySpend,
    JudgeQualityReport,
    SegmentQuality,
    ShadowRunPage,
    VerdictPage,
)
from shadoweval.db import SessionDep
from shadoweval.deps import ReadScope, SettingsDep
from shadoweval.judge.models import VerdictPublic

router = APIRouter(prefix="/v1", tags=["analytics"], dependencies=[ReadScope])

Since = Annotated[AwareDatetime | None, Query(description="ts ≥ since (RFC 3339).")]
Until = Annotated[AwareDatetime | None, Query(description="ts < until (RFC 3339).")]
Limit = Annotated[int, Query(ge=1, le=500)]


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
        cursor=cursor,
        limit=limit,
    )


@router.get("/verdicts/{verdict_id}")
def get_verdict(verdict_id: int, session: SessionDep) -> VerdictPublic:
    """One verdict with the request, both answers, and both orders' raw verdicts."""
    return service.get_verdict(session=session, verdict_id=verdict_id)


@router.get("/shadow-runs")
def list_shadow_runs(
    session: SessionDep,
    status: str | None = None,
    kind: Annotated[str | None, Query(pattern="^(shadow|routed_rerun)$")] = None,
    decision_id: int | None = None,
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
def spend(session: SessionDep, since: Since = None, until: Until = None) -> list[DailySpend]:
    """Shadow and judge spend in USD per UTC day of the decisions' ts."""
    return service.spend_per_day(session=session, since=since, until=until)


@router.get("/judge/quality")
def judge_quality(
    session: SessionDep, since: Since = None, until: Until = None
) -> list[JudgeQualityReport]:
    """Per judge model and prompt hash: swap consistency, position-A preference and the
    length–verdict correlation (verbosity bias), each with a 95 % interval."""
    return service.judge_quality_report(session=session, since=since, until=until)


@router.get("/segments")
def segments(
    session: SessionDep,
    settings: SettingsDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    since: Since = None,
    until: Until = None,
) -> list[SegmentQuality]:
    """Per segment: harm (or missed-savings) rate, win/tie/loss and score delta with 95 %
    intervals, the coverage funnel, and the sequential test's state; riskiest first."""
    return service.segment_quality(
        session=session, settings=settings, router=router_name, since=since, until=until
    )
