"""Sessions of a router's decision log: turns, tier switches, the prompt-cache cost of
switching, net savings against session-sticky routing, and escalations inside tool loops.

The log is aggregated in SQL, one row per (session, served model), with the per-turn
counterfactual of `stats/sessions.py` computed by window functions (LAG over the session
in (ts, id) order), so Python sees a row per session and model, never per decision. The
figures are in `stats/sessions.py`; docs/architecture.md ("Sessions") defines them.
Windows are on the decisions' `ts` (decision time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Table, Text, and_, case, func, literal, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.providers.pricing import PricingTable
from shadoweval.stats import rates
from shadoweval.stats import sessions as session_stats

DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
PAYLOAD_TABLE = cast(Table, DecisionPayload.__table__)  # type: ignore[attr-defined]
VERDICT_TABLE = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]

NO_SESSIONS = "no sessions logged"
# Keys under `usage` that carry cache writes (kept in extra.usage, as every unknown usage
# key is): ours, and Anthropic's own name for them.
CACHE_WRITE_KEYS = ("cache_write_tokens", "cache_creation_input_tokens")
# JSON markers of a request carrying tool calls or results: Anthropic content blocks
# (tool_use, tool_result), OpenAI assistant `tool_calls` and `role: tool` messages.
TOOL_MARKERS = ('"tool_use"', '"tool_result"', '"tool_calls"', '"role":"tool"', '"role": "tool"')
# A router may declare tool turns itself (the request payload is kept only when sampled).
TOOL_FEATURE = "has_tool_calls"


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
    decisions: int
    decisions_with_session: int
    unpriced_models: list[str] = Field(
        default_factory=list,
        description="Served models with no price: their sessions are left out of the USD figures.",
    )
    sessions_unpriced: int = 0
    cache: session_stats.SessionCacheReport | None = None
    by_segment: dict[str, session_stats.SessionCacheReport] = Field(default_factory=dict)
    tool_loops: session_stats.ToolLoopEscalations | None = None
    tool_loops_by_segment: dict[str, session_stats.ToolLoopEscalations] = Field(
        default_factory=dict
    )
    harm_by_tool_use: list[HarmByToolUse] = Field(default_factory=list)


def _cache_writes() -> ColumnElement[Any]:
    c = DECISION_TABLE.c
    return func.coalesce(
        *(c.extra[("usage", key)].as_integer() for key in CACHE_WRITE_KEYS), literal(0)
    )


def tool_turn_condition(payload_request: Any) -> ColumnElement[bool]:
    """A turn carries tool calls or results: declared by the router (`features.has_tool_calls`)
    or visible in the stored request payload."""
    c = DECISION_TABLE.c
    request_text = sql_cast(payload_request, Text)
    return or_(
        # As text, so a feature of any JSON type compares (a cast to boolean would fail on
        # PostgreSQL for a string such as "yes"): true is 'true' there and 1 on SQLite.
        sql_cast(c.features[TOOL_FEATURE].as_string(), Text).in_(("true", "1")),
        *(request_text.contains(marker, autoescape=True) for marker in TOOL_MARKERS),
    )


def _window(query: Any, *, router: str, segment: str | None, since: Any, until: Any) -> Any:
    c = DECISION_TABLE.c
    query = query.where(c.router == router)
    if segment is not None:
        query = query.where(c.segment_value == segment)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    return query


# The summed columns of a (session, model) row, in the order `_Rows.values` holds them.
_COLUMNS = (
    "first_turn",
    "turns",
    "tier_switches",
    "input_tokens",
    "output_tokens",
    "cache_read",
    "cache_write",
    "excess",
    "tool_turns",
    "loop_turns",
    "escalations",
    "esc_start",
    "esc_loop",
)
_COL = {name: i for i, name in enumerate(_COLUMNS)}


@dataclass
class _Rows:
    session: list[str]
    segment: list[str | None]
    model: list[str]
    values: np.ndarray[Any, np.dtype[np.float64]]


def _session_rows(
    session: Session, *, router: str, segment: str | None, since: Any, until: Any
) -> _Rows:
    """One row per (session, served model): sums of the turns and of their counterfactual."""
    c = DECISION_TABLE.c
    p = PAYLOAD_TABLE.c
    # Three levels, so that each expression is computed once per turn: the turn's columns,
    # then the previous turn's (LAG over the session in (ts, id) order), then the sums.
    base = _window(
        select(
            c.id.label("id"),
            c.ts.label("ts"),
            c.session_id.label("session_id"),
            c.segment_value.label("segment_value"),
            c.served_model.label("model"),
            c.tier.label("tier"),
            func.coalesce(c.input_tokens, 0).label("input_tokens"),
            func.coalesce(c.output_tokens, 0).label("output_tokens"),
            func.coalesce(c.cache_read_tokens, 0).label("cache_read"),
            _cache_writes().label("cache_write"),
            case((c.escalated_from.is_not(None), 1), else_=0).label("escalated"),
            case((tool_turn_condition(p.request), 1), else_=0).label("tool"),
        )
        .select_from(DECISION_TABLE.outerjoin(PAYLOAD_TABLE, p.decision_id == c.id))
        .where(c.session_id.is_not(None)),
        router=router,
        segment=segment,
        since=since,
        until=until,
    ).subquery("base")
    b = base.c

    def previous(column: Any) -> Any:
        return func.lag(column).over(partition_by=b.session_id, order_by=(b.ts, b.id))

    turns = select(
        b.session_id,
        b.segment_value,
        b.model,
        b.tier,
        b.input_tokens,
        b.output_tokens,
        b.cache_read,
        b.cache_write,
        b.escalated,
        b.tool,
        previous(b.model).label("prev_model"),
        previous(b.tier).label("prev_tier"),
        previous(b.cache_read + b.cache_write).label("prev_cached"),
    ).subquery("turns")
    t = turns.c
    switched = and_(t.prev_model.is_not(None), t.prev_model != t.model)
    cached = t.cache_read + t.cache_write
    growth = case((cached > t.prev_cached, cached - t.prev_cached), else_=0)
    sticky_write = case((and_(switched, t.cache_write > growth), growth), else_=t.cache_write)
    first = t.prev_model.is_(None)  # served_model is never NULL
    later_tool = and_(t.tool == 1, t.prev_model.is_not(None))
    sums: dict[str, Any] = {
        "first_turn": func.sum(case((first, 1), else_=0)),
        "turns": func.count(),
        "tier_switches": func.sum(
            case((and_(t.prev_tier.is_not(None), t.prev_tier != t.tier), 1), else_=0)
        ),
        "input_tokens": func.sum(t.input_tokens),
        "output_tokens": func.sum(t.output_tokens),
        "cache_read": func.sum(t.cache_read),
        "cache_write": func.sum(t.cache_write),
        "excess": func.sum(t.cache_write - sticky_write),
        "tool_turns": func.sum(t.tool),
        "loop_turns": func.sum(case((later_tool, 1), else_=0)),
        "escalations": func.sum(t.escalated),
        "esc_start": func.sum(case((and_(first, t.escalated == 1), 1), else_=0)),
        "esc_loop": func.sum(case((and_(later_tool, t.escalated == 1), 1), else_=0)),
    }
    query = select(
        t.session_id,
        t.model,
        func.max(case((first, t.segment_value))).label("first_segment"),
        *(sums[name].label(name) for name in _COLUMNS),
    ).group_by(t.session_id, t.model)
    rows = [tuple(row) for row in session.execute(query)]
    # Columns at once, not attribute by attribute: a million turns are ~100k rows here.
    labels = list(zip(*(row[:3] for row in rows), strict=True)) or [(), (), ()]
    values = np.array([row[3:] for row in rows], dtype=np.float64).reshape(len(rows), len(_COLUMNS))
    return _Rows(
        session=[str(name) for name in labels[0]],
        segment=list(labels[2]),
        model=[str(name) for name in labels[1]],
        values=np.nan_to_num(values),
    )


def _cache_report(
    rows: _Rows, index: np.ndarray[Any, np.dtype[np.intp]], pricing: PricingTable
) -> session_stats.SessionCacheReport:
    v = rows.values[index]
    models = np.asarray(rows.model, dtype=object)[index]
    # One price lookup per model, not per row.
    names, code = np.unique(models.astype(str), return_inverse=True)
    table = [pricing.price_for(str(name)) for name in names]

    def per_row(kind: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([getattr(price, kind) for price in table], dtype=np.float64)[code]

    return session_stats.session_cache_report(
        session=np.asarray(rows.session, dtype=object)[index].astype(str),
        model=names[code],
        prices=session_stats.Prices.of(
            per_row("input"), per_row("output"), per_row("cache_read"), per_row("cache_write")
        ),
        first_turn=v[:, _COL["first_turn"]] > 0,
        turns=v[:, _COL["turns"]],
        tier_switches=v[:, _COL["tier_switches"]],
        input_tokens=v[:, _COL["input_tokens"]],
        output_tokens=v[:, _COL["output_tokens"]],
        cache_read_tokens=v[:, _COL["cache_read"]],
        cache_write_tokens=v[:, _COL["cache_write"]],
        excess_cache_write_tokens=v[:, _COL["excess"]],
    )


def _tool_loops(
    rows: _Rows, index: np.ndarray[Any, np.dtype[np.intp]]
) -> session_stats.ToolLoopEscalations:
    v = rows.values[index].sum(axis=0)
    loop_share, loop_ci = session_stats.mid_loop_rate(
        int(v[_COL["esc_loop"]]), int(v[_COL["loop_turns"]])
    )
    escalations = int(v[_COL["escalations"]])
    return session_stats.ToolLoopEscalations(
        turns=int(v[_COL["turns"]]),
        tool_turns=int(v[_COL["tool_turns"]]),
        escalations=escalations,
        at_conversation_start=int(v[_COL["esc_start"]]),
        inside_tool_loop=int(v[_COL["esc_loop"]]),
        elsewhere=escalations - int(v[_COL["esc_start"]]) - int(v[_COL["esc_loop"]]),
        mid_loop_share=loop_share,
        mid_loop_share_ci95=loop_ci,
    )


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
) -> SessionsReport:
    """Session figures of one router over [since, until) of decision time (`ts`)."""
    c = DECISION_TABLE.c
    counts = session.execute(
        _window(
            select(func.count(), func.count(c.session_id)),
            router=router,
            segment=segment,
            since=since,
            until=until,
        )
    ).one()
    report = SessionsReport(
        router=router,
        segment=segment,
        since=since,
        until=until,
        status="ok",
        decisions=int(counts[0]),
        decisions_with_session=int(counts[1]),
    )
    if report.decisions == 0:
        report.status = "no decisions"
        return report
    if report.decisions_with_session == 0:
        # Zeros would read as "sessions that never switch"; say what is missing instead.
        report.status = NO_SESSIONS
        return report
    rows = _session_rows(session, router=router, segment=segment, since=since, until=until)
    everything = np.arange(len(rows.session))
    unpriced = sorted({m for m in rows.model if not pricing.knows(m)})
    if unpriced:
        bad_sessions = {s for s, m in zip(rows.session, rows.model, strict=True) if m in unpriced}
        priced = np.array(
            [i for i, s in enumerate(rows.session) if s not in bad_sessions], dtype=np.intp
        )
        report.unpriced_models = unpriced
        report.sessions_unpriced = len(bad_sessions)
    else:
        priced = everything
    session_segment: dict[str, str] = {}
    for name, seg in zip(rows.session, rows.segment, strict=True):
        if seg is not None:
            session_segment[name] = seg
    segments = np.array([session_segment.get(s, "") for s in rows.session])
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
    rows = _session_rows(session, router=router, segment=None, since=since, until=until)
    if not rows.session:
        return WindowFigures(0, 0.0, 0.0, 0, 0)
    unpriced = {s for s, m in zip(rows.session, rows.model, strict=True) if not pricing.knows(m)}
    priced = np.array([i for i, s in enumerate(rows.session) if s not in unpriced], dtype=np.intp)
    totals = rows.values.sum(axis=0)
    loss = gross = 0.0
    if priced.size:
        cache = _cache_report(rows, priced, pricing)
        loss = cache.cache_cost_of_switching_usd
        gross = cache.strongest_tier.gross_savings_usd
    return WindowFigures(
        sessions=len(set(rows.session)),
        cache_cost_of_switching_usd=loss,
        gross_savings_usd=gross,
        loop_turns=int(totals[_COL["loop_turns"]]),
        escalations_in_loop=int(totals[_COL["esc_loop"]]),
    )
