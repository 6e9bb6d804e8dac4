"""`POST /v1/integrations/litellm`: what LiteLLM's generic API logger posts, unmodified.

The logger (`callback_type: generic_api`) sends StandardLoggingPayload records as
a JSON array, NDJSON or one object per request, all as application/json. Successes
are mapped onto the decision log (`adapters.litellm`) and stored by the same
service as `/v1/decisions`; failed calls are counted (Prometheus) and reported
per item, never stored as decisions and so never shadowed.

Status codes differ from `/v1/decisions` on purpose. LiteLLM never resends a
batch that got a 4xx (it retries only 5xx and transport errors, and only when
`max_retries` is set), and it keeps nothing of the reply but the status in a debug
line. A batch with some invalid records therefore answers 202: its valid records
are stored, the invalid ones are listed in the body, logged and counted in
`shadoweval_decisions_rejected` here, where someone can see them. Only a body of
which no record could be used answers 422, so that a misconfigured logger (e.g.
`generic_api_use_v1`) shows up as errors in LiteLLM's own log.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from shadoweval.deps import IngestScope, SettingsDep
from shadoweval.exceptions import MalformedBody, ShadowevalError
from shadoweval.ingest.adapters import litellm as adapter
from shadoweval.ingest.body import read_body_within
from shadoweval.ingest.models import IngestResponse, ItemError, ItemResult
from shadoweval.ingest.parsing import (
    NDJSON_MEDIA_TYPES,
    ParsedBody,
    check_media_type,
    parse_items,
)
from shadoweval.ingest.storable import printable
from shadoweval.ingest.submit import SubmitterDep
from shadoweval.metrics import ApiMetrics

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/integrations", tags=["integrations"])

_NDJSON = sorted(NDJSON_MEDIA_TYPES)[0]
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "LiteLLM StandardLoggingPayload records as its generic API logger "
        "posts them: a JSON array (`log_format: json_array`), NDJSON (`ndjson`) or one "
        "object (`single`), all as application/json. At most `litellm_max_bytes` "
        "(16 MiB by default) and `ingest_max_items` records per request; gzip/deflate "
        "accepted.",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "title": "StandardLoggingPayload"},
                        {"type": "array", "items": {"type": "object"}},
                    ]
                }
            },
        },
    }
}


@dataclass(slots=True)
class LiteLLMItemResult(ItemResult):
    """What happened to one record: `stored`, `duplicate`, `invalid`, `failed_call`, `skipped`."""

    trace_id: str | None = None
    failover_to: Annotated[
        str | None, Field(description="For a failed call: the decision a later attempt served.")
    ] = None
    reason: Annotated[str | None, Field(description="Why a record was skipped.")] = None


class LiteLLMIngestResponse(IngestResponse):
    failed_calls: int = Field(description="Failed calls: counted, not decisions, never shadowed.")
    skipped: int = Field(description="Records that are not chat calls (embeddings, images…).")
    results: list[LiteLLMItemResult]  # type: ignore[assignment]


# --- metrics ------------------------------------------------------------------------------


class _LiteLLMMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.failed_calls = Counter(
            "shadoweval_litellm_failed_calls",
            "Failed LLM calls LiteLLM reported (status failure): never decisions, never shadowed.",
            ["router", "model_group", "error_class"],
            registry=registry,
        )
        self.skipped = Counter(
            "shadoweval_litellm_skipped_records",
            "LiteLLM records that are not chat routing decisions, by call type.",
            ["router", "call_type"],
            registry=registry,
        )

    def count(
        self, mapped: list[adapter.Mapped], *, router: str, groups: Mapping[str, str]
    ) -> None:
        for item in mapped:
            if isinstance(item, adapter.FailedCall):
                # Only configured groups become label values: clients can name any model.
                group = item.model_group or "(none)"
                self.failed_calls.labels(
                    router=router,
                    model_group=group if group in groups else "(unmapped)",
                    # Label values from the record: escaped, or /metrics could not encode them.
                    error_class=printable((item.error_class or "(unknown)")[:64]),
                ).inc()
            elif isinstance(item, adapter.Skipped):
                call_type = printable(item.call_type[:64])
                self.skipped.labels(router=router, call_type=call_type).inc()


# ApiMetrics belongs to the app; these counters join its registry the first time they are
# needed (registering a name twice raises, hence one set per registry).
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _LiteLLMMetrics] = (
    weakref.WeakKeyDictionary()
)
_METRICS_LOCK = threading.Lock()


def _litellm_metrics(metrics: ApiMetrics) -> _LiteLLMMetrics:
    with _METRICS_LOCK:
        found = _METRICS.get(metrics.registry)
        if found is None:
            found = _METRICS[metrics.registry] = _LiteLLMMetrics(metrics.registry)
        return found


# --- body ---------------------------------------------------------------------------------


@dataclass
class LiteLLMBody:
    parsed: ParsedBody
    sender: str | None


def _parse(body: bytes, media_type: str, max_items: int) -> ParsedBody:
    try:
        return parse_items(body, media_type, max_items=max_items)
    except MalformedBody:
        # NDJSON whose first line is broken fails as JSON before NDJSON is tried; read
        # it line by line so the other records of the batch are still stored.
        stripped = body.strip()
        if (
            media_type in NDJSON_MEDIA_TYPES
            or not stripped.startswith(b"{")
            or len(stripped.splitlines()) < 2
        ):
            raise
        return parse_items(body, _NDJSON, max_items=max_items)


async def read_litellm_body(request: Request, settings: SettingsDep) -> LiteLLMBody:
    """Read the body within the LiteLLM limit and split it into records."""
    metrics: ApiMetrics = request.app.state.metrics
    try:
        media_type = check_media_type(request.headers.get("content-type"))
        body = await read_body_within(
            request,
            settings.litellm_max_bytes,
            advice="lower LiteLLM's batch size (or raise SHADOWEVAL_LITELLM_MAX_BYTES)",
        )
        parsed = await run_in_threadpool(_parse, body, media_type, settings.ingest_max_items)
    except ShadowevalError as error:
        metrics.record_request_rejected(error.code)
        raise
    return LiteLLMBody(parsed=parsed, sender=request.headers.get("user-agent"))


# --- route --------------------------------------------------------------------------------


def _source_loc(loc: list[str | int]) -> list[str | int]:
    """A decision-log field path → the StandardLoggingPayload field it came from."""
    if not loc:
        return loc
    if loc[0] == "request" and len(loc) > 1 and loc[1] == "messages":
        return ["messages", *loc[2:]]
    head = loc[0]
    return [adapter.SOURCE_OF_FIELD.get(head, head) if isinstance(head, str) else head, *loc[1:]]


@router.post(
    "/litellm",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[IngestScope],
    openapi_extra=_REQUEST_BODY,
    responses={
        202: {
            "model": LiteLLMIngestResponse,
            "description": "Records stored, duplicates, failed calls or skipped; invalid "
            "records (if any) are listed and the valid ones stored.",
        },
        422: {"model": LiteLLMIngestResponse, "description": "No record could be used."},
        400: {"description": "Body empty or not JSON/NDJSON."},
        413: {"description": "Over litellm_max_bytes or ingest_max_items."},
        415: {"description": "Content-Type or Content-Encoding not accepted."},
        503: {"description": "Overloaded: retry after the Retry-After header's seconds."},
    },
    response_model=LiteLLMIngestResponse,
)
async def post_litellm(
    request: Request,
    settings: SettingsDep,
    submitter: SubmitterDep,
    body: Annotated[LiteLLMBody, Depends(read_litellm_body)],
    router_name: Annotated[
        str | None,
        Query(
            alias="router",
            min_length=1,
            max_length=200,
            description="Router name of these decisions; default `litellm_router_name`.",
        ),
    ] = None,
) -> Response:
    """Store LiteLLM's logged calls: successes as decisions, failures as counted failed calls."""
    name = router_name or settings.litellm_router_name
    config = adapter.AdapterConfig(
        router=name,
        group_tiers=settings.litellm_group_tiers,
        segment_key=settings.segment_key,
        segment_key_source=settings.litellm_segment_key_source,
        sender=body.sender,
    )
    mapped = await run_in_threadpool(
        adapter.map_batch, body.parsed.items, config, unparsable=body.parsed.unparsable
    )

    results: list[LiteLLMItemResult | None] = [None] * len(mapped)
    errors: list[ItemError] = []
    decisions: list[adapter.MappedDecision] = []
    metrics: ApiMetrics = request.app.state.metrics
    for item in mapped:
        if isinstance(item, adapter.MappedDecision):
            decisions.append(item)
        elif isinstance(item, adapter.FailedCall):
            results[item.index] = LiteLLMItemResult(
                index=item.index,
                status="failed_call",
                request_id=item.request_id,
                router=name,
                trace_id=item.trace_id,
                failover_to=item.failover_to,
            )
        elif isinstance(item, adapter.Skipped):
            results[item.index] = LiteLLMItemResult(
                index=item.index,
                status="skipped",
                request_id=item.request_id,
                router=name,
                reason=f"call_type {item.call_type} is not a chat routing decision",
            )
        else:
            errors.append(
                ItemError(index=item.index, loc=list(item.loc), msg=item.msg, type=item.type)
            )
            results[item.index] = LiteLLMItemResult(
                index=item.index, status="invalid", request_id=item.request_id, router=name
            )

    adapter_errors = list(errors)
    if decisions:
        # The one submit path (submit.py): capacity (503 + Retry-After, which LiteLLM
        # retries when max_retries is set), group commit and the writer lock.
        outcome = await submitter.submit(ParsedBody(items=[d.decision for d in decisions]))
        # The submitter numbers the decisions it was given; map back to the body's records.
        for result in outcome.results:
            source = decisions[result.index]
            results[source.index] = LiteLLMItemResult(
                **{**asdict(result), "index": source.index},
                trace_id=source.decision.get("litellm", {}).get("trace_id"),
            )
        for error in outcome.errors:
            errors.append(
                ItemError(
                    index=decisions[error.index].index,
                    loc=_source_loc(error.loc),
                    msg=error.msg,
                    type=error.type,
                )
            )

    # Counted only now: a 503 above makes LiteLLM resend, and nothing may count twice.
    # The submitter counted the decisions' own errors; the records that never became one
    # are counted here.
    _litellm_metrics(metrics).count(mapped, router=name, groups=settings.litellm_group_tiers)
    metrics.record_item_errors(adapter_errors)
    errors.sort(key=lambda e: e.index)
    final = [r for r in results if r is not None]

    def count(state: str) -> int:
        return sum(1 for r in final if r.status == state)

    response = LiteLLMIngestResponse(
        stored=count("stored"),
        duplicates=count("duplicate"),
        invalid=count("invalid"),
        failed_calls=count("failed_call"),
        skipped=count("skipped"),
        results=final,
        detail=errors,
    )
    if errors:
        log.warning(
            "litellm ingest: %d of %d records invalid (router %s), first: %s",
            response.invalid,
            len(final),
            name,
            json.dumps([e.model_dump(mode="json") for e in errors[:3]]),
        )
    usable = len(final) - response.invalid
    # 422 as a literal: Starlette renamed its constant (UNPROCESSABLE_ENTITY → _CONTENT).
    code = status.HTTP_202_ACCEPTED if usable else 422
    # ASCII-escaped: a record's ids may hold lone surrogates, which UTF-8 cannot carry.
    return Response(
        json.dumps(response.model_dump(mode="json"), ensure_ascii=True),
        status_code=code,
        media_type="application/json",
    )
