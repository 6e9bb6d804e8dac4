"""Quality-drop detector state for the GLR change-point statistic.

The detector no longer collects a baseline first: every label is monitored, so the rows
the Shiryaev–Roberts detector left count their reference labels as consumed labels too.
Downgrade drops the new columns and leaves those counts as they are.

Revision ID: 0014_change_point_detector
Revises: 0013_hourly_sampling
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014_change_point_detector"
down_revision = "0013_hourly_sampling"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
utc = sa.DateTime(timezone=True)

NEW_COLUMNS = (
    "statistic",
    "threshold",
    "post_change_labels",
    "post_change_harms",
    "change_ts",
    "recent_labels",
    "recent_ts",
)


def upgrade() -> None:
    with op.batch_alter_table("sequential_state") as batch:
        batch.add_column(sa.Column("statistic", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("threshold", sa.Float()))
        batch.add_column(
            sa.Column("post_change_labels", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("post_change_harms", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("change_ts", utc))
        batch.add_column(sa.Column("recent_labels", sa.Text(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("recent_ts", json_type, nullable=False, server_default=sa.text("'[]'"))
        )
    op.execute(
        "UPDATE sequential_state SET labels = labels + baseline_labels, "
        "positives = positives + baseline_positives"
    )


def downgrade() -> None:
    with op.batch_alter_table("sequential_state") as batch:
        for column in reversed(NEW_COLUMNS):
            batch.drop_column(column)
