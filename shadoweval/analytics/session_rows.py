"""A router's sessions as rows per (session, served model), read from the decision log or
from the running totals, and the cache and tool-loop figures of a set of those rows
(analytics/sessions.py builds the report from them). Windows are on decision time (`ts`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from shadoweval.analytics.session_models import SESSION_SUMS, SessionTotal, SessionTurn
from shadoweval.analytics.session_sql import decision_turns, session_sums
from shadoweval.ingest.models import DECISION_TABLE
from shadoweval.providers.pricing import PricingTable
from shadoweval.sql import table_of
from shadoweval.stats import sessions as session_stats

TOTAL_TABLE = table_of(SessionTotal)
TURN_TABLE = table_of(SessionTurn)


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


def _turn_window(query: Any, *, router: str, segment: str | None, since: Any, until: Any) -> Any:
    """`_window` on the aggregated turns (`session_turn`)."""
    c = TURN_TABLE.c
    query = query.select_from(TURN_TABLE).where(c.router == router)
    if segment is not None:
        query = query.where(c.segment_value == segment)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    return query


# The columns of a (session, model) row, in the order `_Rows.values` holds them.
_COLUMNS = ("first_turn", *SESSION_SUMS)


_COL = {name: i for i, name in enumerate(_COLUMNS)}


@dataclass
class _Rows:
    """Rows per (session, served model), as columns: the session as an integer code, its
    (first turn's) segment and the model as text, and the `_COLUMNS` values."""

    session: np.ndarray[Any, np.dtype[np.intp]]
    segment: np.ndarray[Any, np.dtype[np.str_]]
    model: np.ndarray[Any, np.dtype[np.str_]]
    values: np.ndarray[Any, np.dtype[np.float64]]

    @property
    def sessions(self) -> int:
        return int(np.unique(self.session).size)

    def priced(self, pricing: PricingTable) -> tuple[np.ndarray[Any, np.dtype[np.intp]], list[str]]:
        """The rows of the sessions whose every model has a price, and the unpriced models."""
        names = np.unique(self.model)
        unpriced = [str(name) for name in names if not pricing.knows(str(name))]
        if not unpriced:
            return np.arange(self.session.size), []
        bad = np.unique(self.session[np.isin(self.model, unpriced)])
        return np.flatnonzero(~np.isin(self.session, bad)), unpriced


def _rows(session: Session, query: Any) -> _Rows:
    """(first_decision_id, served_model, segment_value, *_COLUMNS) rows, read as columns: a
    million turns are ~200k rows here, and building a Row object per row would dominate."""
    result = session.connection().execute(query)
    # The DBAPI's tuples, without SQLAlchemy's Row objects (no column here needs a result
    # processor: text, integers, and booleans that numpy reads as 0/1 on both databases).
    rows = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    table = np.array(rows, dtype=object).reshape(len(rows), 3 + len(_COLUMNS))
    # The session's first decision id is its key: integers, cheaper to group than text.
    _, session_code = np.unique(table[:, 0].astype(np.int64), return_inverse=True)
    return _Rows(
        session=session_code.astype(np.intp),
        segment=np.array([name or "" for name in table[:, 2]], dtype=str),
        model=table[:, 1].astype(str),
        values=table[:, 3:].astype(np.float64),
    )


def _session_rows_from_log(
    session: Session, *, router: str, segment: str | None, since: Any, until: Any
) -> _Rows:
    """Per (session, model) from the decision log: the turns with `ts` in the window."""
    turns = _window(
        decision_turns(), router=router, segment=segment, since=since, until=until
    ).subquery("turns")
    s = session_sums(turns).subquery("sums")
    query = select(
        s.c.first_decision_id,
        s.c.served_model,
        s.c.segment_value,
        *(s.c[name] for name in _COLUMNS),
    )
    return _rows(session, query)


def _session_rows_from_totals(
    session: Session, *, router: str, segment: str | None, since: Any, until: Any
) -> _Rows:
    """Per (session, model) from the running totals: sessions whose first turn is in the
    window (and segment)."""
    c = TOTAL_TABLE.c
    query = select(
        c.first_decision_id, c.served_model, c.segment_value, *(c[name] for name in _COLUMNS)
    )
    return _rows(
        session, _totals_window(query, router=router, segment=segment, since=since, until=until)
    )


def _totals_window(query: Any, *, router: str, segment: str | None, since: Any, until: Any) -> Any:
    """The running totals of the sessions whose first turn is in the window (and segment)."""
    c = TOTAL_TABLE.c
    query = query.where(c.router == router)
    if segment is not None:
        query = query.where(c.segment_value == segment)
    if since is not None:
        query = query.where(c.first_ts >= since)
    if until is not None:
        query = query.where(c.first_ts < until)
    return query


def _cache_report(
    rows: _Rows, index: np.ndarray[Any, np.dtype[np.intp]], pricing: PricingTable
) -> session_stats.SessionCacheReport:
    v = rows.values[index]
    # One price lookup per model, not per row.
    names, code = np.unique(rows.model[index], return_inverse=True)
    table = [pricing.price_for(str(name)) for name in names]

    def per_row(kind: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([getattr(price, kind) for price in table], dtype=np.float64)[code]

    return session_stats.session_cache_report(
        session=rows.session[index],
        model=names[code],
        prices=session_stats.Prices.of(
            per_row("input"), per_row("output"), per_row("cache_read"), per_row("cache_write")
        ),
        first_turn=v[:, _COL["first_turn"]] > 0,
        turns=v[:, _COL["turns"]],
        tier_switches=v[:, _COL["tier_switches"]],
        input_tokens=v[:, _COL["input_tokens"]],
        output_tokens=v[:, _COL["output_tokens"]],
        cache_read_tokens=v[:, _COL["cache_read_tokens"]],
        cache_write_tokens=v[:, _COL["cache_write_tokens"]],
        excess_cache_write_tokens=v[:, _COL["excess_cache_write_tokens"]],
    )


def _tool_loops(
    rows: _Rows, index: np.ndarray[Any, np.dtype[np.intp]]
) -> session_stats.ToolLoopEscalations:
    return _tool_loops_of(rows.values[index].sum(axis=0))


def _tool_loops_of(v: np.ndarray[Any, np.dtype[np.float64]]) -> session_stats.ToolLoopEscalations:
    """Tool-loop escalations from sums of the `_COLUMNS`."""
    loop_share, loop_ci = session_stats.mid_loop_rate(
        int(v[_COL["escalations_in_loop"]]), int(v[_COL["loop_turns"]])
    )
    escalations = int(v[_COL["escalations"]])
    at_start = int(v[_COL["escalations_at_start"]])
    in_loop = int(v[_COL["escalations_in_loop"]])
    return session_stats.ToolLoopEscalations(
        turns=int(v[_COL["turns"]]),
        tool_turns=int(v[_COL["tool_turns"]]),
        escalations=escalations,
        at_conversation_start=at_start,
        inside_tool_loop=in_loop,
        elsewhere=escalations - at_start - in_loop,
        mid_loop_share=loop_share,
        mid_loop_share_ci95=loop_ci,
    )
