"""Routes: human feedback, the blind review queue and labels, judge–human agreement."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from shadoweval.auth.models import Principal
from shadoweval.db import SessionDep
from shadoweval.deps import IngestScope, OperateScope, ReadScope, SettingsDep, Since, Until
from shadoweval.feedback import agreement, review, service
from shadoweval.feedback.models import (
    AgreementReport,
    FeedbackIn,
    FeedbackResponse,
    ReviewLabelIn,
    ReviewLabelOut,
    ReviewQueue,
)
from shadoweval.feedback.queue import ReviewMode
from shadoweval.ingest.body import read_body_within
from shadoweval.ingest.parsing import ParsedBody, check_media_type, parse_items
from shadoweval.ingest.submit import SubmitterDep

router = APIRouter(tags=["feedback"])


def _inline_defs(schema: Any, defs: dict[str, Any]) -> Any:
    """The schema with its local `$defs` references inlined, for use outside components."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline_defs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_defs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_defs(v, defs) for v in schema]
    return schema


_FEEDBACK_SCHEMA = FeedbackIn.model_json_schema()
_FEEDBACK_REF = _inline_defs(_FEEDBACK_SCHEMA, _FEEDBACK_SCHEMA.get("$defs", {}))
_FEEDBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One feedback object, a JSON array of them, or NDJSON.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [_FEEDBACK_REF, {"type": "array", "items": _FEEDBACK_REF}]}
            },
            "application/x-ndjson": {"schema": _FEEDBACK_REF},
        },
    }
}


async def read_feedback_body(request: Request, settings: SettingsDep) -> ParsedBody:
    media_type = check_media_type(request.headers.get("content-type"))
    body = await read_body_within(request, settings.ingest_max_bytes)
    return await run_in_threadpool(
        parse_items, body, media_type, max_items=settings.ingest_max_items
    )


@router.post(
    "/v1/feedback",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[IngestScope],
    openapi_extra=_FEEDBACK_BODY,
    responses={
        202: {"model": FeedbackResponse, "description": "Every item stored or a duplicate."},
        422: {"model": FeedbackResponse, "description": "Some items invalid; valid ones stored."},
        503: {"description": "Overloaded: retry after the Retry-After header's seconds."},
    },
    response_model=FeedbackResponse,
)
async def post_feedback(
    session: SessionDep,
    settings: SettingsDep,
    submitter: SubmitterDep,
    parsed: Annotated[ParsedBody, Depends(read_feedback_body)],
) -> JSONResponse:
    """Thumbs up/down or a 1–5 grade on a decision's served answer, from its end user or a
    reviewer. Idempotent on (router, request_id, source, reviewer): the first is kept.
    Feedback on a decision not (yet) logged is stored with `decision_known: false`.
    Written within ingest's capacity (503 with Retry-After when it is full)."""
    outcome = await submitter.write_other(
        functools.partial(
            service.ingest_feedback, session=session, settings=settings, parsed=parsed
        )
    )
    code = 422 if outcome.detail else status.HTTP_202_ACCEPTED
    return JSONResponse(outcome.model_dump(mode="json"), status_code=code)


@router.get(
    "/v1/review/queue",
    responses={403: {"description": "`reviewer` is not the calling key's name or prefix."}},
)
def review_queue(
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, OperateScope],
    reviewer: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Defaults to the calling key's name (its prefix when unnamed); "
            "if given, it must be one of the two.",
        ),
    ] = None,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    mode: Annotated[
        ReviewMode,
        Query(
            description="`stratified`: disagreements, inconsistent pairs and every segment "
            "first, to find where the judge errs. `uniform`: only the pairs of the uniform "
            "review sample (SHADOWEVAL_REVIEW_SAMPLE_PROBABILITY), lowest draw first: the "
            "known-probability sample the human-corrected (PPI) harm rate reads; no other "
            "mode serves its pairs. `escalated`: the verdicts the judge is least sure of "
            "(orders disagree, or a score margin below SHADOWEVAL_REVIEW_ESCALATION_MIN_MARGIN), "
            "at most SHADOWEVAL_REVIEW_ESCALATION_DAILY_BUDGET per decision day, newest day "
            "first. Each label records the mode that served it; only `uniform` labels enter "
            "an estimate."
        ),
    ] = "stratified",
) -> ReviewQueue:
    """Judged pairs for the calling key's reviewer to label blind: tiers and models hidden,
    A/B order random per pair. `mode=stratified` (default) represents disagreements,
    inconsistent pairs and every segment; `mode=uniform` serves the uniform review sample
    in draw order; `mode=escalated` the judge's escalated verdicts within the daily budget.
    Either way, label with POST /v1/review/labels."""
    who = review.reviewer_for(session, principal, reviewer)
    return review.review_queue(
        session=session,
        reviewer=who,
        router=router_name,
        limit=limit,
        mode=mode,
        review_probability=settings.review_sample_probability,
        escalation_min_margin=settings.review_escalation_min_margin,
        escalation_daily_budget=settings.review_escalation_daily_budget,
    )


@router.post(
    "/v1/review/labels",
    responses={
        201: {"model": ReviewLabelOut, "description": "Stored."},
        200: {"model": ReviewLabelOut, "description": "Already labelled: the first is kept."},
        403: {"description": "`reviewer` is not the calling key's name or prefix."},
        404: {"description": "No review item with this token for this reviewer."},
    },
    response_model=ReviewLabelOut,
)
def post_review_label(
    session: SessionDep, principal: Annotated[Principal, OperateScope], label: ReviewLabelIn
) -> JSONResponse:
    """The calling key's reviewer's choice on a queued pair: A, B, tie or both_bad."""
    who = review.reviewer_for(session, principal, label.reviewer)
    out, created = review.store_label(session=session, label=label, reviewer=who)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/v1/judge/agreement", dependencies=[ReadScope])
def judge_agreement(
    session: SessionDep,
    settings: SettingsDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    since: Since = None,
    until: Until = None,
) -> AgreementReport:
    """Cohen's κ (95 % interval) between judge and human labels, both reduced to "the
    served answer was acceptable", per judge model and prompt hash; and, under
    `escalation`, the agreement (95 % Wilson interval) and κ on the verdicts the judge keeps
    vs those it escalates, from the uniform review sample, with the escalation queue's own
    labels apart."""
    groups = agreement.judge_agreement(
        session=session,
        router=router_name,
        since=since,
        until=until,
        escalation_min_margin=settings.review_escalation_min_margin,
    )
    return AgreementReport(items=groups)
