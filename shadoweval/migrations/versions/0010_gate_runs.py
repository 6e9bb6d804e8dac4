"""Placeholder: filled in by the change that owns it.

Revision ID: 0010_gate_runs
Revises: 0009_pool_model_events
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0010_gate_runs"
down_revision = "0009_pool_model_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
