"""Feedback ingest, the blind review queue, reviewer labels and judge–human agreement."""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, and_, select, tuple_
from sqlmodel import Session

from shadoweval.auth.models import ApiKey, Principal
from shadoweval.config import Settings
from shadoweval.db import dialect_insert, utcnow
from shadoweval.exceptions import NotFound, PermissionDenied
from shadoweval.feedback import labels as reductions
from shadoweval.feedback.models import (
    AgreementGroup,
    Feedback,
    FeedbackIn,
    FeedbackItemResult,
    FeedbackResponse,
    PresentedOrder,
    ReviewAnswer,
    ReviewAssignment,
    ReviewItem,
    ReviewLabel,
    ReviewLabelIn,
    ReviewLabelOut,
    ReviewQueue,
)
from shadoweval.feedback.queue import Candidate, ReviewMode, stratified_order, uniform_sample
from shadoweval.ingest import storable
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge import answers as judge_answers
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.shadow.models import ShadowRun
from shadoweval.stats.agreement import cohen_kappa

API_KEY = cast(Table, ApiKey.__table__)  # type: ignore[attr-defined]
FEEDBACK = cast(Table, Feedback.__table__)  # type: ignore[attr-defined]
ASSIGNMENT = cast(Table, ReviewAssignment.__table__)  # type: ignore[attr-defined]
LABEL = cast(Table, ReviewLabel.__table__)  # type: ignore[attr-defined]
VERDICT = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
DECISION = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
RUN = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]
# The queue stratifies over this many of the newest unlabelled judged pairs: enough for
# every segment and the rare disagreements, bounded so a large history stays cheap.
QUEUE_CANDIDATES = 2000
QUEUE_RARE_CANDIDATES = 500


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


# --- review queue and labels ----------------------------------------------------------------


def reviewer_for(session: Session, principal: Principal, requested: str | None) -> str:
    """The reviewer a call acts as: the key's own identity, never someone else's.

    Labels are the ground truth the judge is measured against, so a key must not be able
    to label as another person. A reviewer is the key's name, or its prefix when the key
    is unnamed; an explicit `reviewer` is accepted only if it is that key's name or prefix,
    and either way the name is what is stored, so one key is one reviewer.
    """
    name = session.execute(
        select(API_KEY.c.name).where(API_KEY.c.prefix == principal.prefix)
    ).scalar()
    own = [n for n in (name or "", principal.prefix) if n]
    if requested is None:
        return own[0]
    if requested not in own:
        raise PermissionDenied(
            f"API key {principal.prefix} cannot act as reviewer {requested!r}: a key reviews "
            f"as its own name or prefix ({' or '.join(repr(n) for n in own)})",
            field="reviewer",
        )
    return own[0]


def review_queue(
    *,
    session: Session,
    reviewer: str,
    router: str | None = None,
    limit: int = 20,
    rng: random.Random | None = None,
    mode: ReviewMode = "stratified",
    review_probability: float = 0.05,
) -> ReviewQueue:
    """Judged pairs this reviewer has not labelled, blind.

    `stratified` (see queue.py) puts disagreements, inconsistent pairs and every segment
    first and shuffles the page; `uniform` serves only the pairs of the uniform review
    sample drawn with `review_probability`, lowest draw first (the sample PPI reads).
    Each pair gets one assignment per reviewer, whichever mode served it: an opaque random
    token and an order drawn at random once, so serving the pair again shows the same order.
    """
    rng = rng or secrets.SystemRandom()
    labelled = select(LABEL.c.verdict_id).where(LABEL.c.reviewer == reviewer)
    conditions: list[Any] = [VERDICT.c.status == VerdictStatus.DONE, VERDICT.c.id.not_in(labelled)]
    if router is not None:
        conditions.append(VERDICT.c.router == router)
    if mode == "uniform":
        chosen = _uniform_pairs(session, conditions, limit, review_probability)
    else:
        chosen = _stratified_pairs(session, reviewer, conditions, limit, rng)

    assignments = _assign(session, reviewer, [v.id for v, _ in chosen if v.id is not None], rng)
    items = []
    for verdict, pair in chosen:
        assert verdict.id is not None
        assert pair.cheaper_answer is not None
        assert pair.stronger_answer is not None
        token, order = assignments[verdict.id]
        first, second = (
            (pair.cheaper_answer, pair.stronger_answer)
            if order == PresentedOrder.CHEAPER_FIRST
            else (pair.stronger_answer, pair.cheaper_answer)
        )
        items.append(
            ReviewItem(
                token=token,
                router=verdict.router,
                segment=verdict.segment_value,
                ts=verdict.ts,
                system=pair.system,
                messages=pair.messages,
                answers=[
                    ReviewAnswer(position="A", text=first),
                    ReviewAnswer(position="B", text=second),
                ],
            )
        )
    return ReviewQueue(items=items)


def _stratified_pairs(
    session: Session, reviewer: str, conditions: list[Any], limit: int, rng: random.Random
) -> list[tuple[Verdict, PairTexts]]:
    """Up to `limit` pairs in stratified order (queue.stratified_order), then shuffled."""
    with_feedback = select(VERDICT.c.id).join(
        FEEDBACK,
        and_(FEEDBACK.c.router == VERDICT.c.router, FEEDBACK.c.request_id == VERDICT.c.request_id),
    )
    with_labels = select(LABEL.c.verdict_id).where(LABEL.c.reviewer != reviewer)
    # The newest pairs, plus the newest of the rare kinds, however old the bulk has grown.
    pools = (
        (QUEUE_CANDIDATES, ()),
        (QUEUE_RARE_CANDIDATES, (VERDICT.c.outcome == Outcome.INCONSISTENT,)),
        (QUEUE_RARE_CANDIDATES, (VERDICT.c.id.in_(with_feedback.union(with_labels)),)),
    )
    verdicts: dict[int, Verdict] = {}
    for size, extra in pools:
        query = select(Verdict).where(*conditions, *extra).order_by(VERDICT.c.id.desc()).limit(size)
        verdicts.update((v.id, v) for v in session.scalars(query) if v.id is not None)
    human = _human_labels(session, list(verdicts.values()), exclude_reviewer=reviewer)
    candidates = []
    for verdict_id, verdict in verdicts.items():
        judge = reductions.judge_served_acceptable(verdict.direction, verdict.outcome or "")
        if any(label != judge for label in human.get(verdict_id, ())):
            category = "disagreement"
        elif verdict.outcome == Outcome.INCONSISTENT:
            category = "inconsistent"
        else:
            category = "routine"
        candidates.append(Candidate(verdict_id, verdict.segment_value, category))

    ordered = stratified_order(candidates, rng)
    chosen = _with_answers(session, [verdicts[c.verdict_id] for c in ordered], limit)
    rng.shuffle(chosen)
    return chosen


def _uniform_pairs(
    session: Session, conditions: list[Any], limit: int, probability: float
) -> list[tuple[Verdict, PairTexts]]:
    """Up to `limit` pairs of the uniform review sample (queue.uniform_sample), lowest
    draw first. Every judged pair's draw is computed (a hash per pair, no SQL function
    for it), but only the sampled pairs are kept and loaded."""
    rows = session.execute(
        select(VERDICT.c.id, VERDICT.c.router, VERDICT.c.request_id, VERDICT.c.segment_value)
        .where(*conditions)
        .execution_options(yield_per=5000)
    )
    sampled = uniform_sample(((int(i), r, q, s) for i, r, q, s in rows), probability)
    step = max(limit, 1) * 2
    chosen: list[tuple[Verdict, PairTexts]] = []
    for start in range(0, len(sampled), step):
        if len(chosen) >= limit:
            break
        ids = [c.verdict_id for c in sampled[start : start + step]]
        loaded = {v.id: v for v in session.scalars(select(Verdict).where(VERDICT.c.id.in_(ids)))}
        page = [loaded[i] for i in ids if i in loaded]
        chosen.extend(_with_answers(session, page, limit - len(chosen)))
    return chosen


def _with_answers(
    session: Session, ordered: list[Verdict], limit: int
) -> list[tuple[Verdict, PairTexts]]:
    """The first `limit` verdicts of `ordered` with both answers to show, in that order:
    pairs whose payload was purged have none and are skipped, page by page."""
    chosen: list[tuple[Verdict, PairTexts]] = []
    step = max(limit, 1) * 2
    for start in range(0, len(ordered), step):
        if len(chosen) >= limit:
            break
        page = ordered[start : start + step]
        texts = load_pairs(session, page)
        for verdict in page:
            assert verdict.id is not None
            pair = texts[verdict.id]
            if pair.cheaper_answer and pair.stronger_answer and len(chosen) < limit:
                chosen.append((verdict, pair))
    return chosen


def _human_labels(
    session: Session, verdicts: list[Verdict], *, exclude_reviewer: str | None = None
) -> dict[int, list[int]]:
    """Served-acceptable bits humans gave each verdict's pair: labels and feedback."""
    found: dict[int, list[int]] = defaultdict(list)
    if not verdicts:
        return found
    by_id = {v.id: v for v in verdicts if v.id is not None}
    for start in range(0, len(verdicts), 500):
        ids = [v.id for v in verdicts[start : start + 500]]
        query = select(LABEL.c.verdict_id, LABEL.c.served_acceptable).where(
            LABEL.c.verdict_id.in_(ids)
        )
        if exclude_reviewer is not None:
            query = query.where(LABEL.c.reviewer != exclude_reviewer)
        for verdict_id, acceptable in session.execute(query):
            found[verdict_id].append(int(acceptable))
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for verdict_id, verdict in by_id.items():
        assert verdict_id is not None
        by_key[(verdict.router, verdict.request_id)].append(verdict_id)
    keys = sorted(by_key)
    for start in range(0, len(keys), 500):
        rows = session.execute(
            select(FEEDBACK.c.router, FEEDBACK.c.request_id, FEEDBACK.c.acceptable).where(
                tuple_(FEEDBACK.c.router, FEEDBACK.c.request_id).in_(keys[start : start + 500])
            )
        )
        for router, request_id, acceptable in rows:
            for verdict_id in by_key[(router, request_id)]:
                found[verdict_id].append(int(acceptable))
    return found


def _assign(
    session: Session, reviewer: str, verdict_ids: list[int], rng: random.Random
) -> dict[int, tuple[str, str]]:
    """Token and order per verdict for this reviewer, created once (a concurrent fetch by
    the same reviewer keeps whichever assignment was committed first)."""
    if not verdict_ids:
        return {}
    now = utcnow()
    for verdict_id in verdict_ids:
        order = rng.choice([PresentedOrder.CHEAPER_FIRST, PresentedOrder.STRONGER_FIRST])
        session.execute(
            dialect_insert(session)(ASSIGNMENT)
            .values(
                token=secrets.token_urlsafe(24),
                verdict_id=verdict_id,
                reviewer=reviewer,
                presented_order=order.value,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["verdict_id", "reviewer"])
        )
    rows = session.execute(
        select(ASSIGNMENT.c.verdict_id, ASSIGNMENT.c.token, ASSIGNMENT.c.presented_order).where(
            ASSIGNMENT.c.reviewer == reviewer, ASSIGNMENT.c.verdict_id.in_(verdict_ids)
        )
    )
    assigned = {int(v): (t, o) for v, t, o in rows}
    session.commit()
    return assigned


def store_label(
    *, session: Session, label: ReviewLabelIn, reviewer: str
) -> tuple[ReviewLabelOut, bool]:
    """Store `reviewer`'s blind choice as the tier it picked; (label, True when new).

    `reviewer` comes from reviewer_for (the caller's key), not from the body as sent."""
    assignment = session.execute(
        select(ASSIGNMENT).where(
            ASSIGNMENT.c.token == label.token, ASSIGNMENT.c.reviewer == reviewer
        )
    ).first()
    if assignment is None:
        raise NotFound(
            f"no review item with this token for reviewer {reviewer!r}; fetch "
            "GET /v1/review/queue as this reviewer first",
            field="token",
        )
    verdict = session.get(Verdict, assignment.verdict_id)
    if verdict is None:  # deleted between fetch and label
        raise NotFound("the judged pair behind this token no longer exists", field="token")
    value = reductions.derandomise(label.choice, assignment.presented_order)
    now = utcnow()
    inserted = session.execute(
        dialect_insert(session)(LABEL)
        .values(
            verdict_id=assignment.verdict_id,
            reviewer=reviewer,
            choice=label.choice.value,
            presented_order=assignment.presented_order,
            label=value.value,
            served_acceptable=reductions.review_served_acceptable(value, verdict.direction),
            comment=label.comment,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["verdict_id", "reviewer"])
        .returning(LABEL.c.id)
    ).first()
    session.commit()
    stored = session.execute(
        select(LABEL.c.choice, LABEL.c.created_at).where(
            LABEL.c.verdict_id == assignment.verdict_id, LABEL.c.reviewer == reviewer
        )
    ).one()
    out = ReviewLabelOut(
        token=label.token,
        reviewer=reviewer,
        choice=stored.choice,
        status="stored" if inserted is not None else "duplicate",
        created_at=stored.created_at,
    )
    return out, inserted is not None


# --- agreement ------------------------------------------------------------------------------


@dataclass
class _Group:
    judge_model: str
    prompt_hash: str
    judge: list[int] = field(default_factory=list)
    human: list[int] = field(default_factory=list)
    verdict_ids: set[int] = field(default_factory=set)
    from_labels: int = 0
    from_feedback: int = 0


def judge_agreement(
    *,
    session: Session,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AgreementGroup]:
    """Cohen's κ between the judge and humans per judge (model + prompt hash), on "the
    served answer was acceptable". One observation per (judged pair, human label): a pair
    labelled by two reviewers and thumbed by its user counts three times."""
    conditions: list[Any] = [VERDICT.c.status == VerdictStatus.DONE]
    if router is not None:
        conditions.append(VERDICT.c.router == router)
    if since is not None:
        conditions.append(VERDICT.c.ts >= since)
    if until is not None:
        conditions.append(VERDICT.c.ts < until)
    columns = (
        VERDICT.c.id,
        VERDICT.c.judge_key,
        VERDICT.c.judge_model,
        VERDICT.c.prompt_hash,
        VERDICT.c.direction,
        VERDICT.c.outcome,
    )
    from_labels = session.execute(
        select(*columns, LABEL.c.served_acceptable)
        .join(LABEL, LABEL.c.verdict_id == VERDICT.c.id)
        .where(*conditions)
    ).all()
    from_feedback = session.execute(
        select(*columns, FEEDBACK.c.acceptable)
        .join(
            FEEDBACK,
            and_(
                FEEDBACK.c.router == VERDICT.c.router,
                FEEDBACK.c.request_id == VERDICT.c.request_id,
            ),
        )
        .where(*conditions)
    ).all()
    groups: dict[str, _Group] = {}
    for source, rows in (("labels", from_labels), ("feedback", from_feedback)):
        for verdict_id, judge_key, judge_model, prompt_hash, direction, outcome, human in rows:
            group = groups.setdefault(judge_key, _Group(judge_model, prompt_hash))
            group.judge.append(reductions.judge_served_acceptable(direction, outcome or ""))
            group.human.append(int(human))
            group.verdict_ids.add(int(verdict_id))
            if source == "labels":
                group.from_labels += 1
            else:
                group.from_feedback += 1
    return [_agreement_group(key, group) for key, group in sorted(groups.items())]


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN → null


def _agreement_group(judge_key: str, group: _Group) -> AgreementGroup:
    kappa = cohen_kappa(group.judge, group.human)
    n = kappa.n
    return AgreementGroup(
        judge_model=group.judge_model,
        prompt_hash=group.prompt_hash,
        judge_key=judge_key,
        n=n,
        verdicts=len(group.verdict_ids),
        from_review_labels=group.from_labels,
        from_feedback=group.from_feedback,
        observed_agreement=_finite(kappa.observed_agreement),
        expected_agreement=_finite(kappa.expected_agreement),
        kappa=_finite(kappa.kappa),
        kappa_std_error=_finite(kappa.std_error),
        kappa_ci_low=_finite(kappa.ci_low),
        kappa_ci_high=_finite(kappa.ci_high),
        judge_acceptable_rate=sum(group.judge) / n if n else None,
        human_acceptable_rate=sum(group.human) / n if n else None,
    )


# --- deletion ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackDeletion:
    feedback: int
    review_assignments: int
    review_labels: int


def delete_feedback_for(
    session: Session,
    router: str,
    request_ids: list[str] | None = None,
    segment_value: str | None = None,
) -> FeedbackDeletion:
    """Delete the human feedback and review rows of a router's decisions, in the caller's
    transaction (no commit); call it BEFORE the decisions and verdicts are deleted.

    Feedback is linked by (router, request_id), not by a foreign key, so deleting decisions
    alone would leave it behind. With `segment_value`, only feedback on decisions of that
    segment goes (feedback on a decision never logged has no segment and stays); with
    neither `request_ids` nor `segment_value`, all of the router's feedback goes, logged
    or not. Review rows go explicitly too, not by ON DELETE CASCADE alone, so nothing
    depends on the database enforcing foreign keys.
    """
    d = DECISION.c
    chosen = [d.router == router]
    if request_ids is not None:
        chosen.append(d.request_id.in_(request_ids))
    if segment_value is not None:
        chosen.append(d.segment_value == segment_value)
    feedback = FEEDBACK.delete().where(FEEDBACK.c.router == router)
    if segment_value is not None:
        feedback = feedback.where(FEEDBACK.c.request_id.in_(select(d.request_id).where(*chosen)))
    elif request_ids is not None:
        feedback = feedback.where(FEEDBACK.c.request_id.in_(request_ids))
    verdict_ids = select(VERDICT.c.id).where(VERDICT.c.decision_id.in_(select(d.id).where(*chosen)))
    labels: Any = session.execute(LABEL.delete().where(LABEL.c.verdict_id.in_(verdict_ids)))
    assignments: Any = session.execute(
        ASSIGNMENT.delete().where(ASSIGNMENT.c.verdict_id.in_(verdict_ids))
    )
    deleted: Any = session.execute(feedback)
    return FeedbackDeletion(
        feedback=int(deleted.rowcount or 0),
        review_assignments=int(assignments.rowcount or 0),
        review_labels=int(labels.rowcount or 0),
    )
