"""`GET /v1/sessions`: the prompt-cache cost of per-turn routing and tool-loop escalations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shadoweval.analytics import sessions
from shadoweval.analytics.sessions import SessionsReport
from shadoweval.db import SessionDep
from shadoweval.deps import ReadScope, SettingsDep, Since, Until
from shadoweval.providers.pricing import PricingTable

router = APIRouter(prefix="/v1", tags=["analytics"], dependencies=[ReadScope])


@router.get("/sessions")
def sessions_report(
    session: SessionDep,
    settings: SettingsDep,
    router_name: Annotated[str, Query(alias="router", min_length=1, max_length=200)],
    segment: Annotated[str | None, Query(max_length=200)] = None,
    since: Since = None,
    until: Until = None,
) -> SessionsReport:
    """Per router (and segment), over [since, until) of decision time: sessions, turns and
    tier switches per session, cache-read/-write tokens and USD by model, the cache cost of
    switching against two session-sticky policies (first turn's tier, strongest turn's tier),
    gross and net savings with 95 % intervals, escalations at the start of a conversation vs
    inside a tool loop, and the judge-measured harm of cheap-routed tool turns vs other turns.
    A router that logs no `session_id` gets `status: "no sessions logged"`."""
    return sessions.sessions_report(
        session=session,
        pricing=PricingTable.from_settings(settings),
        router=router_name,
        segment=segment,
        since=since,
        until=until,
    )
