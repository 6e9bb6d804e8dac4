"""Routes of the decision log: post decisions, list them, read one."""

from __future__ import annotations

import functools
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from shadoweval import retention
from shadoweval.auth.models import Principal, Scope
from shadoweval.auth.service import KeyCache
from shadoweval.db import SessionDep
from shadoweval.deps import AdminScope, ReadScope, RowId, SettingsDep, Since, Until, bearer_token
from shadoweval.exceptions import PermissionDenied
from shadoweval.ingest import service
from shadoweval.ingest.body import read_body_within
from shadoweval.ingest.models import DecisionPage, DecisionPublic, IngestResponse
from shadoweval.ingest.parsing import check_media_type, parse_items
from shadoweval.ingest.submit import SubmitterDep

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


# Bodies up to this size are parsed on the event loop (a single decision takes ~0.1 ms);
# larger ones in a worker thread, so one big batch does not stall every other request.
_INLINE_PARSE_BYTES = 32 * 1024
_app_state_lock = threading.Lock()


def _key_cache(app: Any) -> KeyCache:
    cache: KeyCache | None = getattr(app.state, "ingest_key_cache", None)
    if cache is None:
        with _app_state_lock:
            cache = getattr(app.state, "ingest_key_cache", None)
            if cache is None:
                cache = app.state.ingest_key_cache = KeyCache(
                    app.state.settings.ingest_key_cache_seconds
                )
    cache.ttl_s = app.state.settings.ingest_key_cache_seconds
    return cache


async def ingest_principal(request: Request) -> Principal:
    """The `ingest` scope check of deps.require_scope, without a thread hop when the key was
    authenticated within `ingest_key_cache_seconds` (the bound on a revocation elsewhere)."""
    token = bearer_token(request)
    cache = _key_cache(request.app)
    principal = cache.get(token)
    if principal is None:
        principal = await run_in_threadpool(
            cache.authenticate, engine=request.app.state.engine, key=token
        )
    request.state.key_prefix = principal.prefix
    if Scope.INGEST.value not in principal.scopes:
        raise PermissionDenied(
            f"API key {principal.prefix} lacks the `{Scope.INGEST.value}` scope this call needs",
            required_scope=Scope.INGEST.value,
        )
    return principal


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
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
async def post_decisions(
    request: Request,
    settings: SettingsDep,
    submitter: SubmitterDep,
    _principal: Annotated[Principal, Depends(ingest_principal)],
) -> Response:
    """Store routing decisions. Answers only after the rows are committed.

    Concurrent requests are written together in one transaction (ingest/submit.py).
    """
    media_type = check_media_type(request.headers.get("content-type"))
    body = await read_body_within(request, settings.ingest_max_bytes)
    parse = functools.partial(
        parse_items, body, media_type, max_items=settings.ingest_max_items, defer_decoding=True
    )
    inline = len(body) <= _INLINE_PARSE_BYTES
    parsed = parse() if inline else await run_in_threadpool(parse)
    outcome = await submitter.submit(parsed, inline=inline)
    answer = IngestResponse.model_construct(
        stored=outcome.count("stored"),
        duplicates=outcome.count("duplicate"),
        invalid=outcome.count("invalid"),
        results=outcome.results,
        detail=outcome.errors,
    )
    return Response(
        answer.model_dump_json(),
        status_code=422 if outcome.errors else status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


@router.get("", dependencies=[ReadScope])
def list_decisions(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    tier: str | None = None,
    segment: Annotated[str | None, Query(description="Segment value.")] = None,
    since: Since = None,
    until: Until = None,
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
def get_decision(decision_id: RowId, session: SessionDep) -> DecisionPublic:
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
) -> retention.DeletionResult:
    """Delete decisions by request id, segment value and/or router, with everything derived
    from them (payloads, shadow runs, verdicts); at least one filter is required."""
    return retention.delete_decisions(
        session=session,
        router=router_name,
        request_id=request_id,
        segment=segment,
        payloads_only=payloads_only,
    )
