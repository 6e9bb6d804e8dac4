"""Human feedback, blind review assignments and reviewer labels.

Revision ID: 0011_feedback_review
Revises: 0010_gate_runs
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_feedback_review"
down_revision = "0010_gate_runs"
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("acceptable", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("comment", sa.String(2000)),
        sa.Column("decision_known", sa.Boolean(), nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.UniqueConstraint(
            "router", "request_id", "source", "reviewer", name="uq_feedback_decision_source"
        ),
    )
    op.create_index("ix_feedback_created", "feedback", ["created_at"])
    op.create_table(
        "review_assignment",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column(
            "verdict_id",
            big_id,
            sa.ForeignKey("verdict.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("presented_order", sa.String(16), nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.UniqueConstraint("verdict_id", "reviewer", name="uq_review_assignment_verdict_reviewer"),
    )
    op.create_table(
        "review_label",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "verdict_id",
            big_id,
            sa.ForeignKey("verdict.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("presented_order", sa.String(16), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("served_acceptable", sa.Integer(), nullable=False),
        sa.Column("comment", sa.String(2000)),
        sa.Column("created_at", utc, nullable=False),
        sa.UniqueConstraint("verdict_id", "reviewer", name="uq_review_label_verdict_reviewer"),
    )
    op.create_table(
        "judge_watch_state",
        sa.Column("router", sa.String(200), primary_key=True),
        sa.Column("last_finished_at", utc, nullable=False),
        sa.Column("last_verdict_id", big_id, nullable=False),
        sa.Column("judge_key", sa.String(300), nullable=False),
        sa.Column("updated_at", utc, nullable=False),
    )
    op.create_index("ix_verdict_finished", "verdict", ["finished_at", "id"])


def downgrade() -> None:
    op.drop_table("judge_watch_state")
    op.drop_index("ix_verdict_finished", table_name="verdict")
    op.drop_table("review_label")
    op.drop_table("review_assignment")
    op.drop_index("ix_feedback_created", table_name="feedback")
    op.drop_table("feedback")
