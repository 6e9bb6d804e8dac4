"""Gate runs record the judge they are judged with.

`gate_run.judge` (JSON) holds, as of the run's creation, the judge model, its sampling
settings and rubrics, the prompt hash, and the prices of the candidate, the replaced
model and the judge; every item of the run is judged and priced with these, whichever
worker picks it up. Runs created before this revision have none and keep using the
settings of the worker that runs them.

Revision ID: 0018_gate_run_judge
Revises: 0017_delivery_channels
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018_gate_run_judge"
down_revision = "0017_delivery_channels"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("gate_run") as batch:
        batch.add_column(sa.Column("judge", json_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_run") as batch:
        batch.drop_column("judge")
