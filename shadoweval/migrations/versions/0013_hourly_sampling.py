"""Sampling decided per closed decision-time period: periods, their plans, the cursor.

Revision ID: 0013_hourly_sampling
Revises: 0012_batch_jobs
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_hourly_sampling"
down_revision = "0012_batch_jobs"
branch_labels = None
depends_on = None

utc = sa.DateTime(timezone=True)
AWAITING = sa.text("sampling_skip_reason = 'awaiting_plan'")


def upgrade() -> None:
    op.create_table(
        "sampling_period",
        sa.Column("period_start", utc, primary_key=True),
        sa.Column("period_end", utc, nullable=False),
        sa.Column("labels_before", utc, nullable=False),
        sa.Column("closed_by", sa.String(16), nullable=False),
        sa.Column("strata", sa.Integer(), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("sampled", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("boost_refused", sa.Integer(), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("boost_reserved_usd", sa.Float(), nullable=False),
        sa.Column("reconciled", sa.Boolean(), nullable=False),
        sa.Column("actual_usd", sa.Float(), nullable=False),
        sa.Column("planned_at", utc, nullable=False),
    )
    op.create_table(
        "sampling_period_stratum",
        sa.Column("period_start", utc, primary_key=True),
        sa.Column("router", sa.String(200), primary_key=True),
        sa.Column("segment_value", sa.String(200), primary_key=True),
        sa.Column("tier", sa.String(64), primary_key=True),
        sa.Column("inclusion_probability", sa.Float(), nullable=False),
        sa.Column("is_reverse", sa.Boolean(), nullable=False),
        sa.Column("expected_traffic_per_day", sa.Float(), nullable=False),
        sa.Column("cost_per_sample_usd", sa.Float(), nullable=False),
        sa.Column("cost_learned_from", sa.Integer(), nullable=False),
        sa.Column("std_dev", sa.Float(), nullable=False),
        sa.Column("floor_samples_per_day", sa.Float(), nullable=False),
        sa.Column("expected_samples_per_day", sa.Float(), nullable=False),
        sa.Column("floor_shortfall_per_day", sa.Float(), nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("sampled", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
    )
    op.create_table(
        "sampling_cursor",
        sa.Column("name", sa.String(220), primary_key=True),
        sa.Column("next_period_start", utc, nullable=True),
        sa.Column("watermark_seen", utc, nullable=True),
        sa.Column("watermark_seen_at", utc, nullable=True),
    )
    for column in ("expected_samples_per_day", "floor_shortfall_per_day"):
        op.add_column(
            "sampling_stratum",
            sa.Column(column, sa.Float(), nullable=False, server_default="0"),
        )
    op.create_index(
        "ix_decision_awaiting_plan",
        "decision",
        ["ts"],
        postgresql_where=AWAITING,
        sqlite_where=AWAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_decision_awaiting_plan", table_name="decision")
    with op.batch_alter_table("sampling_stratum") as batch:
        batch.drop_column("floor_shortfall_per_day")
        batch.drop_column("expected_samples_per_day")
    op.drop_table("sampling_cursor")
    op.drop_table("sampling_period_stratum")
    op.drop_table("sampling_period")
