"""Sampling plan and budget, window snapshots, sequential state, events.

Revision ID: 0003_sampling_snapshots_events
Revises: 0002_shadow_runs_verdicts
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_sampling_snapshots_events"
down_revision = "0002_shadow_runs_verdicts"
branch_labels = None
depends_on = None

json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
utc = sa.DateTime(timezone=True)

VERDICT_SUMS = (
    "labels",
    "judge_errors",
    "skipped_no_payload",
    "skipped_provider_failure",
    "skipped_redacted",
    "skipped_other",
    "inconsistent",
)
VERDICT_FLOAT_SUMS = (
    "sum_w",
    "sum_w2",
    "sum_wy",
    "sum_vw",
    "sum_vwy",
    "sum_w_cheaper",
    "sum_vw_cheaper",
    "sum_w_stronger",
    "sum_vw_stronger",
    "sum_wd",
    "sum_vwd",
    "sum_vwd2",
    "judge_cost_usd",
)
TRAFFIC_COUNTS = (
    "decisions",
    "sampled",
    "budget_refused",
    "with_payload",
    "failover",
    "fallback",
    "escalated",
)


def upgrade() -> None:
    op.add_column("decision", sa.Column("sampling_skip_reason", sa.String(64)))
    op.add_column("verdict", sa.Column("aggregated_at", utc))
    op.create_index("ix_verdict_aggregated", "verdict", ["aggregated_at", "status"])

    op.create_table(
        "sampling_stratum",
        sa.Column("router", sa.String(200), primary_key=True),
        sa.Column("segment_value", sa.String(200), primary_key=True),
        sa.Column("tier", sa.String(64), primary_key=True),
        sa.Column("inclusion_probability", sa.Float(), nullable=False),
        sa.Column("is_reverse", sa.Boolean(), nullable=False),
        sa.Column("expected_traffic_per_day", sa.Float(), nullable=False),
        sa.Column("cost_per_sample_usd", sa.Float(), nullable=False),
        sa.Column("std_dev", sa.Float(), nullable=False),
        sa.Column("floor_samples_per_day", sa.Float(), nullable=False),
        sa.Column("boost_factor", sa.Float(), nullable=False),
        sa.Column("boosted_until", utc),
        sa.Column("updated_at", utc, nullable=False),
    )
    op.create_table(
        "budget_day",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("account", sa.String(32), primary_key=True),
        sa.Column("budget_usd", sa.Float(), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("sampled", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("exhausted_at", utc),
    )
    op.create_table(
        "event",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=False),
        sa.Column("ts", utc, nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("router", sa.String(200)),
        sa.Column("details", json_type, nullable=False),
        sa.UniqueConstraint("kind", "dedup_key", name="uq_event_kind_dedup"),
    )
    op.create_index("ix_event_ts", "event", ["ts"])

    op.create_table(
        "verdict_window_snapshot",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("segment_value", sa.String(200), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("judge_key", sa.String(300), nullable=False),
        sa.Column("window", sa.String(8), nullable=False),
        sa.Column("window_start", utc, nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in VERDICT_SUMS),
        *(sa.Column(name, sa.Float(), nullable=False) for name in VERDICT_FLOAT_SUMS),
        sa.Column("updated_at", utc, nullable=False),
        sa.UniqueConstraint(
            "router",
            "segment_value",
            "direction",
            "judge_key",
            "window",
            "window_start",
            name="uq_verdict_window_snapshot",
        ),
    )
    op.create_index(
        "ix_verdict_window_snapshot_start", "verdict_window_snapshot", ["window", "window_start"]
    )
    op.create_table(
        "traffic_window_snapshot",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("segment_value", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("window_start", utc, nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in TRAFFIC_COUNTS),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("router_cost_usd", sa.Float(), nullable=False),
        sa.UniqueConstraint(
            "router", "segment_value", "tier", "window_start", name="uq_traffic_window_snapshot"
        ),
    )
    op.create_index("ix_traffic_window_snapshot_start", "traffic_window_snapshot", ["window_start"])
    op.create_table(
        "sequential_state",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("router", sa.String(200), nullable=False),
        sa.Column("segment_value", sa.String(200), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("judge_key", sa.String(300), nullable=False),
        sa.Column("last_ts", utc),
        sa.Column("last_request_id", sa.String(200)),
        sa.Column("baseline_rate", sa.Float()),
        sa.Column("baseline_labels", sa.Integer(), nullable=False),
        sa.Column("baseline_positives", sa.Integer(), nullable=False),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("positives", sa.Integer(), nullable=False),
        sa.Column("log_e_value", sa.Float(), nullable=False),
        sa.Column("log_shiryaev_roberts", sa.Float(), nullable=False),
        sa.Column("alarmed_at_ts", utc),
        sa.Column("alarm_labels", sa.Integer()),
        sa.Column("updated_at", utc, nullable=False),
        sa.UniqueConstraint(
            "router", "segment_value", "direction", "judge_key", name="uq_sequential_state"
        ),
    )


def downgrade() -> None:
    op.drop_table("sequential_state")
    op.drop_index("ix_traffic_window_snapshot_start", table_name="traffic_window_snapshot")
    op.drop_table("traffic_window_snapshot")
    op.drop_index("ix_verdict_window_snapshot_start", table_name="verdict_window_snapshot")
    op.drop_table("verdict_window_snapshot")
    op.drop_index("ix_event_ts", table_name="event")
    op.drop_table("event")
    op.drop_table("budget_day")
    op.drop_table("sampling_stratum")
    op.drop_index("ix_verdict_aggregated", table_name="verdict")
    with op.batch_alter_table("verdict") as batch:
        batch.drop_column("aggregated_at")
    with op.batch_alter_table("decision") as batch:
        batch.drop_column("sampling_skip_reason")
