"""Sessions of a router's decision log: turns, tier switches, the prompt-cache cost of
switching, net savings against session-sticky routing, and escalations inside tool loops.

Two ways to the same rows, one per (session, served model) with the sums of its turns
and of their per-turn counterfactual (`stats/sessions.py`, LAG over the session in
(ts, id) order, in SQL):
- `GET /v1/sessions` reads the running totals the aggregator keeps (`session_total`,
  analytics/session_totals.py): a session belongs to the window and the segment of its
  first turn, and counts with all its turns;
- the alert rules (`window_figures`) and `from_log=True` compute them from the decision
  log over the turns whose `ts` is in the window (a replay then sees what the live
  stream saw at each step).
Python sees a row per session and model, never per decision. The figures are in
`stats/sessions.py`; docs/architecture.md ("Sessions") defines them. Windows are on the
decisions' `ts` (decision time).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Float, case, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from shadoweval.analytics.session_rows import (
    _COL,
    _COLUMNS,
    TOTAL_TABLE,
    _cache_report,
    _session_rows_from_log,
    _session_rows_from_totals,
    _tool_loops,
    _tool_loops_of,
    _totals_window,
    _turn_window,
    _window,
)
from shadoweval.analytics.session_sql import tool_turn_condition
from shadoweval.ingest.models import DECISION_TABLE, PAYLOAD_TABLE
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.providers.pricing import ModelPrice, PricingTable
from shadoweval.sql import table_of
from shadoweval.stats import rates
from shadoweval.stats import sessions as session_stats

VERDICT_TABLE = table_of(Verdict)

NO_SESSIONS = "no sessions logged"


class HarmByToolUse(BaseModel):
    """Judge-measured harm (Hájek, weights 1/π) of cheap-routed turns, tool turns vs others."""

    segment: str
    tool_turns: rates.RateEstimate | None
    other_turns: rates.RateEstimate | None


class SessionsReport(BaseModel):
    """`GET /v1/sessions`: one router (and segment), one window of decision time."""

    router: str
    segment: str | None
    since: datetime | None
    until: datetime | None
    status: str = Field(description="`ok`, `no decisions` or `no sessions logged`.")
    decisions: int = Field(description="Decisions with `ts` in the window (and segment).")
    decisions_with_session: int = Field(
        description="Of those, decisions with a `session_id` (aggregated so far)."
    )
    unpriced_models: list[str] = Field(
        default_factory=list,
        description="Served models with no price: their sessions are left out of the USD figures.",
    )
    sessions_unpriced: int = 0
    cache: session_stats.SessionCacheReport | None = Field(
        default=None,
        description="Sessions whose first turn is in the window (and segment), with all "
        "their turns aggregated so far.",
    )
    by_segment: dict[str, session_stats.SessionCacheReport] = Field(default_factory=dict)
    tool_loops: session_stats.ToolLoopEscalations | None = None
    tool_loops_by_segment: dict[str, session_stats.ToolLoopEscalations] = Field(
        default_factory=dict
    )
    harm_by_tool_use: list[HarmByToolUse] = Field(default_factory=list)


# What the report needs per (segment, model): the cache figures by model and the tool loops.
_PER_MODEL_SUMS = (
    "turns",
    "cache_read_tokens",
    "cache_write_tokens",
    "excess_cache_write_tokens",
    "tool_turns",
    "loop_turns",
    "escalations",
    "escalations_at_start",
    "escalations_in_loop",
)


def _report_from_totals(
    session: Session,
    pricing: PricingTable,
    report: SessionsReport,
    *,
    router: str,
    segment: str | None,
    since: Any,
    until: Any,
) -> bool:
    """Fill `report` from the running totals, summed per session in SQL with the price table
    bound into the query, so Python reads a row per session and per (segment, model).

    Returns False, having changed nothing, when a served model has no price: the report
    then needs the rows per (session, model) to leave those sessions out."""
    c = TOTAL_TABLE.c
    window = {"router": router, "segment": segment, "since": since, "until": until}
    per_model = session.execute(
        _totals_window(
            select(c.segment_value, c.served_model, *(func.sum(c[n]) for n in _PER_MODEL_SUMS)),
            **window,
        ).group_by(c.segment_value, c.served_model)
    ).all()
    names = sorted({str(row[1]) for row in per_model})
    found = {name: pricing.lookup(name) for name in names}
    price_of = {name: price for name, price in found.items() if price is not None}
    if len(price_of) < len(names):
        return False
    if not names:  # no session starts in the window
        report.tool_loops = _tool_loops_of(np.zeros(len(_COLUMNS), dtype=np.float64))
        return True
    # Models in order of strength (ties: by name), so the strongest is the highest rank.
    ranked = sorted(names, key=lambda name: (price_of[name].input + price_of[name].output, name))
    segment_names = sorted({str(row[0] or "") for row in per_model})
    query = _per_session_query(price_of, ranked, segment_names)
    result = session.connection().execute(_totals_window(query, **window).group_by(c.session_id))
    # The DBAPI's tuples, without a Row object per session (nothing here needs a result
    # processor: text and numbers). Grouped by the primary key: no sort on either database.
    rows = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    table = np.array(rows, dtype=np.float64).reshape(len(rows), 11)
    segments = np.array(segment_names, dtype=str)[table[:, 0].astype(np.int64)]
    sums = _session_sums(table[:, 1:], [price_of[name] for name in ranked])
    model_sums = _model_sums(per_model)
    if rows:
        cache = functools.partial(_cache_of, sums, model_sums, price_of)
        report.cache = cache(np.ones(len(rows), dtype=np.bool_), segment_names)
        for name in segment_names:
            report.by_segment[name] = (
                report.cache if len(segment_names) == 1 else cache(segments == name, [name])
            )
    columns = np.zeros(len(_COLUMNS), dtype=np.float64)
    for name in segment_names:
        segment_total = np.sum(list(model_sums[name].values()), axis=0)
        report.tool_loops_by_segment[name] = _tool_loops_of(segment_total)
        columns += segment_total
    report.tool_loops = _tool_loops_of(columns)
    return True


def _per_session_query(
    price_of: dict[str, ModelPrice], ranked: list[str], segment_names: list[str]
) -> Any:
    """Per session: its segment's code, its sums, P and L of stats/sessions.py (USD per
    million tokens) and the ranks of its first turn's model and of its strongest model."""
    c = TOTAL_TABLE.c
    rank = case({name: i for i, name in enumerate(ranked)}, value=c.served_model)

    def price(kind: str) -> Any:
        def value(model_price: Any) -> float:
            if kind == "cache_write_premium":
                return float(model_price.cache_write - model_price.cache_read)
            return float(getattr(model_price, kind))

        return case(
            {name: value(price_of[name]) for name in sorted(price_of)}, value=c.served_model
        )

    def total(value: Any) -> Any:
        # As a float: PostgreSQL sums integers as numeric, which psycopg reads as Decimal.
        return sql_cast(func.sum(value), Float)

    # The segment as a code: the max of text compares by collation on PostgreSQL, slowly.
    segment_code = case({name: i for i, name in enumerate(segment_names)}, value=c.segment_value)
    return select(
        func.max(segment_code),
        total(c.turns),
        total(c.tier_switches),
        total(c.input_tokens),
        total(c.output_tokens),
        total(c.cache_read_tokens + c.excess_cache_write_tokens),
        total(c.cache_write_tokens - c.excess_cache_write_tokens),
        total(
            c.input_tokens * price("input")
            + c.output_tokens * price("output")
            + c.cache_read_tokens * price("cache_read")
            + c.cache_write_tokens * price("cache_write")
        ),
        total(c.excess_cache_write_tokens * price("cache_write_premium")),
        func.max(case((c.first_turn, rank))),
        func.max(rank),
    )


def _session_sums(
    v: np.ndarray[Any, np.dtype[np.float64]], ranked_prices_of: list[ModelPrice]
) -> session_stats.SessionSums:
    """`SessionSums` from the per-session query's columns after the segment code."""
    ranked_prices = session_stats.Prices.of(
        *(
            [float(getattr(model_price, kind)) for model_price in ranked_prices_of]
            for kind in ("input", "output", "cache_read", "cache_write")
        )
    )
    return session_stats.SessionSums(
        turns=v[:, 0],
        tier_switches=v[:, 1],
        input_tokens=v[:, 2],
        output_tokens=v[:, 3],
        sticky_cache_read=v[:, 4],
        sticky_cache_write=v[:, 5],
        actual_usd=v[:, 6] / session_stats.PER_MILLION,
        loss_usd=v[:, 7] / session_stats.PER_MILLION,
        first_turn_prices=ranked_prices.take(v[:, 8].astype(np.int64)),
        strongest_prices=ranked_prices.take(v[:, 9].astype(np.int64)),
    )


def _model_sums(per_model: Any) -> dict[str, dict[str, np.ndarray[Any, np.dtype[np.float64]]]]:
    """Per segment and model, the `_COLUMNS` vector (those not summed left at zero)."""
    model_sums: dict[str, dict[str, np.ndarray[Any, np.dtype[np.float64]]]] = {}
    for row in per_model:
        vector = np.zeros(len(_COLUMNS), dtype=np.float64)
        for name, value in zip(_PER_MODEL_SUMS, row[2:], strict=True):
            vector[_COL[name]] = float(value or 0)
        model_sums.setdefault(str(row[0] or ""), {})[str(row[1])] = vector
    return model_sums


def _cache_of(
    sums: session_stats.SessionSums,
    model_sums: dict[str, dict[str, np.ndarray[Any, np.dtype[np.float64]]]],
    price_of: dict[str, ModelPrice],
    chosen: np.ndarray[Any, np.dtype[np.bool_]],
    chosen_segments: list[str],
) -> session_stats.SessionCacheReport:
    """The cache report of the chosen sessions, with the per-model figures of their segments."""
    by_model = []
    for name in sorted(price_of):
        totals = [model_sums[seg][name] for seg in chosen_segments if name in model_sums[seg]]
        if not totals:
            continue
        total = np.sum(totals, axis=0)
        price = price_of[name]
        by_model.append(
            session_stats.cache_by_model(
                model=name,
                prices=session_stats.Prices.of(
                    [price.input], [price.output], [price.cache_read], [price.cache_write]
                ),
                turns=total[_COL["turns"]],
                cache_read_tokens=total[_COL["cache_read_tokens"]],
                cache_write_tokens=total[_COL["cache_write_tokens"]],
                excess_cache_write_tokens=total[_COL["excess_cache_write_tokens"]],
            )
        )
    return session_stats.session_report(sums.take(chosen), by_model)


def _harm_rate(labels: np.ndarray[Any, np.dtype[np.float64]]) -> rates.RateEstimate | None:
    """Hájek harm rate of (strong_needed, π) rows; None without labels."""
    return rates.hajek_rate(labels[:, 0], labels[:, 1]) if labels.size else None


def _harm_by_tool_use(
    session: Session, *, router: str, segment: str | None, since: Any, until: Any
) -> list[HarmByToolUse]:
    """Forward (cheap-routed) judged pairs, split by whether the turn carried tool use."""
    c = DECISION_TABLE.c
    v = VERDICT_TABLE.c
    p = PAYLOAD_TABLE.c
    query = _window(
        select(
            v.segment_value,
            v.strong_needed,
            v.inclusion_probability,
            case((tool_turn_condition(p.request), 1), else_=0).label("tool"),
        )
        .select_from(
            VERDICT_TABLE.join(DECISION_TABLE, c.id == v.decision_id).outerjoin(
                PAYLOAD_TABLE, p.decision_id == c.id
            )
        )
        .where(
            v.direction == "forward",
            v.status == VerdictStatus.DONE.value,
            v.strong_needed.is_not(None),
            v.inclusion_probability > 0,
        ),
        router=router,
        segment=segment,
        since=since,
        until=until,
    )
    rows = session.execute(query).all()
    by_segment: dict[str, list[tuple[int, float, int]]] = {}
    for row in rows:
        by_segment.setdefault(str(row.segment_value), []).append(
            (int(row.strong_needed), float(row.inclusion_probability), int(row.tool))
        )
    result = []
    for name in sorted(by_segment):
        labels = np.array(by_segment[name], dtype=np.float64)
        tool = labels[:, 2] == 1

        result.append(
            HarmByToolUse(
                segment=name,
                tool_turns=_harm_rate(labels[tool]),
                other_turns=_harm_rate(labels[~tool]),
            )
        )
    return result


def sessions_report(
    *,
    session: Session,
    pricing: PricingTable,
    router: str,
    segment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    from_log: bool = False,
) -> SessionsReport:
    """Session figures of one router over [since, until) of decision time (`ts`).

    From the running totals: the sessions whose first turn is in the window (and segment).
    `from_log` recomputes them from the decision log over the turns in the window instead
    (the per-turn reference the totals are tested against; seconds on a large log)."""
    window: dict[str, Any] = {"router": router, "segment": segment, "since": since, "until": until}
    decisions = session.scalar(_window(select(func.count()), **window))
    if from_log:
        with_session = session.scalar(
            _window(select(func.count(DECISION_TABLE.c.session_id)), **window)
        )
    else:
        # From the aggregated turns: counting session_id on the log reads every decision
        # row, where its (router, ts) index answers the count of all decisions alone.
        with_session = session.scalar(_turn_window(select(func.count()), **window))
    report = SessionsReport(
        router=router,
        segment=segment,
        since=since,
        until=until,
        status="ok",
        decisions=int(decisions or 0),
        decisions_with_session=int(with_session or 0),
    )
    if report.decisions == 0:
        report.status = "no decisions"
        return report
    if report.decisions_with_session == 0:
        # Zeros would read as "sessions that never switch"; say what is missing instead.
        report.status = NO_SESSIONS
        return report
    if not from_log and _report_from_totals(session, pricing, report, **window):
        report.harm_by_tool_use = _harm_by_tool_use(session, **window)
        return report
    read_rows = _session_rows_from_log if from_log else _session_rows_from_totals
    rows = read_rows(session, router=router, segment=segment, since=since, until=until)
    everything = np.arange(rows.session.size)
    priced, unpriced = rows.priced(pricing)
    if unpriced:
        report.unpriced_models = unpriced
        report.sessions_unpriced = rows.sessions - int(np.unique(rows.session[priced]).size)
    # Every row carries its session's (first turn's) segment.
    segments = rows.segment
    if priced.size:
        report.cache = _cache_report(rows, priced, pricing)
        names = sorted(set(segments[priced].tolist()))
        for name in names:
            report.by_segment[name] = (
                report.cache
                if len(names) == 1
                else _cache_report(rows, priced[segments[priced] == name], pricing)
            )
    report.tool_loops = _tool_loops(rows, everything)
    for name in sorted(set(segments.tolist())):
        report.tool_loops_by_segment[name] = _tool_loops(rows, everything[segments == name])
    report.harm_by_tool_use = _harm_by_tool_use(
        session, router=router, segment=segment, since=since, until=until
    )
    return report


@dataclass(frozen=True)
class WindowFigures:
    """What the two session alert rules read over one window (decision time)."""

    sessions: int
    cache_cost_of_switching_usd: float
    gross_savings_usd: float
    loop_turns: int
    escalations_in_loop: int


def window_figures(
    *, session: Session, pricing: PricingTable, router: str, since: datetime, until: datetime
) -> WindowFigures:
    """The cache cost of switching and the gross savings of per-turn routing against the
    strongest-tier sticky policy (priced sessions only), and escalations inside tool loops
    over tool turns after the first, of the sessions with turns in [since, until)."""
    rows = _session_rows_from_log(session, router=router, segment=None, since=since, until=until)
    if not rows.session.size:
        return WindowFigures(0, 0.0, 0.0, 0, 0)
    priced, _ = rows.priced(pricing)
    totals = rows.values.sum(axis=0)
    loss = gross = 0.0
    if priced.size:
        cache = _cache_report(rows, priced, pricing)
        loss = cache.cache_cost_of_switching_usd
        gross = cache.strongest_tier.gross_savings_usd
    return WindowFigures(
        sessions=rows.sessions,
        cache_cost_of_switching_usd=loss,
        gross_savings_usd=gross,
        loop_turns=int(totals[_COL["loop_turns"]]),
        escalations_in_loop=int(totals[_COL["escalations_in_loop"]]),
    )
