"""HTTP routes of the candidate pool and the training export."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from shadoweval.db import SessionDep
from shadoweval.deps import AdminScope, ReadScope, SettingsDep, Since, Until
from shadoweval.pool import export, service
from shadoweval.pool.export_schema import EXPORT_RESPONSES
from shadoweval.pool.models import PoolIn, PoolPage, PoolPutResult
from shadoweval.providers.registry import ProviderRegistry

router = APIRouter(prefix="/v1", tags=["pool"])


@router.get("/pool", dependencies=[ReadScope])
def get_pool(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    include_inactive: bool = True,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> PoolPage:
    """The models each router chooses per tier: observed in decisions or set by PUT."""
    return service.list_pool(
        session=session,
        router=router_name,
        include_inactive=include_inactive,
        cursor=cursor,
        limit=limit,
    )


@router.put("/pool", dependencies=[AdminScope])
def put_pool(body: PoolIn, session: SessionDep) -> PoolPutResult:
    """Replace a router's pool: listed models are announced, omitted ones turn inactive.
    No event at PUT time: the first decision choosing an announced model records its
    model_change event, at that decision's ts (`announced` lists those still waiting)."""
    return service.put_pool(session=session, pool=body)


class _NdjsonRows(JSONResponse):
    """For the OpenAPI document only (the route answers a StreamingResponse with its
    format's media type): the rows are JSON objects, one per line. A JSONResponse, because
    FastAPI documents any other class's answer as one string."""

    media_type = "application/x-ndjson"


@router.get(
    "/exports/training",
    dependencies=[ReadScope],
    response_class=_NdjsonRows,
    responses=EXPORT_RESPONSES,
)
def training_export(
    request: Request,
    settings: SettingsDep,
    router_name: Annotated[str, Query(alias="router", min_length=1, max_length=200)],
    since: Since = None,
    until: Until = None,
    export_format: Annotated[
        export.ExportFormat, Query(alias="format")
    ] = export.ExportFormat.JSONL,
) -> StreamingResponse:
    """Judged pairs as labelled training tuples, streamed: `jsonl` (every field),
    `routellm` (battle columns) or `notdiamond` (CSV)."""
    # The generator opens its own sessions: the request's session may close before streaming ends.
    lines = export.export_lines(
        engine=request.app.state.engine,
        query=export.ExportQuery(router=router_name, since=since, until=until),
        export_format=export_format,
        provider_for=ProviderRegistry(settings).provider_name_for,
        settings=settings,
    )
    filename = f"{router_name}-training.{export.FILE_EXTENSIONS[export_format]}"
    return StreamingResponse(
        lines,
        media_type=export.MEDIA_TYPES[export_format],
        headers={"Content-Disposition": attachment_disposition(filename)},
    )


# Characters a quoted-string `filename="…"` fallback keeps as they are (RFC 6266 §4.3).
_UNSAFE_IN_FALLBACK = re.compile(r"[^A-Za-z0-9._ -]")


def attachment_disposition(filename: str) -> str:
    """`Content-Disposition: attachment` for `filename`, per RFC 6266: the exact name
    percent-encoded in `filename*=UTF-8''…` (RFC 8187), and an ASCII fallback with every
    other character replaced by `_`, so a router name can neither add a parameter
    (quotes, `;`) nor break the latin-1 header (`✓`)."""
    fallback = _UNSAFE_IN_FALLBACK.sub("_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
