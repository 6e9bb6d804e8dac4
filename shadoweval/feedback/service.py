"""Feedback ingest (end users' thumbs and grades on logged decisions) and the pair texts a
reviewer or a judge sees. The review queue is `review.py`, agreement `agreement.py`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, tuple_
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import dialect_insert, utcnow
from shadoweval.feedback import labels as reductions
from shadoweval.feedback.models import (
    Feedback,
    FeedbackIn,
    FeedbackItemResult,
    FeedbackResponse,
)
from shadoweval.ingest import storable
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge import answers as judge_answers
from shadoweval.judge.models import Verdict
from shadoweval.shadow.models import ShadowRun
from shadoweval.sql import table_of

FEEDBACK = table_of(Feedback)
DECISION = table_of(Decision)
RUN = table_of(ShadowRun)


# --- feedback ------------------------------------------------------------------------------


def ingest_feedback(
    *, session: Session, settings: Settings, parsed: ParsedBody
) -> FeedbackResponse:
    """Store every valid item once per (router, request_id, source, reviewer); report per item.

    Invalid items never block valid ones (the route answers 422 listing them), and a
    resend stores nothing twice: the first feedback of a key is kept.
    """
    now = utcnow()
    results: list[FeedbackItemResult] = []
    detail: list[dict[str, Any]] = []
    valid: list[tuple[int, FeedbackIn]] = []
    for index, raw in enumerate(parsed.items):
        if index in parsed.unparsable:
            detail.append(
                {"index": index, "loc": [], "msg": parsed.unparsable[index], "type": "json_invalid"}
            )
            results.append(FeedbackItemResult(index=index, status="invalid"))
            continue
        try:
            item = FeedbackIn.model_validate(raw)
        except ValidationError as exc:
            detail.extend(
                {
                    "index": index,
                    # A field name may be a lone surrogate, which no JSON answer carries.
                    "loc": [storable.printable(part) for part in e["loc"]],
                    "msg": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors(include_url=False, include_input=False)
            )
            results.append(FeedbackItemResult(index=index, status="invalid"))
            continue
        # The rule of decisions (ingest/storable.py): NUL or a lone surrogate is this item's 422.
        problem = storable.first_problem(raw) if parsed.suspect else None
        if problem is not None:
            loc, msg, kind = problem
            detail.append({"index": index, "loc": loc, "msg": msg, "type": kind})
            results.append(FeedbackItemResult(index=index, status="invalid"))
            continue
        valid.append((index, item))
        results.append(FeedbackItemResult(index=index, status="pending"))

    keys = {(item.router, item.request_id) for _, item in valid}
    known = _known_decisions(session, keys)
    for index, item in valid:
        reviewer = item.reviewer or ""
        value = item.numeric_value
        row_known = (item.router, item.request_id) in known
        inserted = session.execute(
            dialect_insert(session)(FEEDBACK)
            .values(
                router=item.router,
                request_id=item.request_id,
                kind=item.kind.value,
                value=value,
                acceptable=reductions.feedback_acceptable(
                    item.kind, value, min_grade=settings.feedback_acceptable_min_grade
                ),
                source=item.source.value,
                reviewer=reviewer,
                comment=item.comment,
                decision_known=row_known,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["router", "request_id", "source", "reviewer"])
            .returning(FEEDBACK.c.id)
        ).first()
        if inserted is not None:
            results[index] = FeedbackItemResult(
                index=index, status="stored", id=int(inserted[0]), decision_known=row_known
            )
            continue
        existing = session.execute(
            select(FEEDBACK.c.id).where(
                FEEDBACK.c.router == item.router,
                FEEDBACK.c.request_id == item.request_id,
                FEEDBACK.c.source == item.source.value,
                FEEDBACK.c.reviewer == reviewer,
            )
        ).scalar_one()
        results[index] = FeedbackItemResult(
            index=index, status="duplicate", id=int(existing), decision_known=row_known
        )
    session.commit()
    return FeedbackResponse(
        stored=sum(r.status == "stored" for r in results),
        duplicates=sum(r.status == "duplicate" for r in results),
        invalid=sum(r.status == "invalid" for r in results),
        results=results,
        detail=detail,
    )


def _known_decisions(session: Session, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    found: set[tuple[str, str]] = set()
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        rows = session.execute(
            select(DECISION.c.router, DECISION.c.request_id).where(
                tuple_(DECISION.c.router, DECISION.c.request_id).in_(chunk)
            )
        )
        found.update((r, q) for r, q in rows)
    return found


# --- the pair as a reviewer or a judge sees it ----------------------------------------------


@dataclass
class PairTexts:
    messages: list[dict[str, Any]]
    system: Any
    cheaper_answer: str | None
    stronger_answer: str | None


def load_pairs(session: Session, verdicts: list[Verdict]) -> dict[int, PairTexts]:
    """Request and both answers per verdict id: the routed answer (or its re-run) and the
    shadow answer, placed as cheaper/stronger by the pair's direction."""
    decision_ids = [v.decision_id for v in verdicts]
    if not decision_ids:
        return {}
    payloads = {
        p.decision_id: p
        for p in session.scalars(
            select(DecisionPayload).where(
                DecisionPayload.decision_id.in_(decision_ids)  # type: ignore[attr-defined]
            )
        )
    }
    runs: dict[int, dict[str, judge_answers.RunAnswer]] = defaultdict(dict)
    for decision_id, kind, text in session.execute(
        select(RUN.c.decision_id, RUN.c.kind, RUN.c.response_text).where(
            RUN.c.decision_id.in_(decision_ids)
        )
    ):
        runs[decision_id][kind] = judge_answers.RunAnswer(text)
    pairs = {}
    for verdict in verdicts:
        assert verdict.id is not None
        payload = payloads.get(verdict.decision_id)
        request = (payload.request if payload else None) or {}
        answers = judge_answers.assemble(
            verdict,
            logged_response=payload.response if payload else None,
            runs=runs.get(verdict.decision_id, {}),
        )
        pairs[verdict.id] = PairTexts(
            messages=list(request.get("messages") or []),
            system=request.get("system"),
            cheaper_answer=answers.cheaper_answer,
            stronger_answer=answers.stronger_answer,
        )
    return pairs
