"""PostgreSQL: the decision log partitioned by UTC decision day, dedup in `decision_key`.

Issue 19 §1 (docs/architecture.md, "Scaling the decision log"). On PostgreSQL:

- `decision` becomes RANGE-partitioned on `ts`, one partition per UTC day
  (`decision_d20261127`) plus `decision_default` for any `ts` outside the created days.
  Its primary key becomes `(id, ts)` (a partitioned table's unique keys must hold the
  partition key); the unique (router, request_id) goes, because PostgreSQL refuses it
  there. Its other indexes are re-created on the parent as they were, whatever earlier
  migrations defined, so every partition gets them.
- `decision_key(router, request_id) PRIMARY KEY, decision_id, ts` (unpartitioned) takes
  over the dedup: ingest claims keys there first and stores decision rows only for the
  keys it claimed. Filled here from the existing rows.
- The foreign keys to `decision.id` (payloads, shadow runs, verdicts, gate items, session
  turns) are dropped: `id` alone is no longer unique to reference, and retention, not a
  cascade, says what goes with a decision (`retention.py`).
- Partitions: every day that holds rows (the newest 400 such days; older rows go to the
  default partition) and the wall-clock today + 7 days; the partition job keeps creating
  days ahead. Rows keep their ids; the id sequence is re-owned by the new table.

The copy holds an ACCESS EXCLUSIVE lock on `decision` for its duration (a maintenance
window of about the COPY rate times the rows). Downgrade converts back: one plain table,
the unique key and the foreign keys again (rows of the referencing tables whose decision
retention has dropped are deleted first, as the cascade would have), `decision_key`
dropped. SQLite: nothing changes, in either direction.

Revision ID: 0023_decision_partitions
Revises: 0022_sampling_threshold_band
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection

revision = "0023_decision_partitions"
down_revision = "0022_sampling_threshold_band"
branch_labels = None
depends_on = None

# The tables whose decision_id referenced decision.id (ON DELETE CASCADE) before this.
REFERENCING = ("decision_payload", "shadow_run", "verdict", "gate_item", "session_turn")
DAYS_AHEAD = 7
MAX_DAYS_WITH_ROWS = 400


def _index_definitions(connection: Connection, table: str) -> list[str]:
    """CREATE INDEX statements of `table`'s indexes, except its primary and unique keys."""
    rows = connection.execute(
        text(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = CAST(:table AS regclass) "
            "AND NOT i.indisprimary AND NOT i.indisunique ORDER BY i.indexrelid"
        ),
        {"table": table},
    )
    return [str(row[0]) for row in rows]


def _create_day(connection: Connection, day: date) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    connection.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS decision_d{day:%Y%m%d} PARTITION OF decision "
            f"FOR VALUES FROM ('{start.isoformat()}') "
            f"TO ('{(start + timedelta(days=1)).isoformat()}')"
        )
    )


def _partitioned(connection: Connection) -> bool:
    """Whether `decision` is partitioned: a database stamped with this revision while it
    was a placeholder is converted by neither direction."""
    kind = connection.execute(
        text("SELECT relkind FROM pg_class WHERE oid = 'decision'::regclass")
    ).scalar()
    return str(kind) == "p"


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql" or _partitioned(connection):
        return
    indexes = _index_definitions(connection, "decision")
    for table, name in connection.execute(
        text(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'decision'::regclass"
        )
    ).all():
        connection.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    connection.execute(text("ALTER TABLE decision RENAME TO decision_unpartitioned"))
    connection.execute(
        text(
            "CREATE TABLE decision (LIKE decision_unpartitioned INCLUDING DEFAULTS) "
            "PARTITION BY RANGE (ts)"
        )
    )
    connection.execute(text("CREATE TABLE decision_default PARTITION OF decision DEFAULT"))
    days = {
        row[0]
        for row in connection.execute(
            text(
                "SELECT DISTINCT CAST(timezone('UTC', ts) AS date) AS day "
                "FROM decision_unpartitioned ORDER BY day DESC LIMIT :limit"
            ),
            {"limit": MAX_DAYS_WITH_ROWS},
        )
    }
    today = datetime.now(UTC).date()  # wall clock: partitions for the traffic to come
    days.update(today + timedelta(days=n) for n in range(DAYS_AHEAD + 1))
    for day in sorted(days):
        _create_day(connection, day)
    connection.execute(text("INSERT INTO decision SELECT * FROM decision_unpartitioned"))
    connection.execute(text("ALTER SEQUENCE decision_id_seq OWNED BY decision.id"))
    connection.execute(text("DROP TABLE decision_unpartitioned"))
    # Keys and indexes after the copy (faster), and once the old names are free.
    connection.execute(text("ALTER TABLE decision ADD PRIMARY KEY (id, ts)"))
    for definition in indexes:
        connection.execute(text(definition))
    connection.execute(
        text(
            "CREATE TABLE decision_key (router varchar(200) NOT NULL, "
            "request_id varchar(200) NOT NULL, decision_id bigint NOT NULL, "
            "ts timestamp with time zone NOT NULL, PRIMARY KEY (router, request_id))"
        )
    )
    connection.execute(text("CREATE INDEX ix_decision_key_ts ON decision_key (ts)"))
    connection.execute(
        text(
            "INSERT INTO decision_key (router, request_id, decision_id, ts) "
            "SELECT router, request_id, id, ts FROM decision"
        )
    )
    connection.execute(text("ANALYZE decision"))
    connection.execute(text("ANALYZE decision_key"))


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql" or not _partitioned(connection):
        return
    indexes = _index_definitions(connection, "decision")
    connection.execute(text("ALTER TABLE decision RENAME TO decision_partitioned"))
    connection.execute(text("CREATE TABLE decision (LIKE decision_partitioned INCLUDING DEFAULTS)"))
    connection.execute(text("INSERT INTO decision SELECT * FROM decision_partitioned"))
    connection.execute(text("ALTER SEQUENCE decision_id_seq OWNED BY decision.id"))
    connection.execute(text("DROP TABLE decision_partitioned"))  # and its partitions
    connection.execute(text("ALTER TABLE decision ADD PRIMARY KEY (id)"))
    for definition in indexes:
        # A partitioned table's index is defined ON ONLY the parent.
        connection.execute(text(definition.replace(" ON ONLY ", " ON ", 1)))
    connection.execute(
        text(
            "ALTER TABLE decision ADD CONSTRAINT uq_decision_router_request_id "
            "UNIQUE (router, request_id)"
        )
    )
    for table in REFERENCING:
        # What a cascade would have deleted with the days retention dropped.
        connection.execute(
            text(
                f"DELETE FROM {table} t WHERE NOT EXISTS "  # noqa: S608 (our table names)
                "(SELECT 1 FROM decision d WHERE d.id = t.decision_id)"
            )
        )
        connection.execute(
            text(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_decision_id_fkey "
                "FOREIGN KEY (decision_id) REFERENCES decision (id) ON DELETE CASCADE"
            )
        )
    connection.execute(text("DROP TABLE decision_key"))
