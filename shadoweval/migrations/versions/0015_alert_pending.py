"""Alert rules' pending period and hysteresis state.

`alert` rows may now be `pending` (the condition holds, for less than the rule's `for`),
and record the decision time of their measurements (`pending_since_ts`, `fired_ts`,
`resolved_ts`, `measured_ts`). `alert_cursor` keeps, per rule and clock (a router, or ""
for the deployment), the last decision-time step evaluated.

Revision ID: 0015_alert_pending
Revises: 0014_change_point_detector
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_alert_pending"
down_revision = "0014_change_point_detector"
branch_labels = None
depends_on = None

utc = sa.DateTime(timezone=True)
TS_COLUMNS = ("pending_since_ts", "fired_ts", "resolved_ts", "measured_ts")


def upgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        for name in TS_COLUMNS:
            batch.add_column(sa.Column(name, utc))
    op.create_table(
        "alert_cursor",
        sa.Column("rule", sa.String(100), primary_key=True),
        sa.Column("clock", sa.String(200), primary_key=True),
        sa.Column("evaluated_ts", utc, nullable=False),
        sa.Column("updated_at", utc, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_cursor")
    # The old schema knows no pending episodes: they never fired, so nothing was told.
    op.execute(sa.text("DELETE FROM alert WHERE state = 'pending'"))
    with op.batch_alter_table("alert") as batch:
        for name in reversed(TS_COLUMNS):
            batch.drop_column(name)
