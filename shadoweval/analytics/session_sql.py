"""The SQL both session paths share: a router's turns as rows (`decision_turns`) and one
row per (session, served model) with the sums of its turns and of their per-turn
counterfactual (`session_sums`, a LAG over the session in (ts, id) order). Read by the
report (`sessions.py`) and the running totals (`session_totals.py`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, and_, case, false, func, literal, or_, select, true
from sqlalchemy import cast as sql_cast
from sqlalchemy.sql.elements import ColumnElement

from shadoweval.analytics.session_models import SESSION_SUMS
from shadoweval.ingest.models import DECISION_TABLE, PAYLOAD_TABLE

# Keys under `usage` that carry cache writes (kept in extra.usage, as every unknown usage
# key is): ours, and Anthropic's own name for them.
CACHE_WRITE_KEYS = ("cache_write_tokens", "cache_creation_input_tokens")


# JSON markers of a request carrying tool calls or results: Anthropic content blocks
# (tool_use, tool_result), OpenAI assistant `tool_calls` and `role: tool` messages.
TOOL_MARKERS = ('"tool_use"', '"tool_result"', '"tool_calls"', '"role":"tool"', '"role": "tool"')


# A router may declare tool turns itself (the request payload is kept only when sampled).
TOOL_FEATURE = "has_tool_calls"


def cache_writes() -> ColumnElement[Any]:
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


def decision_turns() -> Any:
    """One row per decision with a session: the columns the session figures read, named as
    `session_turn`'s (analytics/session_models.py), from the decision and its payload."""
    c = DECISION_TABLE.c
    p = PAYLOAD_TABLE.c
    return (
        select(
            c.id.label("decision_id"),
            c.router.label("router"),
            c.session_id.label("session_id"),
            c.ts.label("ts"),
            c.segment_value.label("segment_value"),
            c.served_model.label("served_model"),
            c.tier.label("tier"),
            func.coalesce(c.input_tokens, 0).label("input_tokens"),
            func.coalesce(c.output_tokens, 0).label("output_tokens"),
            func.coalesce(c.cache_read_tokens, 0).label("cache_read_tokens"),
            cache_writes().label("cache_write_tokens"),
            # CASE, not the bare condition: a comparison with a missing feature is NULL.
            case((c.escalated_from.is_not(None), true()), else_=false()).label("escalated"),
            case((tool_turn_condition(p.request), true()), else_=false()).label("tool_turn"),
        )
        .select_from(DECISION_TABLE.outerjoin(PAYLOAD_TABLE, p.decision_id == c.id))
        .where(c.session_id.is_not(None))
    )


def session_sums(turns: Any) -> Any:
    """One row per (router, session, served model) of a subquery of turns (the columns of
    `decision_turns`): the session's first ts and segment, whether the model served its
    first turn, and the sums of `SESSION_SUMS` with the per-turn counterfactual.

    The first turn, the previous turn and the tier switches are those of the turns the
    subquery holds (a window of the log, or a session's every turn)."""
    b = turns.c
    session_key = (b.router, b.session_id)
    in_order = (b.ts, b.decision_id)

    def previous(column: Any) -> Any:
        return func.lag(column).over(partition_by=session_key, order_by=in_order)

    # Three levels, so that each expression is computed once per turn: the turn's columns,
    # then the previous turn's (LAG over the session in (ts, id) order), then the sums.
    ordered = select(
        b.router,
        b.session_id,
        b.served_model,
        b.tier,
        b.input_tokens,
        b.output_tokens,
        b.cache_read_tokens,
        b.cache_write_tokens,
        case((b.escalated, 1), else_=0).label("escalated"),
        case((b.tool_turn, 1), else_=0).label("tool"),
        func.min(b.ts).over(partition_by=session_key).label("first_ts"),
        func.first_value(b.segment_value)
        .over(partition_by=session_key, order_by=in_order)
        .label("first_segment"),
        func.first_value(b.decision_id)
        .over(partition_by=session_key, order_by=in_order)
        .label("first_decision_id"),
        previous(b.served_model).label("prev_model"),
        previous(b.tier).label("prev_tier"),
        previous(b.cache_read_tokens + b.cache_write_tokens).label("prev_cached"),
    ).subquery("ordered")
    t = ordered.c
    switched = and_(t.prev_model.is_not(None), t.prev_model != t.served_model)
    cached = t.cache_read_tokens + t.cache_write_tokens
    growth = case((cached > t.prev_cached, cached - t.prev_cached), else_=0)
    sticky_write = case(
        (and_(switched, t.cache_write_tokens > growth), growth), else_=t.cache_write_tokens
    )
    first = t.prev_model.is_(None)  # served_model is never NULL
    later_tool = and_(t.tool == 1, t.prev_model.is_not(None))
    sums: dict[str, Any] = {
        "turns": func.count(),
        "tier_switches": func.sum(
            case((and_(t.prev_tier.is_not(None), t.prev_tier != t.tier), 1), else_=0)
        ),
        "input_tokens": func.sum(t.input_tokens),
        "output_tokens": func.sum(t.output_tokens),
        "cache_read_tokens": func.sum(t.cache_read_tokens),
        "cache_write_tokens": func.sum(t.cache_write_tokens),
        "excess_cache_write_tokens": func.sum(t.cache_write_tokens - sticky_write),
        "tool_turns": func.sum(t.tool),
        "loop_turns": func.sum(case((later_tool, 1), else_=0)),
        "escalations": func.sum(t.escalated),
        "escalations_at_start": func.sum(case((and_(first, t.escalated == 1), 1), else_=0)),
        "escalations_in_loop": func.sum(case((and_(later_tool, t.escalated == 1), 1), else_=0)),
    }
    return select(
        t.router,
        t.session_id,
        t.served_model,
        func.max(t.first_ts).label("first_ts"),
        func.max(t.first_decision_id).label("first_decision_id"),
        func.max(t.first_segment).label("segment_value"),
        case((func.sum(case((first, 1), else_=0)) > 0, true()), else_=false()).label("first_turn"),
        *(sums[name].label(name) for name in SESSION_SUMS),
    ).group_by(t.router, t.session_id, t.served_model)
