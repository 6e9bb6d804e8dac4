"""Placeholder: filled in by the change that owns it.

Revision ID: 0008_alert_deliveries
Revises: 0007_alerts
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0008_alert_deliveries"
down_revision = "0007_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
