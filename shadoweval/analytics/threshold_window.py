"""What the threshold advisor reads from the decision log, added up in SQL (issue 19 §4).

The window's decisions reach Python only as sums: counts per score meaning, per tier and
segment, and per (segment, routed tier, score bin of the threshold grid) the count, the
own cost and the outcome model's sum (`stats.threshold_bins`). Only the labelled
decisions — one per finished verdict — come back one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import case, func, literal, select
from sqlmodel import Session

from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict
from shadoweval.sql import table_of
from shadoweval.stats import threshold_bins

DECISION_TABLE = table_of(Decision)
VERDICT_TABLE = table_of(Verdict)
# np.clip bounds of `stats.thresholds._predict`, and the exponent beyond which exp()
# overflows (PostgreSQL raises where numpy gives inf; expit is 0 or 1 there either way).
SCORE_CLIP = 1e-6
EXPONENT_LIMIT = 700.0
LOGIT_LIMIT = 13.82  # |logit(s)| for s clipped to [1e-6, 1 − 1e-6]


@dataclass(frozen=True)
class WindowCounts:
    total: int
    scored: int
    usable: int
    meaning: str | None  # the most common score meaning among scored decisions
    tiers: dict[str, tuple[int, float]]  # usable decisions and Σ cost (None as 0) per tier
    segments: list[str]  # segment values of the usable decisions, sorted


def window_counts(session: Session, where: Sequence[Any], usable_meaning: str) -> WindowCounts:
    """How many decisions the window has, how many carry a score and of which meaning,
    per tier of the usable ones (score of `usable_meaning`) their count and cost, and
    their segments: one GROUP BY over the window."""
    c = DECISION_TABLE.c
    scored_flag = case((c.router_score.is_not(None), 1), else_=0)
    keys = (c.score_semantics, scored_flag, c.tier, c.segment_value)
    query = select(*keys, func.count(), func.sum(func.coalesce(c.cost_usd, 0.0))).where(*where)
    total = scored = usable = 0
    meanings: dict[str, int] = {}
    tiers: dict[str, tuple[int, float]] = {}
    segments: set[str] = set()
    for meaning, is_scored, tier, segment, count, cost in session.execute(query.group_by(*keys)):
        total += count
        if not is_scored:
            continue
        scored += count
        meanings[meaning] = meanings.get(meaning, 0) + count
        if meaning == usable_meaning:
            usable += count
            n, summed = tiers.get(tier, (0, 0.0))
            tiers[tier] = (n + int(count), summed + float(cost or 0.0))
            segments.add(str(segment))
    meaning = max(meanings, key=lambda m: (meanings[m], m)) if meanings else None
    return WindowCounts(total, scored, usable, meaning, tiers, sorted(segments))


def threshold_in_force(session: Session, usable: Sequence[Any]) -> float | None:
    """The threshold on the latest usable decision (ts, id) that states one."""
    c = DECISION_TABLE.c
    value = session.scalar(
        select(c.threshold)
        .where(*usable, c.threshold.is_not(None))
        .order_by(c.ts.desc(), c.id.desc())
        .limit(1)
    )
    return None if value is None else float(value)


def labelled_decisions(
    session: Session, usable: Sequence[Any], labels: Mapping[int, Mapping[str, Any]]
) -> list[Any]:
    """The usable decisions that have a label, in (ts, request_id) order (the order the
    per-request curve meets them, which its bootstrap draws depend on)."""
    c = DECISION_TABLE.c
    v = VERDICT_TABLE.c
    judges = {label["judge_key"] for label in labels.values()}
    query = (
        select(c.id, c.router_score, c.tier, c.cost_usd, c.segment_value)
        .where(
            *usable,
            select(v.id).where(v.decision_id == c.id, v.judge_key.in_(sorted(judges))).exists(),
        )
        .order_by(c.ts, c.request_id)
    )
    return [row for row in session.execute(query) if int(row.id) in labels]


def _score_bin(score: Any, grid: Sequence[float]) -> Any:
    """SQL for `threshold_bins.score_bin`: how many grid values are ≤ score, as a binary
    search of nested CASEs (a handful of comparisons a row)."""

    def node(low: int, high: int) -> Any:
        if low == high:
            return literal(low)
        middle = (low + high + 1) // 2
        return case(
            (score >= float(grid[middle - 1]), node(middle, high)), else_=node(low, middle - 1)
        )

    return node(0, len(grid))


def _outcome_model(score: Any, a: Any, b: Any, largest: float) -> Any:
    """SQL for m(s) = expit(a + b·logit(clip(s))), as `stats.thresholds._predict`."""
    clipped = case(
        (score < SCORE_CLIP, SCORE_CLIP), (score > 1 - SCORE_CLIP, 1 - SCORE_CLIP), else_=score
    )
    exponent = a + b * func.ln(clipped / (literal(1.0) - clipped))
    if largest > EXPONENT_LIMIT:
        exponent = case(
            (exponent < -EXPONENT_LIMIT, -EXPONENT_LIMIT),
            (exponent > EXPONENT_LIMIT, EXPONENT_LIMIT),
            else_=exponent,
        )
    return literal(1.0) / (literal(1.0) + func.exp(-exponent))


def binned_traffic(
    session: Session,
    usable: Sequence[Any],
    *,
    grid: Sequence[float],
    strong_tier: str,
    segments: Sequence[str],
    coefficients: Mapping[str | None, np.ndarray[Any, Any]],
) -> dict[str | None, threshold_bins.BinnedTraffic]:
    """Per segment (and pooled, None, when `coefficients` has it) the window's usable
    decisions summed per stratum, routed tier and score bin, in one GROUP BY; each
    segment's model sums use its own coefficients, the pooled ones the pooled fit."""
    c = DECISION_TABLE.c
    score = c.router_score
    per_segment = [coefficients[s] for s in segments if s in coefficients]

    def model(pick: Mapping[str, np.ndarray[Any, Any]] | None, fixed: Any = None) -> Any:
        a: Any
        b: Any
        if pick is None:
            a, b = literal(float(fixed[0])), literal(float(fixed[1]))
            largest = abs(float(fixed[0])) + LOGIT_LIMIT * abs(float(fixed[1]))
        else:
            a = case({s: float(v[0]) for s, v in pick.items()}, value=c.segment_value, else_=0.0)
            b = case({s: float(v[1]) for s, v in pick.items()}, value=c.segment_value, else_=0.0)
            largest = max(abs(float(v[0])) + LOGIT_LIMIT * abs(float(v[1])) for v in per_segment)
        return func.sum(_outcome_model(score, a, b, largest))

    strong = case((c.tier == strong_tier, 1), else_=0)
    where_bin = _score_bin(score, grid)
    sums = [func.count(), func.count(c.cost_usd), func.sum(func.coalesce(c.cost_usd, 0.0))]
    own = {s: coefficients[s] for s in segments if s in coefficients}
    if own:
        sums.append(model(own))
    if None in coefficients:
        sums.append(model(None, coefficients[None]))
    keys = (c.segment_value, strong, where_bin)
    rows = session.execute(select(*keys, *sums).where(*usable).group_by(*keys)).all()
    code = {s: i for i, s in enumerate(segments)}
    shape = (len(segments), 2, len(grid) + 1)
    count = np.zeros(shape, dtype=np.int64)
    known = np.zeros(shape, dtype=np.int64)
    cost = np.zeros(shape)
    own_sum = np.zeros(shape)
    pooled_sum = np.zeros(shape)
    for segment, tier, bin_index, n, n_known, cost_sum, *models in rows:
        if segment not in code:
            continue  # a segment first logged since `window_counts` read the window
        at = (code[segment], int(tier), int(bin_index))
        count[at], known[at], cost[at] = n, n_known, float(cost_sum or 0.0)
        if own:
            own_sum[at] = float(models[0] or 0.0)
        if None in coefficients:
            pooled_sum[at] = float(models[-1] or 0.0)
    out: dict[str | None, threshold_bins.BinnedTraffic] = {
        s: threshold_bins.BinnedTraffic(count[[i]], known[[i]], cost[[i]], own_sum[[i]])
        for s, i in code.items()
        if s in own
    }
    if None in coefficients:
        out[None] = threshold_bins.BinnedTraffic(count, known, cost, pooled_sum)
    return out
