"""Batch mode: provider batches, and each shadow run's mode and batch.

Revision ID: 0012_batch_jobs
Revises: 0011_feedback_review
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012_batch_jobs"
down_revision = "0011_feedback_review"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "provider_batch",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("provider_batch_id", sa.String(200)),
        sa.Column("provider_status", sa.String(32)),
        sa.Column("items", json_type),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", utc),
        sa.Column("next_check_at", utc, nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("submitted_at", utc),
        sa.Column("ended_at", utc),
        sa.Column("collected_at", utc),
        sa.Column("counts", json_type),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("error_detail", sa.String(2000)),
        sa.Column("rejected_provider_ids", json_type),
        sa.UniqueConstraint("tag", name="uq_provider_batch_tag"),
        sa.UniqueConstraint("provider", "provider_batch_id", name="uq_provider_batch_provider_id"),
    )
    op.create_index("ix_provider_batch_due", "provider_batch", ["state", "next_check_at"])
    with op.batch_alter_table("shadow_run") as batch:
        batch.add_column(
            sa.Column("mode", sa.String(16), nullable=False, server_default="realtime")
        )
        batch.add_column(sa.Column("batch_id", big_id))


def downgrade() -> None:
    with op.batch_alter_table("shadow_run") as batch:
        batch.drop_column("batch_id")
        batch.drop_column("mode")
    op.drop_index("ix_provider_batch_due", table_name="provider_batch")
    op.drop_table("provider_batch")
