"""Pool models set by PUT carry no decision-time first-seen.

Revision ID: 0016_pool_first_seen
Revises: 0015_alert_pending
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0016_pool_first_seen"
down_revision = "0015_alert_pending"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled by the change it is named after


def downgrade() -> None:
    pass
