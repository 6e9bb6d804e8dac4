"""Quality-drop detector state for the GLR change-point statistic.

Revision ID: 0014_change_point_detector
Revises: 0013_hourly_sampling
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0014_change_point_detector"
down_revision = "0013_hourly_sampling"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled by the change it is named after


def downgrade() -> None:
    pass
