"""Read-side queries: verdicts with both answers, shadow runs, spend per day, judge quality."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, Field
from sqlalchemy import Table, and_, func, or_, select
from sqlmodel import Session

from shadoweval.db import utc_day
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.ingest.models import DecisionPayload
from shadoweval.judge import quality
from shadoweval.judge.models import Outcome, Verdict, VerdictPublic, VerdictStatus
from shadoweval.shadow.models import RunKind, ShadowRun, ShadowRunPublic

VERDICT_TABLE = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
RUN_TABLE = cast(Table, ShadowRun.__table__)  # type: ignore[attr-defined]


class VerdictPage(BaseModel):
    items: list[VerdictPublic]
    next_cursor: str | None


class ShadowRunPage(BaseModel):
    items: list[ShadowRunPublic]
    next_cursor: str | None


class DailySpend(BaseModel):
    day: str = Field(description="UTC day of the decisions' ts, YYYY-MM-DD.")
    shadow_usd: float
    judge_usd: float
    total_usd: float
    shadow_runs: int
    verdicts: int


class IntervalFigure(BaseModel):
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


class JudgeQualityReport(BaseModel):
    judge_model: str
    prompt_hash: str
    verdicts_done: int
    verdicts_error: int
    swap_consistency: IntervalFigure
    position_a_preference: IntervalFigure
    verbosity_correlation: IntervalFigure
    judge_cost_usd: float


def _cursor(ts: datetime, item_id: int) -> str:
    raw = json.dumps({"ts": ts.isoformat(), "id": item_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(table: Table, cursor: str) -> Any:
    try:
        data = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
        ts, item_id = datetime.fromisoformat(data["ts"]), int(data["id"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidRequest("cursor is not valid; pass next_cursor from a previous page") from exc
    return or_(table.c.ts > ts, and_(table.c.ts == ts, table.c.id > item_id))


def _nan_to_none(value: float) -> float | None:
    return None if value != value else value


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
    cursor: str | None = None,
    limit: int = 50,
) -> VerdictPage:
    c = VERDICT_TABLE.c
    query = select(Verdict)
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
        items=items, next_cursor=_cursor(last.ts, cast(int, last.id)) if last else None
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
        next_cursor=_cursor(last.ts, cast(int, last.id)) if last else None,
    )


def spend_per_day(
    *, session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[DailySpend]:
    """Shadow and judge spend in USD per UTC day of the decisions' `ts`."""
    dialect = session.get_bind().dialect.name
    days: dict[str, DailySpend] = {}

    def window(table: Table, query: Any) -> Any:
        if since is not None:
            query = query.where(table.c.ts >= since)
        if until is not None:
            query = query.where(table.c.ts < until)
        return query

    run_day = utc_day(RUN_TABLE.c.ts, dialect)
    for day, cost, count in session.execute(
        window(
            RUN_TABLE,
            select(run_day, func.sum(RUN_TABLE.c.cost_usd), func.count()).group_by(run_day),
        )
    ):
        days[day] = DailySpend(
            day=day,
            shadow_usd=float(cost or 0),
            judge_usd=0,
            total_usd=0,
            shadow_runs=count,
            verdicts=0,
        )
    verdict_day = utc_day(VERDICT_TABLE.c.ts, dialect)
    for day, cost, count in session.execute(
        window(
            VERDICT_TABLE,
            select(verdict_day, func.sum(VERDICT_TABLE.c.judge_cost_usd), func.count())
            .where(VERDICT_TABLE.c.status.in_([VerdictStatus.DONE, VerdictStatus.ERROR]))
            .group_by(verdict_day),
        )
    ):
        entry = days.setdefault(
            day,
            DailySpend(day=day, shadow_usd=0, judge_usd=0, total_usd=0, shadow_runs=0, verdicts=0),
        )
        entry.judge_usd, entry.verdicts = float(cost or 0), count
    for entry in days.values():
        entry.total_usd = entry.shadow_usd + entry.judge_usd
    return [days[day] for day in sorted(days)]


def judge_quality_report(
    *, session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[JudgeQualityReport]:
    """Swap consistency, position-A preference and verbosity bias per judge model × prompt."""
    c = VERDICT_TABLE.c
    query = select(Verdict).where(c.status.in_([VerdictStatus.DONE, VerdictStatus.ERROR]))
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    groups: dict[tuple[str, str], list[Verdict]] = {}
    for verdict in session.scalars(query):
        groups.setdefault((verdict.judge_model, verdict.prompt_hash), []).append(verdict)
    reports = []
    for (model, prompt_hash), verdicts in sorted(groups.items()):
        done = [v for v in verdicts if v.status == VerdictStatus.DONE]
        direction = {Outcome.STRONGER_WINS: 1, Outcome.CHEAPER_WINS: -1}
        figures = quality.judge_quality(
            consistent=[bool(v.consistent) for v in done],
            winners_first=[(v.order_cheaper_first or {}).get("winner") or "" for v in done],
            winners_second=[(v.order_stronger_first or {}).get("winner") or "" for v in done],
            stronger_minus_cheaper_chars=[
                (v.stronger_chars or 0) - (v.cheaper_chars or 0) for v in done
            ],
            verdict_direction=[
                direction.get(Outcome(v.outcome), 0) if v.outcome else 0 for v in done
            ],
        )
        reports.append(
            JudgeQualityReport(
                judge_model=model,
                prompt_hash=prompt_hash,
                verdicts_done=len(done),
                verdicts_error=len(verdicts) - len(done),
                swap_consistency=_figure(figures.swap_consistency),
                position_a_preference=_figure(figures.position_a_preference),
                verbosity_correlation=_figure(figures.verbosity_correlation),
                judge_cost_usd=sum(v.judge_cost_usd for v in verdicts),
            )
        )
    return reports


def _figure(value: quality.Proportion | quality.Correlation) -> IntervalFigure:
    return IntervalFigure(
        estimate=_nan_to_none(value.estimate),
        ci_low=_nan_to_none(value.ci_low),
        ci_high=_nan_to_none(value.ci_high),
        n=value.n,
    )
