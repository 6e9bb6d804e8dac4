"""Routes of the decision log: post decisions, list them, read one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from shadoweval.db import SessionDep
from shadoweval.deps import AdminScope, IngestScope, ReadScope, SettingsDep
from shadoweval.exceptions import Overloaded
from shadoweval.ingest import service
from shadoweval.ingest.body import read_body_within
from shadoweval.ingest.models import DecisionPage, DecisionPublic, IngestResponse
from shadoweval.ingest.parsing import (
    ParsedBody,
    check_media_type,
    parse_items,
)
from shadoweval.metrics import ApiMetrics
from shadoweval.sampling.service import SamplingPlan

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])

_DECISION_REF = {"$ref": "#/components/schemas/Decision"}
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One decision, a JSON array of decisions, or NDJSON (one per line). "
        "At most 1,000 decisions and 5 MB per request; gzip/deflate accepted.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [_DECISION_REF, {"type": "array", "items": _DECISION_REF}]}
            },
            "application/x-ndjson": {"schema": _DECISION_REF},
        },
    }
}


async def read_decision_body(request: Request, settings: SettingsDep) -> ParsedBody:
    """Read the body within the size limit and split it into items."""
    media_type = check_media_type(request.headers.get("content-type"))
    body = await read_body_within(request, settings.ingest_max_bytes)
    return await run_in_threadpool(
        parse_items, body, media_type, max_items=settings.ingest_max_items
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[IngestScope],
    openapi_extra=_REQUEST_BODY,
    responses={
        202: {"model": IngestResponse, "description": "Every item stored or a duplicate."},
        422: {"model": IngestResponse, "description": "Some items invalid; valid ones stored."},
        400: {"description": "Body empty or not JSON/NDJSON."},
        413: {"description": "Over 1,000 decisions or 5 MB."},
        415: {"description": "Content-Type or Content-Encoding not accepted."},
        503: {"description": "Overloaded: retry after the Retry-After header's seconds."},
    },
    response_model=IngestResponse,
)
def post_decisions(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    parsed: Annotated[ParsedBody, Depends(read_decision_body)],
) -> JSONResponse:
    """Store routing decisions. Answers only after the rows are committed."""
    plan: SamplingPlan = request.app.state.sampling_plan
    slots = request.app.state.ingest_slots
    if not slots.acquire(timeout=settings.ingest_wait_seconds):
        raise Overloaded(
            f"{settings.ingest_max_concurrent} ingest requests are being written already; "
            "retry after the Retry-After delay",
            retry_after_s=1,
        )
    try:
        plan.refresh_if_stale(request.app.state.engine, settings.plan_refresh_seconds)
        outcome = service.ingest_decisions(
            session=session, settings=settings, parsed=parsed, plan=plan
        )
    finally:
        slots.release()
    metrics: ApiMetrics = request.app.state.metrics
    stored, duplicates = outcome.count("stored"), outcome.count("duplicate")
    metrics.decisions_ingested.inc(stored)
    metrics.decisions_duplicate.inc(duplicates)
    metrics.decisions_sampled.inc(
        sum(1 for r in outcome.results if r.status == "stored" and r.sampled)
    )
    metrics.record_item_errors(outcome.errors)
    body = IngestResponse(
        stored=stored,
        duplicates=duplicates,
        invalid=outcome.count("invalid"),
        results=outcome.results,
        detail=outcome.errors,
    )
    code = 422 if outcome.errors else status.HTTP_202_ACCEPTED
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


@router.get("", dependencies=[ReadScope])
def list_decisions(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    tier: str | None = None,
    segment: Annotated[str | None, Query(description="Segment value.")] = None,
    since: Annotated[AwareDatetime | None, Query(description="ts ≥ since (RFC 3339).")] = None,
    until: Annotated[AwareDatetime | None, Query(description="ts < until (RFC 3339).")] = None,
    sampled: bool | None = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DecisionPage:
    return service.list_decisions(
        session=session,
        router=router_name,
        tier=tier,
        segment=segment,
        since=since,
        until=until,
        sampled=sampled,
        order="asc" if order == "asc" else "desc",
        cursor=cursor,
        limit=limit,
    )


@router.get("/{decision_id}", dependencies=[ReadScope])
def get_decision(decision_id: int, session: SessionDep) -> DecisionPublic:
    """One decision, with its stored request/response payload when one was kept."""
    return service.get_decision(session=session, decision_id=decision_id)


@router.delete("", dependencies=[AdminScope])
def delete_decisions(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    request_id: str | None = None,
    segment: Annotated[str | None, Query(description="Segment value.")] = None,
    payloads_only: Annotated[
        bool, Query(description="Delete request/response content only, keep the decisions.")
    ] = False,
) -> service.DeletionResult:
    """Delete decisions by request id, segment value and/or router, with everything derived
    from them (payloads, shadow runs, verdicts); at least one filter is required."""
    return service.delete_decisions(
        session=session,
        router=router_name,
        request_id=request_id,
        segment=segment,
        payloads_only=payloads_only,
    )
