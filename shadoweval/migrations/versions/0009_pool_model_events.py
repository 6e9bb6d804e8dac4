"""Candidate pool per router (router_model) and the model watcher's watermark.

Revision ID: 0009_pool_model_events
Revises: 0008_alert_deliveries
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_pool_model_events"
down_revision = "0008_alert_deliveries"
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "router_model",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("first_seen_ts", utc, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("updated_at", utc, nullable=False),
        sa.UniqueConstraint("router", "tier", "model", name="uq_router_model_router_tier_model"),
    )
    op.create_table(
        "model_watch_state",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("last_decision_id", big_id, nullable=False),
        sa.Column("pending_decision_id", big_id),
        sa.Column("pending_at", utc),
        sa.Column("updated_at", utc, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_watch_state")
    op.drop_table("router_model")
