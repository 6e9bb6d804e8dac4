"""Placeholder: filled in by the change that owns it.

Revision ID: 0006_ingest_traffic_deltas
Revises: 0005_payload_redaction
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0006_ingest_traffic_deltas"
down_revision = "0005_payload_redaction"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
