"""`POST /v1/traces`: OTLP/HTTP JSON spans carrying routing decisions."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from shadoweval.db import SessionDep
from shadoweval.deps import IngestScope, SettingsDep
from shadoweval.exceptions import MalformedBody, UnsupportedMediaType
from shadoweval.ingest import service
from shadoweval.ingest.adapters import otlp
from shadoweval.ingest.body import read_body_within
from shadoweval.ingest.parsing import ParsedBody, media_type_of
from shadoweval.metrics import ApiMetrics
from shadoweval.sampling.service import SamplingPlan

router = APIRouter(tags=["integrations"])


async def read_otlp_body(request: Request, settings: SettingsDep) -> dict[str, Any]:
    media_type = media_type_of(request.headers.get("content-type"))
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type {media_type or 'none'} is not accepted; send OTLP/HTTP JSON "
            "(application/json); protobuf is not supported",
        )
    body = await read_body_within(request, settings.ingest_max_bytes)
    try:
        document = json.loads((body or b"{}").decode("utf-8"))
    except UnicodeDecodeError as error:
        raise MalformedBody(f"body is not UTF-8: {error.reason} at byte {error.start}") from error
    except json.JSONDecodeError as error:
        raise MalformedBody(
            f"body is not valid JSON: {error.msg} at line {error.lineno}"
        ) from error
    if not isinstance(document, dict):
        raise MalformedBody("body must be an ExportTraceServiceRequest object")
    return document


_ANY_VALUE = {
    "type": "object",
    "properties": {
        "stringValue": {"type": "string"},
        "intValue": {"type": "string", "description": "int64 as a decimal string"},
        "doubleValue": {"type": "number"},
        "boolValue": {"type": "boolean"},
    },
}
_KEY_VALUE = {
    "type": "object",
    "required": ["key", "value"],
    "properties": {"key": {"type": "string"}, "value": _ANY_VALUE},
}
_SPAN = {
    "type": "object",
    "required": ["traceId", "spanId", "name"],
    "properties": {
        "traceId": {"type": "string"},
        "spanId": {"type": "string"},
        "parentSpanId": {"type": "string"},
        "name": {"type": "string"},
        "startTimeUnixNano": {"type": "string"},
        "endTimeUnixNano": {"type": "string"},
        "attributes": {"type": "array", "items": _KEY_VALUE},
    },
}
# The OTLP/HTTP JSON ExportTraceServiceRequest, as far as routing decisions use it.
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "resourceSpans": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "resource": {
                                        "type": "object",
                                        "properties": {
                                            "attributes": {"type": "array", "items": _KEY_VALUE}
                                        },
                                    },
                                    "scopeSpans": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "spans": {"type": "array", "items": _SPAN}
                                            },
                                        },
                                    },
                                },
                            },
                        }
                    },
                }
            }
        },
    }
}


@router.post("/v1/traces", dependencies=[IngestScope], openapi_extra=_REQUEST_BODY)
def post_traces(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    document: Annotated[dict[str, Any], Depends(read_otlp_body)],
) -> dict[str, Any]:
    """Store the routing decisions among OTLP spans (spans with `shadoweval.route.tier`).

    Answers OTLP's ExportTraceServiceResponse: 200 with `partialSuccess` counting the
    routing spans that could not be stored and why; other spans are ignored.
    """
    try:
        batch = otlp.map_spans(document, default_router=settings.otlp_router_name)
    except otlp.OtlpShapeError as error:
        raise MalformedBody(f"not an OTLP ExportTraceServiceRequest: {error}") from error
    rejected = list(batch.rejected)
    if batch.decisions:
        plan: SamplingPlan = request.app.state.sampling_plan
        plan.refresh_if_stale(request.app.state.engine, settings.plan_refresh_seconds)
        outcome = service.ingest_decisions(
            session=session,
            settings=settings,
            parsed=ParsedBody(items=batch.decisions),
            plan=plan,
        )
        metrics: ApiMetrics = request.app.state.metrics
        metrics.decisions_ingested.inc(outcome.count("stored"))
        metrics.decisions_duplicate.inc(outcome.count("duplicate"))
        metrics.record_item_errors(outcome.errors)
        for item_error in outcome.errors:
            request_id = batch.decisions[item_error.index].get("request_id")
            where = ".".join(map(str, item_error.loc))
            rejected.append(f"{request_id}: {where}: {item_error.msg}")
    partial: dict[str, Any] = {}
    if rejected:
        partial = {"rejectedSpans": len(rejected), "errorMessage": "; ".join(rejected)[:4000]}
    return {"partialSuccess": partial}
