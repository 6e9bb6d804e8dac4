"""Alerts: rule sets put through the API, one alert row per firing episode, and the
indexes that bound the evaluator's queries on decision and shadow_run.

Revision ID: 0007_alerts
Revises: 0006_ingest_traffic_deltas
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_alerts"
down_revision = "0006_ingest_traffic_deltas"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_rule_set",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("rules", json_type, nullable=False),
        sa.Column("updated_by", sa.String(100)),
        sa.Column("created_at", utc, nullable=False),
    )
    op.create_table(
        "alert",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("dedup_key", sa.String(600), nullable=False),
        sa.Column("open_key", sa.String(600)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("router", sa.String(200)),
        sa.Column("segment", sa.String(200)),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("summary", sa.String(2000), nullable=False),
        sa.Column("numbers", json_type, nullable=False),
        sa.Column("dashboard_url", sa.String(2000)),
        sa.Column("runbook_url", sa.String(2000)),
        sa.Column("started_at", utc, nullable=False),
        sa.Column("updated_at", utc, nullable=False),
        sa.Column("resolved_at", utc),
        sa.Column("resolve_reason", sa.String(200)),
        sa.Column("last_notified_at", utc),
        sa.Column("notifications", sa.Integer(), nullable=False),
        sa.Column("acknowledged_at", utc),
        sa.Column("acknowledged_by", sa.String(100)),
        sa.Column("silenced_until", utc),
        sa.UniqueConstraint("open_key", name="uq_alert_open_key"),
    )
    op.create_index("ix_alert_dedup_started", "alert", ["dedup_key", "started_at"])
    op.create_index("ix_alert_state", "alert", ["state", "updated_at"])
    # Bounded evaluator queries (shadow_backlog, provider_error_rate).
    sampled = (
        sa.text("sampled IS true")
        if op.get_bind().dialect.name == "postgresql"
        else (sa.text("sampled IS 1"))
    )
    op.create_index(
        "ix_decision_sampled_ts",
        "decision",
        ["ts"],
        postgresql_where=sampled,
        sqlite_where=sampled,
    )
    op.create_index("ix_shadow_run_finished", "shadow_run", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_run_finished", table_name="shadow_run")
    op.drop_index("ix_decision_sampled_ts", table_name="decision")
    op.drop_index("ix_alert_state", table_name="alert")
    op.drop_index("ix_alert_dedup_started", table_name="alert")
    op.drop_table("alert")
    op.drop_table("alert_rule_set")
