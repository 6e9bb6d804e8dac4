"""Read-side queries: verdicts with both answers, shadow runs, spend per day, and
per-segment quality (judge-only, with the PPI and expected figures of `estimates.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, Field
from sqlalchemy import Table, and_, func, or_, select
from sqlmodel import Session

from shadoweval import paging
from shadoweval.analytics import harm
from shadoweval.analytics.estimates import (
    Estimate,
    ExpectedFigure,
    PpiFigure,
    estimate_of,
    ppi_figure,
    window_expected,
)
from shadoweval.analytics.spend import DailySpend as DailySpend
from shadoweval.analytics.spend import spend_per_day as spend_per_day
from shadoweval.exceptions import NotFound
from shadoweval.feedback.judge_changes import judge_event_key
from shadoweval.ingest.models import DecisionPayload
from shadoweval.judge.models import Verdict, VerdictPublic
from shadoweval.shadow.models import RunKind, ShadowRun, ShadowRunPublic

VERDICT_TABLE = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
RUN_TABLE = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]


class VerdictPage(BaseModel):
    items: list[VerdictPublic]
    next_cursor: str | None


class ShadowRunPage(BaseModel):
    items: list[ShadowRunPublic]
    next_cursor: str | None


def _after(table: Table, cursor: str) -> Any:
    key = paging.decode_keyset(cursor)
    return or_(table.c.ts > key.ts, and_(table.c.ts == key.ts, table.c.id > key.id))


def list_verdicts(
    *,
    session: Session,
    router: str | None = None,
    segment: str | None = None,
    status: str | None = None,
    outcome: str | None = None,
    strong_needed: int | None = None,
    routed_tier: str | None = None,
    direction: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_answers: bool = False,
    verdict_ids: list[int] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> VerdictPage:
    c = VERDICT_TABLE.c
    query = select(Verdict)
    if verdict_ids is not None:
        query = query.where(c.id.in_(verdict_ids))
    for column, value in (
        (c.router, router),
        (c.segment_value, segment),
        (c.status, status),
        (c.outcome, outcome),
        (c.strong_needed, strong_needed),
        (c.routed_tier, routed_tier),
        (c.direction, direction),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    if cursor:
        query = query.where(_after(VERDICT_TABLE, cursor))
    rows = list(session.scalars(query.order_by(c.ts, c.id).limit(limit + 1)))
    items = [_verdict_public(session, v, include_answers) for v in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return VerdictPage(
        items=items, next_cursor=paging.encode_keyset(last.ts, cast(int, last.id)) if last else None
    )


def _answers(
    session: Session, verdict: Verdict
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    payload = session.get(DecisionPayload, verdict.decision_id)
    runs = {
        run.kind: run
        for run in session.scalars(
            select(ShadowRun).where(RUN_TABLE.c.decision_id == verdict.decision_id)
        )
    }
    routed = (payload.response or {}).get("text") if payload else None
    if RunKind.ROUTED_RERUN in runs:
        routed = runs[RunKind.ROUTED_RERUN].response_text
    shadow = runs[RunKind.SHADOW].response_text if RunKind.SHADOW in runs else None
    forward = verdict.direction == "forward"
    cheaper, stronger = (routed, shadow) if forward else (shadow, routed)
    return cheaper, stronger, payload.request if payload else None


def _verdict_public(session: Session, verdict: Verdict, include_answers: bool) -> VerdictPublic:
    public = VerdictPublic.model_validate(verdict, from_attributes=True)
    if include_answers:
        public.cheaper_answer, public.stronger_answer, public.request = _answers(session, verdict)
    return public


def get_verdict(*, session: Session, verdict_id: int) -> VerdictPublic:
    verdict = session.get(Verdict, verdict_id)
    if verdict is None:
        raise NotFound(f"verdict {verdict_id} does not exist")
    return _verdict_public(session, verdict, include_answers=True)


def list_shadow_runs(
    *,
    session: Session,
    status: str | None = None,
    kind: str | None = None,
    decision_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> ShadowRunPage:
    c = RUN_TABLE.c
    query = select(ShadowRun)
    for column, value in ((c.status, status), (c.kind, kind), (c.decision_id, decision_id)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    if cursor:
        query = query.where(_after(RUN_TABLE, cursor))
    rows = list(session.scalars(query.order_by(c.ts, c.id).limit(limit + 1)))
    last = rows[limit - 1] if len(rows) > limit else None
    return ShadowRunPage(
        items=[ShadowRunPublic.model_validate(r, from_attributes=True) for r in rows[:limit]],
        next_cursor=paging.encode_keyset(last.ts, cast(int, last.id)) if last else None,
    )


# --- per-segment quality ---------------------------------------------------------------------


class SequentialTestState(BaseModel):
    """The segment's quality-drop detector (a one-sided GLR change-point test, no baseline
    phase: every label is monitored), as the aggregator last advanced it."""

    labels: int = Field(description="labels consumed, in (ts, request_id) order")
    harms: int
    statistic: float = Field(description="G: log GLR of the best change point, nats")
    threshold: float | None = Field(description="h: the alarm fires at G ≥ h")
    evidence: float = Field(description="G / h (1 = alarm)")
    pre_change_labels: int = Field(description="labels before the estimated change point")
    pre_change_harm_rate: float | None
    post_change_labels: int = Field(description="labels since the estimated change point")
    post_change_harm_rate: float | None
    change_ts: datetime | None = Field(description="decision time of the estimated change")
    alarmed_at_ts: datetime | None
    consumed_up_to_ts: datetime | None


def _sequential_public(state: Mapping[str, Any]) -> SequentialTestState:
    threshold = state["threshold"]
    post_n, post_x = int(state["post_change_labels"]), int(state["post_change_harms"])
    pre_n = int(state["labels"]) - post_n
    pre_x = int(state["positives"]) - post_x
    return SequentialTestState(
        labels=state["labels"],
        harms=state["positives"],
        statistic=state["statistic"],
        threshold=threshold,
        evidence=state["statistic"] / threshold if threshold else 0.0,
        pre_change_labels=pre_n,
        pre_change_harm_rate=pre_x / pre_n if pre_n > 0 else None,
        post_change_labels=post_n,
        post_change_harm_rate=post_x / post_n if post_n > 0 else None,
        change_ts=state["change_ts"],
        alarmed_at_ts=state["alarmed_at_ts"],
        consumed_up_to_ts=state["last_ts"],
    )


class Coverage(BaseModel):
    """The coverage funnel: how much of the segment's traffic the estimate stands for."""

    decisions: int
    sampled: int
    budget_refused: int
    without_payload: int
    provider_failures: int
    redacted: int = Field(description="payload changed by redaction: not shadowed")
    judge_errors: int
    other_skips: int
    labels: int
    share_of_traffic_labelled: float | None


class SegmentQuality(BaseModel):
    router: str
    segment: str
    direction: str = Field(description="forward: cheap-routed (harm); reverse: missed savings")
    # One row per judge: verdicts of two judges are never pooled (DESIGN.md, Judge).
    judge_key: str
    judge_model: str
    prompt_hash: str
    judge_changed_at: datetime | None = Field(
        default=None,
        description="ts of the judge_changed event this judge's window starts at; null for "
        "the router's first judge",
    )
    label: str = Field(description="harm_rate or missed_savings_rate")
    rate: Estimate = Field(
        description="process-level interval: the segment's rate on its traffic, never zero width"
    )
    rate_finite_population: Estimate = Field(
        description="the same rate's finite-population interval (the past decisions only: "
        "zero width for a census)"
    )
    ppi: PpiFigure | None = Field(
        default=None, description="forward rows: the human-corrected harm rate"
    )
    expected: ExpectedFigure | None = Field(
        default=None,
        description="forward rows, with `since` and `expected=true`: label-free expected harm",
    )
    cheaper_wins: Estimate
    ties: Estimate = Field(description="ties and inconsistent pairs")
    stronger_wins: Estimate
    score_delta: Estimate = Field(description="stronger − cheaper judge score (1–10 scale)")
    inconsistent_pairs: int
    judge_cost_usd: float
    coverage: Coverage
    sequential: SequentialTestState | None


class SegmentQualityPage(BaseModel):
    """Segments riskiest first; `next_cursor` (a position in that order) continues it."""

    items: list[SegmentQuality]
    next_cursor: str | None = None


def _judge_change_times(session: Session) -> dict[str, datetime]:
    """judge_changed events by dedup key (router|judge_key) → the ts they split at."""
    from shadoweval.events.models import Event, EventKind

    events = cast(Table, Event.__table__)  # type: ignore[attr-defined]
    query = select(events.c.dedup_key, events.c.ts).where(events.c.kind == EventKind.JUDGE_CHANGED)
    return {str(key): ts for key, ts in session.execute(query)}


def segment_quality_page(
    *,
    session: Session,
    settings: Any,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_expected: bool = False,
    cursor: str | None = None,
    limit: int | None = None,
) -> SegmentQualityPage:
    """One page of `segment_quality` (riskiest first), from the cursor's position."""
    rows = segment_quality(
        session=session,
        settings=settings,
        router=router,
        since=since,
        until=until,
        include_expected=include_expected,
    )
    items, next_cursor = paging.page_of(rows, cursor, limit)
    return SegmentQualityPage(items=items, next_cursor=next_cursor)


def segment_quality(
    *,
    session: Session,
    settings: Any,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    include_expected: bool = False,
) -> list[SegmentQuality]:
    """Per router × segment × direction × judge: rates with intervals, funnel, test state.

    Hour snapshots when a time range is given (hour resolution), day snapshots otherwise.
    """

    from shadoweval.analytics.models import (
        SNAPSHOT_SUMS,
        SequentialState,
        TrafficWindowSnapshot,
        VerdictWindowSnapshot,
    )
    from shadoweval.stats.rates import (
        WeightedSums,
        hajek_mean_from_sums,
        hajek_rate_from_sums,
        process_rate_from_sums,
    )

    snapshots = cast(Table, VerdictWindowSnapshot.__table__)  # type: ignore[attr-defined]
    traffic = cast(Table, TrafficWindowSnapshot.__table__)  # type: ignore[attr-defined]
    states = cast(Table, SequentialState.__table__)  # type: ignore[attr-defined]
    window = "hour" if since is not None or until is not None else "day"
    keys = (
        snapshots.c.router,
        snapshots.c.segment_value,
        snapshots.c.direction,
        snapshots.c.judge_key,
    )
    query = select(*keys, *(func.sum(snapshots.c[name]) for name in SNAPSHOT_SUMS)).where(
        snapshots.c.window == window
    )
    traffic_query = select(
        traffic.c.router,
        traffic.c.segment_value,
        func.sum(traffic.c.decisions),
        func.sum(traffic.c.sampled),
        func.sum(traffic.c.budget_refused),
    )
    for table_query_pair in ((snapshots, "query"), (traffic, "traffic")):
        table, which = table_query_pair
        conditions = []
        if router is not None:
            conditions.append(table.c.router == router)
        if since is not None:
            conditions.append(table.c.window_start >= since)
        if until is not None:
            conditions.append(table.c.window_start < until)
        if which == "query":
            query = query.where(*conditions)
        else:
            traffic_query = traffic_query.where(*conditions)
    rows = session.execute(query.group_by(*keys)).all()
    funnel_top = {
        (r, s): (int(d or 0), int(sm or 0), int(br or 0))
        for r, s, d, sm, br in session.execute(
            traffic_query.group_by(traffic.c.router, traffic.c.segment_value)
        )
    }
    state_rows = {
        (s["router"], s["segment_value"], s["direction"], s["judge_key"]): s
        for s in session.execute(select(states)).mappings()
    }
    judge_started = _judge_change_times(session)
    human = harm.review_sample_labels(
        session,
        review_probability=settings.review_sample_probability,
        since=since,
        until=until,
        router=router,
    )
    results = []
    for row in rows:
        r, segment, direction, judge_key, *values = row
        sums = dict(zip(SNAPSHOT_SUMS, (float(v or 0) for v in values), strict=True))
        n = int(sums["labels"])

        def window_sums(
            sum_wy: float, sum_vy: float, n: int = n, sums: dict[str, float] = sums
        ) -> WeightedSums:
            return WeightedSums(
                n, sums["sum_w"], sums["sum_w2"], sum_wy, sums["sum_vw"], sum_vy, sum_vy
            )

        def rate(sum_wy: float, sum_vy: float) -> Any:
            # Process-level by default: the rate on the segment's traffic (issue 17).
            return process_rate_from_sums(window_sums(sum_wy, sum_vy))

        label_sums = window_sums(sums["sum_wy"], sums["sum_vwy"])
        label_rate = process_rate_from_sums(label_sums)
        cheaper = rate(sums["sum_w_cheaper"], sums["sum_vw_cheaper"])
        stronger = rate(sums["sum_w_stronger"], sums["sum_vw_stronger"])
        ties = rate(
            sums["sum_w"] - sums["sum_w_cheaper"] - sums["sum_w_stronger"],
            sums["sum_vw"] - sums["sum_vw_cheaper"] - sums["sum_vw_stronger"],
        )
        delta = hajek_mean_from_sums(
            WeightedSums(
                n,
                sums["sum_w"],
                sums["sum_w2"],
                sums["sum_wd"],
                sums["sum_vw"],
                sums["sum_vwd"],
                sums["sum_vwd2"],
            )
        )
        decisions, sampled, refused = funnel_top.get((r, segment), (0, 0, 0))
        state = state_rows.get((r, segment, direction, judge_key))
        judge_model, _, prompt_hash = judge_key.rpartition("#")
        results.append(
            SegmentQuality(
                router=r,
                segment=segment,
                direction=direction,
                judge_key=judge_key,
                judge_model=judge_model or judge_key,
                prompt_hash=prompt_hash,
                judge_changed_at=judge_started.get(judge_event_key(r, judge_key)),
                label="harm_rate" if direction == "forward" else "missed_savings_rate",
                rate=estimate_of(label_rate),
                rate_finite_population=estimate_of(hajek_rate_from_sums(label_sums)),
                ppi=ppi_figure(harm.ppi_rate(label_sums, human.get((r, segment, judge_key, None))))
                if direction == "forward"
                else None,
                expected=window_expected(session, settings, r, segment, judge_key, since, until)
                if include_expected and direction == "forward" and since is not None
                else None,
                cheaper_wins=estimate_of(cheaper),
                ties=estimate_of(ties),
                stronger_wins=estimate_of(stronger),
                score_delta=estimate_of(delta),
                inconsistent_pairs=int(sums["inconsistent"]),
                judge_cost_usd=sums["judge_cost_usd"],
                coverage=Coverage(
                    decisions=decisions,
                    sampled=sampled,
                    budget_refused=refused,
                    without_payload=int(sums["skipped_no_payload"]),
                    provider_failures=int(sums["skipped_provider_failure"]),
                    redacted=int(sums["skipped_redacted"]),
                    judge_errors=int(sums["judge_errors"]),
                    other_skips=int(sums["skipped_other"]),
                    labels=n,
                    # Σw estimates the traffic the labels stand for.
                    share_of_traffic_labelled=min(1.0, sums["sum_w"] / decisions)
                    if decisions
                    else None,
                ),
                sequential=_sequential_public(dict(state)) if state is not None else None,
            )
        )
    # Riskiest first: the upper end of the harm interval.
    results.sort(key=lambda q: (q.direction != "forward", -(q.rate.ci_high or 0.0), q.segment))
    return results


# --- human-corrected and label-free estimates ----------------------------------------------
