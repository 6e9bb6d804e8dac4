"""Placeholder: filled in by the change that owns it.

Revision ID: 0007_alerts
Revises: 0006_ingest_traffic_deltas
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0007_alerts"
down_revision = "0006_ingest_traffic_deltas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
