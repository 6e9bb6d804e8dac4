"""GET /v1/judge/quality: swap consistency, position-A preference and verbosity bias per
judge, from counts and sums the database adds up (not one Python object per verdict)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import BigInteger, case, cast, func, select
from sqlmodel import Session

from shadoweval.judge import quality
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.sql import hour_start, table_of
from shadoweval.stats.rates import Z_95

VERDICT_TABLE = table_of(Verdict)


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


def judge_quality_report(
    *, session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[JudgeQualityReport]:
    """Per judge model × prompt hash, over its finished and failed verdicts in the window:
    the figures of `judge.quality.judge_quality` over the finished ones, from one GROUP BY."""
    c = VERDICT_TABLE.c
    done = c.status == VerdictStatus.DONE

    def count(condition: Any) -> Any:
        return func.sum(case((done & condition, 1), else_=0))

    first = c.order_cheaper_first["winner"].as_string()
    second = c.order_stronger_first["winner"].as_string()
    # Integer sums: the variance test (zero spread) and r are then exact up to the last step.
    length = cast(func.coalesce(c.stronger_chars, 0), BigInteger) - cast(
        func.coalesce(c.cheaper_chars, 0), BigInteger
    )
    direction = case(
        (c.outcome == Outcome.STRONGER_WINS.value, 1),
        (c.outcome == Outcome.CHEAPER_WINS.value, -1),
        else_=0,
    )
    x, y = (case((done, term), else_=0) for term in (length, direction))
    query = (
        select(
            c.judge_model,
            c.prompt_hash,
            func.count(),
            func.sum(c.judge_cost_usd),
            count(c.consistent.is_(True)),
            count(first == "A") + count(second == "A"),
            count(first.in_(("A", "B"))) + count(second.in_(("A", "B"))),
            count(c.id.is_not(None)),
            *(func.sum(term) for term in (x, y, x * x, y * y, x * y)),
        )
        .where(c.status.in_([VerdictStatus.DONE, VerdictStatus.ERROR]))
        .group_by(c.judge_model, c.prompt_hash)
    )
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    return [_report(row) for row in sorted(session.execute(query), key=lambda r: (r[0], r[1]))]


def _report(row: Any) -> JudgeQualityReport:
    model, prompt_hash, total, cost, consistent, first_a, decisive, n, *sums = row
    n = int(n or 0)
    sx, sy, sxx, syy, sxy = (int(v or 0) for v in sums)
    return JudgeQualityReport(
        judge_model=model,
        prompt_hash=prompt_hash,
        verdicts_done=n,
        verdicts_error=int(total) - n,
        swap_consistency=_figure(quality.wilson(int(consistent or 0), n)),
        position_a_preference=_figure(quality.wilson(int(first_a or 0), int(decisive or 0))),
        verbosity_correlation=_figure(pearson_from_sums(n, sx, sy, sxx, syy, sxy)),
        judge_cost_usd=float(cost or 0.0),
    )


def pearson_from_sums(
    n: int, sx: int, sy: int, sxx: int, syy: int, sxy: int
) -> quality.Correlation:
    """`quality.pearson_with_interval` from n, Σx, Σy, Σx², Σy², Σxy (integers, so a zero
    spread is exactly zero): r = (nΣxy − ΣxΣy) / √((nΣx² − (Σx)²)(nΣy² − (Σy)²)), with
    the Fisher-z 95 % interval atanh(r) ± 1.96/√(n−3) (Fisher 1921)."""
    spread_x, spread_y = n * sxx - sx * sx, n * syy - sy * sy
    if n < 4 or spread_x == 0 or spread_y == 0:
        return quality.Correlation(math.nan, math.nan, math.nan, n)
    r = (n * sxy - sx * sy) / (math.sqrt(spread_x) * math.sqrt(spread_y))
    r = min(max(r, -1.0), 1.0)  # as numpy's corrcoef clips the rounding
    r_clipped = min(max(r, -0.999999), 0.999999)
    z, half = math.atanh(r_clipped), Z_95 / math.sqrt(n - 3)
    return quality.Correlation(r, math.tanh(z - half), math.tanh(z + half), n)


def _figure(value: quality.Proportion | quality.Correlation) -> IntervalFigure:
    return IntervalFigure(
        estimate=_nan_to_none(value.estimate),
        ci_low=_nan_to_none(value.ci_low),
        ci_high=_nan_to_none(value.ci_high),
        n=value.n,
    )


def _nan_to_none(value: float) -> float | None:
    return None if value != value else value


class JudgeTimelineBucket(BaseModel):
    """One UTC hour of decision ts: finished verdicts, how many were swap-consistent, and
    the decisive calls (A or B) of either order with how many picked position A."""

    start: datetime
    verdicts: int
    consistent: int
    decisive_calls: int
    position_a_calls: int


class JudgePairs(BaseModel):
    """How many verdicts match the filters, and the newest ones' ids (newest first)."""

    matching: int
    newest_ids: list[int]


def _filtered(query: Any, filters: dict[str, Any]) -> Any:
    c = VERDICT_TABLE.c
    columns = {
        "router": c.router,
        "segment": c.segment_value,
        "outcome": c.outcome,
        "direction": c.direction,
        "status": c.status,
    }
    for name, column in columns.items():
        if filters.get(name) is not None:
            query = query.where(column == filters[name])
    if filters.get("since") is not None:
        query = query.where(c.ts >= filters["since"])
    if filters.get("until") is not None:
        query = query.where(c.ts < filters["until"])
    return query


def judge_timeline(
    *,
    session: Session,
    router: str | None = None,
    segment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[JudgeTimelineBucket]:
    """Swap consistency and position-A calls per UTC hour of decision ts, oldest first,
    from one GROUP BY (the judge page drew them from up to 5,000 verdicts it fetched)."""
    c = VERDICT_TABLE.c
    hour = hour_start(session, c.ts)
    first = c.order_cheaper_first["winner"].as_string()
    second = c.order_stronger_first["winner"].as_string()

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    query = _filtered(
        select(
            hour,
            func.count(),
            # As the page counted the verdicts it fetched: every outcome but "inconsistent".
            func.sum(case((c.outcome == Outcome.INCONSISTENT.value, 0), else_=1)),
            count(first.in_(("A", "B"))) + count(second.in_(("A", "B"))),
            count(first == "A") + count(second == "A"),
        ),
        {
            "router": router,
            "segment": segment,
            "status": VerdictStatus.DONE,
            "since": since,
            "until": until,
        },
    )
    return [
        JudgeTimelineBucket(
            start=_as_utc(start),
            verdicts=int(n),
            consistent=int(consistent or 0),
            decisive_calls=int(decisive or 0),
            position_a_calls=int(position_a or 0),
        )
        for start, n, consistent, decisive, position_a in session.execute(
            query.group_by(hour).order_by(hour)
        )
    ]


def judge_pairs(*, session: Session, limit: int = 20, **filters: Any) -> JudgePairs:
    """The count of verdicts matching `filters` (router, segment, outcome, direction,
    since, until; any status) and the ids of the newest `limit`, newest first: what the
    judge page shows without paging through every match."""
    c = VERDICT_TABLE.c
    matching = session.scalar(_filtered(select(func.count()), filters).select_from(VERDICT_TABLE))
    newest = session.scalars(
        _filtered(select(c.id), filters).order_by(c.ts.desc(), c.id.desc()).limit(limit)
    )
    return JudgePairs(matching=int(matching or 0), newest_ids=[int(i) for i in newest])


def _as_utc(value: Any) -> datetime:
    """An hour key as an aware UTC datetime (SQLite gives the text)."""
    stamp: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
