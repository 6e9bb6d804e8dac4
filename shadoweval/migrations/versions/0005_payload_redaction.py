"""Decisions record whether redaction changed their payload.

Revision ID: 0005_payload_redaction
Revises: 0004_drift_reports
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_payload_redaction"
down_revision = "0004_drift_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "decision",
        sa.Column("payload_redacted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("decision") as batch:
        batch.drop_column("payload_redacted")
