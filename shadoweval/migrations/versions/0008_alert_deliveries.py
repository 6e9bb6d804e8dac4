"""Alert outbox: delivery rows per (notification, channel) and their attempts.

Revision ID: 0008_alert_deliveries
Revises: 0007_alerts
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_alert_deliveries"
down_revision = "0007_alerts"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_delivery",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("payload", json_type, nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("alert_id", big_id),
        sa.Column("event_id", big_id, sa.ForeignKey("event.id", ondelete="SET NULL")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", utc, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", utc),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("delivered_at", utc),
        sa.Column("failed_at", utc),
        sa.Column("last_error", sa.String(2000)),
        sa.UniqueConstraint("event_id", "channel", name="uq_alert_delivery_event_channel"),
    )
    op.create_index("ix_alert_delivery_claim", "alert_delivery", ["status", "next_attempt_at"])
    op.create_index("ix_alert_delivery_alert", "alert_delivery", ["alert_id"])
    op.create_index("ix_alert_delivery_key", "alert_delivery", ["dedup_key", "channel", "status"])
    op.create_table(
        "alert_delivery_attempt",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            big_id,
            sa.ForeignKey("alert_delivery.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", utc, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("error", sa.String(2000)),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("retry_at", utc),
    )
    op.create_index(
        "ix_alert_delivery_attempt_delivery",
        "alert_delivery_attempt",
        ["delivery_id", "attempt"],
    )


def downgrade() -> None:
    op.drop_index("ix_alert_delivery_attempt_delivery", table_name="alert_delivery_attempt")
    op.drop_table("alert_delivery_attempt")
    op.drop_index("ix_alert_delivery_key", table_name="alert_delivery")
    op.drop_index("ix_alert_delivery_alert", table_name="alert_delivery")
    op.drop_index("ix_alert_delivery_claim", table_name="alert_delivery")
    op.drop_table("alert_delivery")
