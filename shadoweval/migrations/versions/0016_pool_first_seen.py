"""Pool models set by PUT carry no decision-time first-seen.

`router_model.first_seen_ts` becomes nullable: a model announced by `PUT /v1/pool` has
none until a decision chooses it. Rows PUT created before this revision carry the PUT's
wall-clock time; they get the ts of the first decision that chose them, or NULL when
none has, so the backfill rule compares decision time with decision time only.

Revision ID: 0016_pool_first_seen
Revises: 0015_alert_pending
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_pool_first_seen"
down_revision = "0015_alert_pending"
branch_labels = None
depends_on = None

utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("router_model") as batch:
        batch.alter_column("first_seen_ts", existing_type=utc, nullable=True)
    # One probe of the router's decisions per pool_put row (few rows; ix_decision_router_ts).
    op.execute(
        sa.text(
            "UPDATE router_model SET first_seen_ts = ("
            " SELECT min(d.ts) FROM decision d"
            " WHERE d.router = router_model.router AND d.tier = router_model.tier"
            " AND d.chosen_model = router_model.model"
            ") WHERE source = 'pool_put'"
        )
    )


def downgrade() -> None:
    # The old schema needs a time: the row's creation (what PUT used to stamp).
    op.execute(
        sa.text("UPDATE router_model SET first_seen_ts = created_at WHERE first_seen_ts IS NULL")
    )
    with op.batch_alter_table("router_model") as batch:
        batch.alter_column("first_seen_ts", existing_type=utc, nullable=False)
