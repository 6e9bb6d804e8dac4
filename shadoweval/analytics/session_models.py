"""Per-session running totals the aggregator keeps (analytics/session_totals.py) and
`GET /v1/sessions` sums: the turns of each session, their sums per (session, served
model), and how far the decision log has been read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, Index
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import BigIntId, UtcDateTime

# The summed columns of a session_total row; `turns` counts them all.
SESSION_SUMS = (
    "turns",
    "tier_switches",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "excess_cache_write_tokens",
    "tool_turns",
    "loop_turns",
    "escalations",
    "escalations_at_start",
    "escalations_in_loop",
)


def _big_integer() -> Any:
    return SQLField(sa_column=Column(BigInteger, nullable=False))


class SessionTurn(SQLModel, table=True):
    """One decision that carries a `session_id`, as the session figures read it.

    Derived from the decision when the aggregator first reads it (cache writes out of
    `extra.usage`, the tool-use test on the stored request), so recomputing a session
    reads these narrow rows, never the decision's JSON. Goes with its decision.
    """

    __tablename__ = "session_turn"
    __table_args__ = (
        Index("ix_session_turn_session", "router", "session_id", "ts", "decision_id"),
        Index("ix_session_turn_router_ts", "router", "ts"),
    )

    decision_id: int = SQLField(
        sa_column=Column(BigIntId, ForeignKey("decision.id", ondelete="CASCADE"), primary_key=True)
    )
    router: str = SQLField(max_length=200)
    session_id: str = SQLField(max_length=200)
    ts: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    segment_value: str = SQLField(max_length=200)
    served_model: str = SQLField(max_length=200)
    tier: str = SQLField(max_length=64)
    input_tokens: int = _big_integer()
    output_tokens: int = _big_integer()
    cache_read_tokens: int = _big_integer()
    cache_write_tokens: int = _big_integer()
    escalated: bool
    tool_turn: bool


class SessionTotal(SQLModel, table=True):
    """One session's turns on one served model, summed, with the per-turn counterfactual of
    `stats.sessions` (docs/architecture.md, Sessions).

    Recomputed from the session's turns whenever one arrives, so a turn that arrives late
    or out of order changes its neighbours' figures exactly as a recomputation would.
    `first_ts` and `segment_value` are the session's first turn's (same on every row of a
    session): a session belongs to the window and the segment of its first turn.
    """

    __tablename__ = "session_total"
    __table_args__ = (
        Index("ix_session_total_router_first_ts", "router", "first_ts"),
        # SQLite: rows stored in primary-key order, so a router's rows are read in sequence.
        {"sqlite_with_rowid": False},
    )

    router: str = SQLField(primary_key=True, max_length=200)
    session_id: str = SQLField(primary_key=True, max_length=200)
    served_model: str = SQLField(primary_key=True, max_length=200)
    first_ts: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    # The session's first turn's decision id: an integer key of the session, which the
    # reader groups rows by (cheaper than the session_id text).
    first_decision_id: int = _big_integer()
    segment_value: str = SQLField(max_length=200)
    first_turn: bool  # this model served the session's first turn
    turns: int
    tier_switches: int  # turns whose tier differs from the previous turn's
    input_tokens: int = _big_integer()
    output_tokens: int = _big_integer()
    cache_read_tokens: int = _big_integer()
    cache_write_tokens: int = _big_integer()
    excess_cache_write_tokens: int = _big_integer()
    tool_turns: int
    loop_turns: int  # tool turns after the session's first turn
    escalations: int
    escalations_at_start: int
    escalations_in_loop: int
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))


class SessionTotalsState(SQLModel, table=True):
    """How far the session aggregation has read the decision log for good (the model
    watcher's discipline, pool/models.py `ModelWatchState`): every decision with an id up
    to `last_decision_id` was committed when read; `pending_decision_id`, the highest id a
    pass saw at `pending_at` (database clock), becomes the watermark once
    `session_totals_settle_seconds` have passed."""

    __tablename__ = "session_totals_state"

    name: str = SQLField(primary_key=True, max_length=64)
    last_decision_id: int = SQLField(sa_column=Column(BigIntId, nullable=False))
    pending_decision_id: int | None = SQLField(default=None, sa_column=Column(BigIntId))
    pending_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    updated_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
