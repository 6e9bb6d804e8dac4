"""Sampling decided per closed decision-hour: plan rows per hour, learned stratum costs.

Revision ID: 0013_hourly_sampling
Revises: 0012_batch_jobs
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0013_hourly_sampling"
down_revision = "0012_batch_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled by the change it is named after


def downgrade() -> None:
    pass
