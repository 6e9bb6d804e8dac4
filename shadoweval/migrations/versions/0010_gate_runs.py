"""Release gate: gate runs and one leased item per replayed request.

Revision ID: 0010_gate_runs
Revises: 0009_pool_model_events
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_gate_runs"
down_revision = "0009_pool_model_events"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def _lease_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", utc),
        sa.Column("next_attempt_at", utc, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "gate_run",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("candidate_model", sa.String(200), nullable=False),
        sa.Column("replaced_model", sa.String(200), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("max_drop", sa.Float(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("segments", json_type, nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(100)),
        *_lease_columns(),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("planned_at", utc),
        sa.Column("finished_at", utc),
        sa.Column("items_total", sa.Integer(), nullable=False),
        sa.Column("items_done", sa.Integer(), nullable=False),
        sa.Column("items_error", sa.Integer(), nullable=False),
        sa.Column("segment_traffic", json_type, nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("max_cost_usd", sa.Float()),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("results", json_type),
        sa.Column("report_markdown", sa.Text()),
        sa.Column("junit_xml", sa.Text()),
        sa.Column("error", sa.String(2000)),
    )
    op.create_index("ix_gate_run_claim", "gate_run", ["status", "next_attempt_at"])
    op.create_index("ix_gate_run_created", "gate_run", ["created_at", "id"])
    op.create_table(
        "gate_item",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "gate_run_id",
            big_id,
            sa.ForeignKey("gate_run.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "decision_id",
            big_id,
            sa.ForeignKey("decision.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("segment_value", sa.String(200), nullable=False),
        *_lease_columns(),
        sa.Column("finished_at", utc),
        sa.Column("candidate_answer", sa.Text()),
        sa.Column("replaced_answer", sa.Text()),
        sa.Column("replaced_reused", sa.Boolean(), nullable=False),
        sa.Column("candidate_cost_usd", sa.Float(), nullable=False),
        sa.Column("replaced_cost_usd", sa.Float(), nullable=False),
        sa.Column("judge_cost_usd", sa.Float(), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("order_candidate_first", json_type),
        sa.Column("order_replaced_first", json_type),
        sa.Column("outcome", sa.String(16)),
        sa.Column("label", sa.Integer()),
        sa.Column("score_candidate", sa.Float()),
        sa.Column("score_replaced", sa.Float()),
        sa.Column("error", sa.String(2000)),
        sa.UniqueConstraint("gate_run_id", "decision_id", name="uq_gate_item_run_decision"),
    )
    op.create_index("ix_gate_item_claim", "gate_item", ["status", "next_attempt_at"])
    op.create_index("ix_gate_item_run_status", "gate_item", ["gate_run_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_gate_item_run_status", table_name="gate_item")
    op.drop_index("ix_gate_item_claim", table_name="gate_item")
    op.drop_table("gate_item")
    op.drop_index("ix_gate_run_created", table_name="gate_run")
    op.drop_index("ix_gate_run_claim", table_name="gate_run")
    op.drop_table("gate_run")
