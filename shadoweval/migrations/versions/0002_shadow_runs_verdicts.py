"""Shadow runs, verdicts, worker heartbeats and the leader lease.

Revision ID: 0002_shadow_runs_verdicts
Revises: 0001_initial
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_shadow_runs_verdicts"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shadow_run",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "decision_id",
            big_id,
            sa.ForeignKey("decision.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("routed_tier", sa.String(64), nullable=False),
        sa.Column("target_tier", sa.String(64), nullable=False),
        sa.Column("target_model", sa.String(200), nullable=False),
        sa.Column("ts", utc, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", utc),
        sa.Column("next_attempt_at", utc, nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("finished_at", utc),
        sa.Column("response_text", sa.String()),
        sa.Column("served_model", sa.String(200)),
        sa.Column("provider", sa.String(64)),
        sa.Column("input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.Column("cache_read_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("finish_reason", sa.String(64)),
        sa.Column("failure_reason", sa.String(64)),
        sa.Column("failure_detail", sa.String(2000)),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("decision_id", "kind", name="uq_shadow_run_decision_kind"),
    )
    op.create_index("ix_shadow_run_claim", "shadow_run", ["status", "next_attempt_at"])

    op.create_table(
        "verdict",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "decision_id",
            big_id,
            sa.ForeignKey("decision.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("ts", utc, nullable=False),
        sa.Column("segment_value", sa.String(200), nullable=False),
        sa.Column("routed_tier", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("inclusion_probability", sa.Float(), nullable=False),
        sa.Column("router_score", sa.Float()),
        sa.Column("score_semantics", sa.String(64), nullable=False),
        sa.Column("cheaper_tier", sa.String(64), nullable=False),
        sa.Column("stronger_tier", sa.String(64), nullable=False),
        sa.Column("cheaper_model", sa.String(200), nullable=False),
        sa.Column("stronger_model", sa.String(200), nullable=False),
        sa.Column("judge_key", sa.String(300), nullable=False),
        sa.Column("judge_model", sa.String(200), nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("skip_reason", sa.String(64)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", utc),
        sa.Column("next_attempt_at", utc, nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("finished_at", utc),
        sa.Column("order_cheaper_first", json_type),
        sa.Column("order_stronger_first", json_type),
        sa.Column("outcome", sa.String(16)),
        sa.Column("consistent", sa.Boolean()),
        sa.Column("strong_needed", sa.Integer()),
        sa.Column("cheap_acceptable", sa.Integer()),
        sa.Column("score_cheaper", sa.Float()),
        sa.Column("score_stronger", sa.Float()),
        sa.Column("score_delta", sa.Float()),
        sa.Column("cheaper_chars", sa.Integer()),
        sa.Column("stronger_chars", sa.Integer()),
        sa.Column("judge_cost_usd", sa.Float(), nullable=False),
        sa.Column("judge_latency_ms", sa.Float(), nullable=False),
        sa.Column("error_detail", sa.String(2000)),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("decision_id", "judge_key", name="uq_verdict_decision_judge"),
    )
    op.create_index("ix_verdict_claim", "verdict", ["status", "next_attempt_at"])
    op.create_index("ix_verdict_segment_ts", "verdict", ["segment_value", "ts"])
    op.create_index("ix_verdict_ts", "verdict", ["ts", "request_id"])

    op.create_table(
        "worker_heartbeat",
        sa.Column("worker_id", sa.String(100), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", utc, nullable=False),
        sa.Column("last_seen_at", utc, nullable=False),
        sa.Column("is_leader", sa.Boolean(), nullable=False),
        sa.Column("jobs", json_type, nullable=False),
    )
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("lease_until", utc, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leader_lease")
    op.drop_table("worker_heartbeat")
    op.drop_index("ix_verdict_ts", table_name="verdict")
    op.drop_index("ix_verdict_segment_ts", table_name="verdict")
    op.drop_index("ix_verdict_claim", table_name="verdict")
    op.drop_table("verdict")
    op.drop_index("ix_shadow_run_claim", table_name="shadow_run")
    op.drop_table("shadow_run")
