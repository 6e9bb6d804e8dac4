"""Placeholder: filled in by the change that owns it.

Revision ID: 0012_batch_jobs
Revises: 0011_feedback_review
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0012_batch_jobs"
down_revision = "0011_feedback_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
