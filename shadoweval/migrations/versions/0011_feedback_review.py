"""Placeholder: filled in by the change that owns it.

Revision ID: 0011_feedback_review
Revises: 0010_gate_runs
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0011_feedback_review"
down_revision = "0010_gate_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
