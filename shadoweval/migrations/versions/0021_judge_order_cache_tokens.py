"""Reserved: judge order records keep cache-write tokens (issue 18); filled by its own change.

Revision ID: 0021_judge_order_cache_tokens
Revises: 0020_review_label_queue
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0021_judge_order_cache_tokens"
down_revision = "0020_review_label_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
