"""`POST /v1/traces`: OTLP/HTTP JSON spans carrying routing decisions."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from shadoweval.deps import IngestScope, SettingsDep
from shadoweval.exceptions import MalformedBody, UnsupportedMediaType
from shadoweval.ingest.adapters import otlp
from shadoweval.ingest.body import read_body_within
from shadoweval.ingest.parsing import ParsedBody, media_type_of
from shadoweval.ingest.storable import MAX_ITEM_DEPTH
from shadoweval.ingest.submit import SubmitterDep

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
    except RecursionError as error:
        raise MalformedBody(
            "body nests too deeply to read; a decision may nest at most "
            f"{MAX_ITEM_DEPTH} levels of arrays and objects"
        ) from error
    except ValueError as error:  # valid JSON Python will not read (an integer's length)
        raise MalformedBody(f"body cannot be read: {error}") from error
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
async def post_traces(
    settings: SettingsDep,
    submitter: SubmitterDep,
    document: Annotated[dict[str, Any], Depends(read_otlp_body)],
) -> Response:
    """Store the routing decisions among OTLP spans (spans with `shadoweval.route.tier`).

    Answers OTLP's ExportTraceServiceResponse: 200 with `partialSuccess` counting the
    routing spans that could not be stored and why; other spans are ignored. Written
    through the one submit path (submit.py): 503 with Retry-After when ingest is full,
    which OTLP exporters retry.
    """
    try:
        batch = await run_in_threadpool(
            otlp.map_spans, document, default_router=settings.otlp_router_name
        )
    except otlp.OtlpShapeError as error:
        raise MalformedBody(f"not an OTLP ExportTraceServiceRequest: {error}") from error
    rejected = list(batch.rejected)
    if batch.decisions:
        outcome = await submitter.submit(ParsedBody(items=batch.decisions))
        for item_error in outcome.errors:
            request_id = batch.decisions[item_error.index].get("request_id")
            where = ".".join(map(str, item_error.loc))
            rejected.append(f"{request_id}: {where}: {item_error.msg}")
    partial: dict[str, Any] = {}
    if rejected:
        partial = {"rejectedSpans": len(rejected), "errorMessage": "; ".join(rejected)[:4000]}
    # ASCII-escaped: a span's ids may hold lone surrogates, which UTF-8 cannot carry.
    return Response(
        json.dumps({"partialSuccess": partial}, ensure_ascii=True), media_type="application/json"
    )
