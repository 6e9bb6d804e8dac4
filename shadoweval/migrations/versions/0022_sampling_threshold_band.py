"""Reverse shadows in the score band around the threshold (issue 16).

`sampling_threshold_band` records, per decision day (`as_of`, its UTC midnight), router and
segment, what the threshold advisor asked of the sampling planner: the score band
[score_low, score_high) above the threshold in force whose labels would let the next step up
be tested, how many labels it has and how many more it needs, and the strong-routed traffic
a day in the band. It is computed once per day from the decisions and labels before
`as_of`, so a replay of the log computes the same rows.

`sampling_period_stratum` gains the band a period's plan applied to the stratum
(`band_score_low`, `band_score_high`) and its extra inclusion probability
(`band_inclusion_probability`): a decision of the stratum scored in the band was sampled
with π = 1 − (1 − inclusion_probability)·(1 − band_inclusion_probability). Periods planned
before this revision had no band: NULL bounds and 0.

Revision ID: 0022_sampling_threshold_band
Revises: 0021_judge_order_cache_tokens
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_sampling_threshold_band"
down_revision = "0021_judge_order_cache_tokens"
branch_labels = None
depends_on = None

utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sampling_threshold_band",
        sa.Column("as_of", utc, primary_key=True),
        sa.Column("router", sa.String(200), primary_key=True),
        sa.Column("segment_value", sa.String(200), primary_key=True),
        sa.Column("tier", sa.String(64), nullable=True),
        sa.Column("threshold_in_force", sa.Float(), nullable=True),
        sa.Column("score_low", sa.Float(), nullable=True),
        sa.Column("score_high", sa.Float(), nullable=True),
        sa.Column("labels_now", sa.Integer(), nullable=False),
        sa.Column("labels_more", sa.Integer(), nullable=False),
        sa.Column("band_requests_per_day", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
    )
    with op.batch_alter_table("sampling_period_stratum") as batch:
        batch.add_column(sa.Column("band_score_low", sa.Float(), nullable=True))
        batch.add_column(sa.Column("band_score_high", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("band_inclusion_probability", sa.Float(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("sampling_period_stratum") as batch:
        batch.drop_column("band_inclusion_probability")
        batch.drop_column("band_score_high")
        batch.drop_column("band_score_low")
    op.drop_table("sampling_threshold_band")
