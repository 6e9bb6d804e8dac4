"""Review assignments and labels record the queue that served them.

`review_assignment.queue` is the review queue mode (`stratified`, `uniform` or
`escalated`) that last served the pair to its reviewer, and `review_label.queue` copies
it when the label is stored. PPI (stats/ppi.py) reads only labels with queue `uniform`,
the known-probability sample; labels from the stratified queue (which looks for
disagreements) and from judge escalation (the judge's least confident verdicts) are
never mixed into that estimate.

Rows written before this revision keep NULL, meaning "served by an unknown queue": the
serving mode was not recorded and cannot be reconstructed (a pair of the uniform review
sample was served by the stratified queue as well, and the assignment kept no mode), so
PPI leaves those labels out; agreement (Cohen's κ) still counts them as before.

Revision ID: 0020_review_label_queue
Revises: 0019_session_totals
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_review_label_queue"
down_revision = "0019_session_totals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_assignment") as batch:
        batch.add_column(sa.Column("queue", sa.String(16), nullable=True))
    with op.batch_alter_table("review_label") as batch:
        batch.add_column(sa.Column("queue", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_label") as batch:
        batch.drop_column("queue")
    with op.batch_alter_table("review_assignment") as batch:
        batch.drop_column("queue")
