"""PostgreSQL's day partitions of the decision log, and the dedup table beside them.

Migration 0023 partitions `decision` by RANGE on `ts`, one partition per UTC day
(`decision_d20261127`) and `decision_default` for any `ts` outside the created days;
`decision_key(router, request_id)` holds every stored decision's idempotency key, since
a partitioned table cannot hold a unique key without its partition key (docs/architecture.md,
"Scaling the decision log"). SQLite keeps one `decision` table with its unique key, and
none of this applies there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, String, Table, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from shadoweval.db import UtcDateTime

log = logging.getLogger(__name__)

DECISION_KEY_TABLE = "decision_key"
DEFAULT_PARTITION = "decision_default"
# The sequence behind decision.id: ingest draws a claimed key's id from it, before the row.
ID_SEQUENCE = "decision_id_seq"
# On its own metadata: the table exists on PostgreSQL only (the models' metadata is the
# schema both databases share, checked against the migrations).
DECISION_KEY = Table(
    DECISION_KEY_TABLE,
    MetaData(),
    Column("router", String(200), primary_key=True),
    Column("request_id", String(200), primary_key=True),
    Column("decision_id", BigInteger, nullable=False),
    Column("ts", UtcDateTime(), nullable=False, index=True),
)
_DAY_NAME = re.compile(r"^decision_d(\d{8})$")


def is_partitioned(bind: Connection | Session) -> bool:
    """Whether this database's decision log is partitioned (PostgreSQL at migration 0023+)."""
    dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect
    if dialect.name != "postgresql":
        return False
    kind = bind.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass('decision')")
    ).scalar()
    return str(kind) == "p"


def partition_name(day: date) -> str:
    return f"decision_d{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_partitions(bind: Connection | Session) -> list[tuple[str, date]]:
    """The decision log's day partitions, oldest first (the default partition left out)."""
    names = bind.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'decision'::regclass"
        )
    ).scalars()
    days = []
    for name in names:
        match = _DAY_NAME.match(str(name))
        if match:
            days.append((str(name), datetime.strptime(match.group(1), "%Y%m%d").date()))
    return sorted(days, key=lambda entry: entry[1])


def create_day(connection: Connection, day: date) -> None:
    """CREATE TABLE IF NOT EXISTS … PARTITION OF decision for one UTC day (idempotent)."""
    start = day_start(day)
    connection.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF decision "
            f"FOR VALUES FROM ('{start.isoformat()}') "
            f"TO ('{(start + timedelta(days=1)).isoformat()}')"
        )
    )


def create_days_ahead(engine: Engine, *, today: date, days: int = 7) -> list[str]:
    """Create the partitions of `today` and the next `days` days; returns those created.

    One transaction per day. PostgreSQL refuses a day whose rows already sit in the
    default partition (a `ts` stamped far ahead); that day is logged and left to the
    default, and the others are still created.
    """
    created: list[str] = []
    with engine.connect() as connection:
        if not is_partitioned(connection):
            return created
        existing = {name for name, _ in day_partitions(connection)}
    for offset in range(days + 1):
        day = today + timedelta(days=offset)
        if partition_name(day) in existing:
            continue
        try:
            with engine.begin() as connection:
                create_day(connection, day)
        except IntegrityError as error:  # check_violation: rows of the day in the default
            log.warning("decision partition for %s not created: %s", day, error.orig)
            continue
        created.append(partition_name(day))
    return created


def schema_comparison_filter(connection: Connection) -> Callable[..., bool]:
    """An Alembic `include_object` leaving out what migration 0023 makes differ from the
    models on purpose on PostgreSQL: the partitions and their indexes, `decision_key`, and
    the unique key and foreign keys the partitioned log cannot hold (the models describe
    them for SQLite). On SQLite it leaves nothing out."""
    partitioned = is_partitioned(connection)

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if not partitioned:
            return True
        table = obj if type_ == "table" else getattr(obj, "table", None)
        table_name = str(getattr(table, "name", ""))
        if reflected and (
            table_name in (DECISION_KEY_TABLE, DEFAULT_PARTITION) or _DAY_NAME.match(table_name)
        ):
            return False
        if type_ == "unique_constraint" and name == "uq_decision_router_request_id":
            return False
        return not (
            type_ == "foreign_key_constraint"
            and getattr(obj, "referred_table", None) is not None
            and obj.referred_table.name == "decision"
        )

    return include
