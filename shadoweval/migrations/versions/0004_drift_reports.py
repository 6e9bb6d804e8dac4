"""Drift reports: Evidently results and HTML per router and window.

Revision ID: 0004_drift_reports
Revises: 0003_sampling_snapshots_events
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_drift_reports"
down_revision = "0003_sampling_snapshots_events"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "drift_report",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("window_start", utc, nullable=False),
        sa.Column("window_end", utc, nullable=False),
        sa.Column("reference_start", utc, nullable=False),
        sa.Column("reference_end", utc, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("dataset_drift", sa.Boolean(), nullable=False),
        sa.Column("drifted_share", sa.Float(), nullable=False),
        sa.Column("result", json_type, nullable=False),
        sa.Column("report_html", sa.Text(), nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.UniqueConstraint("router", "window_start", "window_end", name="uq_drift_report_window"),
    )


def downgrade() -> None:
    op.drop_table("drift_report")
