"""Per-session running totals: the session turns, their sums per (session, served model),
and the aggregator's watermark over the decision log.

No backfill here: the aggregator reads the log from decision id 0 on its first passes.

Revision ID: 0019_session_totals
Revises: 0018_gate_run_judge
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_session_totals"
down_revision = "0018_gate_run_judge"
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "session_turn",
        sa.Column(
            "decision_id",
            big_id,
            sa.ForeignKey("decision.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("router", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=200), nullable=False),
        sa.Column("ts", utc, nullable=False),
        sa.Column("segment_value", sa.String(length=200), nullable=False),
        sa.Column("served_model", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("tool_turn", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_session_turn_session", "session_turn", ["router", "session_id", "ts", "decision_id"]
    )
    op.create_index("ix_session_turn_router_ts", "session_turn", ["router", "ts"])
    op.create_table(
        "session_total",
        sa.Column("router", sa.String(length=200), primary_key=True),
        sa.Column("session_id", sa.String(length=200), primary_key=True),
        sa.Column("served_model", sa.String(length=200), primary_key=True),
        sa.Column("first_ts", utc, nullable=False),
        sa.Column("first_decision_id", sa.BigInteger(), nullable=False),
        sa.Column("segment_value", sa.String(length=200), nullable=False),
        sa.Column("first_turn", sa.Boolean(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("tier_switches", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("excess_cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("tool_turns", sa.Integer(), nullable=False),
        sa.Column("loop_turns", sa.Integer(), nullable=False),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("escalations_at_start", sa.Integer(), nullable=False),
        sa.Column("escalations_in_loop", sa.Integer(), nullable=False),
        sa.Column("updated_at", utc, nullable=False),
        # SQLite: rows stored in primary-key order, so a router's rows are read in sequence.
        sqlite_with_rowid=False,
    )
    op.create_index("ix_session_total_router_first_ts", "session_total", ["router", "first_ts"])
    op.create_table(
        "session_totals_state",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("last_decision_id", big_id, nullable=False),
        sa.Column("pending_decision_id", big_id),
        sa.Column("pending_at", utc),
        sa.Column("updated_at", utc, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("session_totals_state")
    op.drop_index("ix_session_total_router_first_ts", table_name="session_total")
    op.drop_table("session_total")
    op.drop_index("ix_session_turn_router_ts", table_name="session_turn")
    op.drop_index("ix_session_turn_session", table_name="session_turn")
    op.drop_table("session_turn")
