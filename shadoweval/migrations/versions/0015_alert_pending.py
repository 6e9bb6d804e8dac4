"""Alert rules' pending period and hysteresis state.

Revision ID: 0015_alert_pending
Revises: 0014_change_point_detector
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0015_alert_pending"
down_revision = "0014_change_point_detector"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled by the change it is named after


def downgrade() -> None:
    pass
