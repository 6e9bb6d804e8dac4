"""Append-only traffic deltas written by ingest, folded into the hourly snapshots by a job.

Revision ID: 0006_ingest_traffic_deltas
Revises: 0005_payload_redaction
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_ingest_traffic_deltas"
down_revision = "0005_payload_redaction"
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TRAFFIC_COUNTS = (
    "decisions",
    "sampled",
    "budget_refused",
    "with_payload",
    "failover",
    "fallback",
    "escalated",
)


def upgrade() -> None:
    op.create_table(
        "traffic_delta",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("segment_value", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in TRAFFIC_COUNTS),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("router_cost_usd", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    # Deltas not folded yet would be lost: fold them into the snapshots first.
    sums_columns = (*TRAFFIC_COUNTS, "cost_usd", "router_cost_usd")
    columns = ", ".join(sums_columns)
    sums = ", ".join(f"SUM({name})" for name in sums_columns)
    updates = ", ".join(
        f"{name} = traffic_window_snapshot.{name} + excluded.{name}" for name in sums_columns
    )
    op.execute(
        f"INSERT INTO traffic_window_snapshot (router, segment_value, tier, window_start, {columns}) "  # noqa: S608
        f"SELECT router, segment_value, tier, window_start, {sums} FROM traffic_delta "
        # SQLite parses ON CONFLICT after INSERT … SELECT only when the SELECT has a WHERE.
        "WHERE 1 = 1 GROUP BY router, segment_value, tier, window_start "
        f"ON CONFLICT (router, segment_value, tier, window_start) DO UPDATE SET {updates}"
    )
    op.drop_table("traffic_delta")
