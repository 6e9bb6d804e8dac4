"""The blind review queue (stratified, uniform for PPI, escalated from the judge) and the
labels reviewers store."""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, select, tuple_
from sqlmodel import Session

from shadoweval.auth.models import ApiKey, Principal
from shadoweval.db import dialect_insert, utcnow
from shadoweval.exceptions import NotFound, PermissionDenied
from shadoweval.feedback import labels as reductions
from shadoweval.feedback.models import (
    Feedback,
    PresentedOrder,
    ReviewAnswer,
    ReviewAssignment,
    ReviewItem,
    ReviewLabel,
    ReviewLabelIn,
    ReviewLabelOut,
    ReviewQueue,
    ReviewQueueMode,
)
from shadoweval.feedback.queue import (
    Candidate,
    EscalationCandidate,
    ReviewMode,
    escalated_within_budget,
    in_review_sample,
    review_draw,
    stratified_order,
    uniform_sample,
)
from shadoweval.feedback.service import PairTexts, load_pairs
from shadoweval.judge import confidence
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.sql import table_of

API_KEY = table_of(ApiKey)
FEEDBACK = table_of(Feedback)
ASSIGNMENT = table_of(ReviewAssignment)
LABEL = table_of(ReviewLabel)
VERDICT = table_of(Verdict)
# The queue stratifies over this many of the newest unlabelled judged pairs: enough for
# every segment and the rare disagreements, bounded so a large history stays cheap.
QUEUE_CANDIDATES = 2000
QUEUE_RARE_CANDIDATES = 500


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
    escalation_min_margin: float = 1.0,
    escalation_daily_budget: int = 20,
) -> ReviewQueue:
    """Judged pairs this reviewer has not labelled, blind.

    `stratified` (see queue.py) puts disagreements, inconsistent pairs and every segment
    first and shuffles the page; `uniform` serves only the pairs of the uniform review
    sample drawn with `review_probability`, lowest draw first (the sample PPI reads);
    `escalated` the verdicts the judge escalates (margin below `escalation_min_margin`
    points, or inconsistent), at most `escalation_daily_budget` per decision day, newest
    day first. Pairs of the uniform sample are served by the uniform queue only.
    Each pair gets one assignment per reviewer: an opaque random token and an order drawn
    at random once, so serving the pair again shows the same order; the assignment records
    the mode that served it last, and a label the mode of its assignment.
    """
    rng = rng or secrets.SystemRandom()
    labelled = select(LABEL.c.verdict_id).where(LABEL.c.reviewer == reviewer)
    conditions: list[Any] = [VERDICT.c.status == VerdictStatus.DONE, VERDICT.c.id.not_in(labelled)]
    if router is not None:
        conditions.append(VERDICT.c.router == router)
    if mode == "uniform":
        chosen = _uniform_pairs(session, conditions, limit, review_probability)
    elif mode == "escalated":
        chosen = _escalated_pairs(
            session,
            reviewer=reviewer,
            router=router,
            limit=limit,
            review_probability=review_probability,
            min_margin=escalation_min_margin,
            daily_budget=escalation_daily_budget,
        )
    else:
        chosen = _stratified_pairs(session, reviewer, conditions, limit, rng, review_probability)

    assignments = _assign(
        session, reviewer, [v.id for v, _ in chosen if v.id is not None], rng, ReviewQueueMode(mode)
    )
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
    session: Session,
    reviewer: str,
    conditions: list[Any],
    limit: int,
    rng: random.Random,
    review_probability: float,
) -> list[tuple[Verdict, PairTexts]]:
    """Up to `limit` pairs outside the uniform review sample in stratified order
    (queue.stratified_order), then shuffled."""
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
        if in_review_sample(verdict.router, verdict.request_id, review_probability):
            continue  # the uniform queue's, so that its labelled part stays a random one
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


def escalation_flag(min_margin: float) -> ColumnElement[bool]:
    """SQL for judge.confidence.escalates on verdict rows (a prefilter: callers recheck)."""
    v = VERDICT.c
    margin = case((v.strong_needed == 1, v.score_delta), else_=-v.score_delta)
    return or_(
        v.outcome == Outcome.INCONSISTENT,
        v.strong_needed.is_(None),
        v.score_delta.is_(None),
        margin < min_margin,
    )


def _utc_day(ts: datetime) -> date:
    """The decision day of a verdict's ts (SQLite hands back naive UTC)."""
    return (ts.astimezone(UTC) if ts.tzinfo else ts).date()


def escalated_by_day(
    session: Session, *, review_probability: float, min_margin: float, daily_budget: int
) -> Iterator[list[EscalationCandidate]]:
    """Per decision day, newest first: the verdicts judge escalation sends to humans that
    day (queue.escalated_within_budget), over every router, since the budget is the
    deployment's. Pairs of the uniform review sample are left to the uniform queue and use
    none of the budget. A day at a time (a range on ix_verdict_ts), so a reviewer who keeps
    up costs the queue the newest days only."""
    if daily_budget <= 0:
        return
    v = VERDICT.c
    columns = (v.id, v.router, v.request_id, v.status, v.outcome, v.strong_needed, v.score_delta)
    before: datetime | None = None
    while True:
        # Neither query filters on status in SQL: with it, SQLite's planner picks the
        # status index and sorts every done verdict instead of walking ix_verdict_ts.
        latest = select(v.ts).order_by(v.ts.desc()).limit(1)
        if before is not None:
            latest = latest.where(v.ts < before)
        newest = session.scalar(latest)
        if newest is None:
            return
        day = _utc_day(newest)
        day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        rows = session.execute(
            select(*columns).where(
                v.ts >= day_start,
                v.ts < day_start + timedelta(days=1),
                escalation_flag(min_margin),
            )
        )
        candidates = []
        for verdict_id, router, request_id, status, outcome, strong_needed, delta in rows:
            if (
                status == VerdictStatus.DONE
                and confidence.escalates(outcome, strong_needed, delta, min_margin=min_margin)
                and not in_review_sample(router, request_id, review_probability)
            ):
                candidates.append(
                    EscalationCandidate(
                        verdict_id=int(verdict_id),
                        day=day,
                        inconsistent=outcome == Outcome.INCONSISTENT,
                        margin=confidence.label_margin(strong_needed, delta),
                        draw=review_draw(router, request_id),
                    )
                )
        yield escalated_within_budget(candidates, daily_budget)
        before = day_start


def _escalated_pairs(
    session: Session,
    *,
    reviewer: str,
    router: str | None,
    limit: int,
    review_probability: float,
    min_margin: float,
    daily_budget: int,
) -> list[tuple[Verdict, PairTexts]]:
    """Up to `limit` escalated pairs this reviewer has not labelled, in escalation order."""
    chosen: list[tuple[Verdict, PairTexts]] = []
    days = escalated_by_day(
        session,
        review_probability=review_probability,
        min_margin=min_margin,
        daily_budget=daily_budget,
    )
    for day in days:
        if len(chosen) >= limit:
            break
        ids = [c.verdict_id for c in day]
        query = select(Verdict).where(
            VERDICT.c.id.in_(ids),
            VERDICT.c.id.not_in(select(LABEL.c.verdict_id).where(LABEL.c.reviewer == reviewer)),
        )
        if router is not None:
            query = query.where(VERDICT.c.router == router)
        loaded = {v.id: v for v in session.scalars(query)}
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
    session: Session,
    reviewer: str,
    verdict_ids: list[int],
    rng: random.Random,
    mode: ReviewQueueMode,
) -> dict[int, tuple[str, str]]:
    """Token and order per verdict for this reviewer, created once (a concurrent fetch by
    the same reviewer keeps whichever assignment was committed first); `mode` becomes the
    assignment's queue, the mode whose item the reviewer will label."""
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
                queue=mode.value,
            )
            .on_conflict_do_nothing(index_elements=["verdict_id", "reviewer"])
        )
    session.execute(
        ASSIGNMENT.update()
        .where(
            ASSIGNMENT.c.reviewer == reviewer,
            ASSIGNMENT.c.verdict_id.in_(verdict_ids),
            or_(ASSIGNMENT.c.queue.is_(None), ASSIGNMENT.c.queue != mode.value),
        )
        .values(queue=mode.value)
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
            queue=assignment.queue,
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
