"""Finished verdicts reach the aggregator through a queue table, not a claim column (issue 19).

Before, the aggregator claimed each finished verdict by setting `verdict.aggregated_at`, a
column in `ix_verdict_aggregated`: every claim rewrote the whole (wide) verdict row and
all seven of its indexes a second time, after the judge's own update. Now:

- `verdict_fold_queue(verdict_id)` holds the finished verdicts not yet folded. Triggers
  on `verdict` add a row's id in the transaction that inserts it finished or updates its
  `status` from open (`waiting`, `queued`, `running`) to finished (`done`, `error`,
  `skipped`), so every code path that finishes a verdict feeds it, and a verdict is queued
  once (finished is final). On PostgreSQL the insert trigger is per statement over its
  transition table (a COPY of many finished verdicts queues them in one INSERT); the update
  trigger is per row, filtered by its WHEN clause in C before any PL/pgSQL runs.
- The aggregator deletes the entries it folds in the same transaction as the fold
  (`sql.take_and_fold`): exactly once, whatever order verdicts finish in, and a fold that
  dies rolls its deletes back with its sums.
- `aggregated_at` and its index are dropped. The queue is filled from it: every finished
  verdict with `aggregated_at` NULL. Downgrade sets `aggregated_at` on every finished
  verdict not in the queue (now; the old value is not kept) and drops the queue.

SQLite recreates a table to alter it (`batch_alter_table`), which drops its triggers: a
later migration that alters `verdict` that way must create them again (`_create_triggers`).

Revision ID: 0024_verdict_fold_claim
Revises: 0023_decision_partitions
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_verdict_fold_claim"
down_revision = "0023_decision_partitions"
branch_labels = None
depends_on = None

POSTGRES_TRIGGERS = (
    """
    CREATE FUNCTION verdict_fold_enqueue_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO verdict_fold_queue (verdict_id)
        SELECT id FROM inserted WHERE status IN ('done', 'error', 'skipped')
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER verdict_fold_enqueue_insert AFTER INSERT ON verdict
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION verdict_fold_enqueue_inserted()
    """,
    """
    CREATE FUNCTION verdict_fold_enqueue_finished() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO verdict_fold_queue (verdict_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER verdict_fold_enqueue_update AFTER UPDATE OF status ON verdict
    FOR EACH ROW WHEN (NEW.status IN ('done', 'error', 'skipped') AND OLD.status NOT IN ('done', 'error', 'skipped'))
    EXECUTE FUNCTION verdict_fold_enqueue_finished()
    """,
)
POSTGRES_DROP = (
    "DROP TRIGGER IF EXISTS verdict_fold_enqueue_update ON verdict",
    "DROP TRIGGER IF EXISTS verdict_fold_enqueue_insert ON verdict",
    "DROP FUNCTION IF EXISTS verdict_fold_enqueue_finished()",
    "DROP FUNCTION IF EXISTS verdict_fold_enqueue_inserted()",
)
SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER verdict_fold_enqueue_insert AFTER INSERT ON verdict
    FOR EACH ROW WHEN NEW.status IN ('done', 'error', 'skipped')
    BEGIN
        INSERT OR IGNORE INTO verdict_fold_queue (verdict_id) VALUES (NEW.id);
    END
    """,
    """
    CREATE TRIGGER verdict_fold_enqueue_update AFTER UPDATE OF status ON verdict
    FOR EACH ROW WHEN NEW.status IN ('done', 'error', 'skipped') AND OLD.status NOT IN ('done', 'error', 'skipped')
    BEGIN
        INSERT OR IGNORE INTO verdict_fold_queue (verdict_id) VALUES (NEW.id);
    END
    """,
)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS verdict_fold_enqueue_update",
    "DROP TRIGGER IF EXISTS verdict_fold_enqueue_insert",
)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _create_triggers() -> None:
    for statement in POSTGRES_TRIGGERS if _postgres() else SQLITE_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "verdict_fold_queue",
        sa.Column(
            "verdict_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
    )
    op.execute(
        "INSERT INTO verdict_fold_queue (verdict_id) SELECT id FROM verdict "
        "WHERE aggregated_at IS NULL AND status IN ('done', 'error', 'skipped')"
    )
    op.drop_index("ix_verdict_aggregated", table_name="verdict")
    with op.batch_alter_table("verdict") as batch:
        batch.drop_column("aggregated_at")
    # After the batch: on SQLite it recreates `verdict`, which would drop them.
    _create_triggers()


def downgrade() -> None:
    for statement in POSTGRES_DROP if _postgres() else SQLITE_DROP:
        op.execute(statement)
    with op.batch_alter_table("verdict") as batch:
        batch.add_column(sa.Column("aggregated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_verdict_aggregated", "verdict", ["aggregated_at", "status"])
    op.execute(
        "UPDATE verdict SET aggregated_at = CURRENT_TIMESTAMP "
        "WHERE status IN ('done', 'error', 'skipped') "
        "AND id NOT IN (SELECT verdict_id FROM verdict_fold_queue)"
    )
    op.drop_table("verdict_fold_queue")
