"""Placeholder: filled in by the change that owns it.

Revision ID: 0009_pool_model_events
Revises: 0008_alert_deliveries
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0009_pool_model_events"
down_revision = "0008_alert_deliveries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
