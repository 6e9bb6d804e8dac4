"""Decisions, their payloads, and API keys.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "decision",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("router_version", sa.String(200)),
        sa.Column("ts", utc, nullable=False),
        sa.Column("received_at", utc, nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("chosen_model", sa.String(200), nullable=False),
        sa.Column("served_model", sa.String(200), nullable=False),
        sa.Column("failover", sa.Boolean(), nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("candidates", json_type, nullable=False),
        sa.Column("router_score", sa.Float()),
        sa.Column("score_semantics", sa.String(64), nullable=False),
        sa.Column("threshold", sa.Float()),
        sa.Column("segment", json_type, nullable=False),
        sa.Column("segment_value", sa.String(200), nullable=False),
        sa.Column("features", json_type, nullable=False),
        sa.Column("input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.Column("cache_read_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("router_cost_usd", sa.Float()),
        sa.Column("router_latency_ms", sa.Float()),
        sa.Column("escalated_from", sa.String(64)),
        sa.Column("session_id", sa.String(200)),
        sa.Column("extra", json_type, nullable=False),
        sa.Column("has_request", sa.Boolean(), nullable=False),
        sa.Column("has_response", sa.Boolean(), nullable=False),
        sa.Column("inclusion_probability", sa.Float(), nullable=False),
        sa.Column("sampled", sa.Boolean(), nullable=False),
        sa.Column("payload_stored", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("router", "request_id", name="uq_decision_router_request_id"),
    )
    op.create_index("ix_decision_ts_id", "decision", ["ts", "id"])
    op.create_index("ix_decision_router_ts", "decision", ["router", "ts"])
    op.create_index("ix_decision_segment_value_ts", "decision", ["segment_value", "ts"])

    op.create_table(
        "decision_payload",
        sa.Column(
            "decision_id",
            big_id,
            sa.ForeignKey("decision.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("request", json_type),
        sa.Column("response", json_type),
        sa.Column("stored_at", utc, nullable=False),
    )

    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", json_type, nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("expires_at", utc),
        sa.Column("revoked_at", utc),
        sa.Column("last_used_at", utc),
        sa.Column("rotated_from", sa.String(32)),
    )
    op.create_index("ix_api_key_prefix", "api_key", ["prefix"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_api_key_prefix", table_name="api_key")
    op.drop_table("api_key")
    op.drop_table("decision_payload")
    op.drop_index("ix_decision_segment_value_ts", table_name="decision")
    op.drop_index("ix_decision_router_ts", table_name="decision")
    op.drop_index("ix_decision_ts_id", table_name="decision")
    op.drop_table("decision")
