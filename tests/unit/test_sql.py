"""The named dialect operations compile to each database's SQL."""

from __future__ import annotations

from sqlalchemy import Table, create_engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from shadoweval.events.models import Event
from shadoweval.sql import POSTGRES, SQLITE, dialect_of, table_of

EVENT = table_of(Event)


def _sql(statement: object, dialect: object) -> str:
    return str(statement.compile(dialect=dialect))  # type: ignore[attr-defined]


def test_table_of_is_the_model_table() -> None:
    assert isinstance(EVENT, Table)
    assert EVENT.name == "event"
    assert "dedup_key" in EVENT.c


def test_dialect_of_follows_engine_connection_and_session() -> None:
    lite = create_engine("sqlite://")
    assert dialect_of(lite) is SQLITE
    with lite.connect() as connection:
        assert dialect_of(connection) is SQLITE
    with Session(lite) as session:
        assert dialect_of(session) is SQLITE
    assert dialect_of(create_engine("postgresql+psycopg://")) is POSTGRES


def test_claim_skips_locked_rows_on_postgres_only() -> None:
    query = select(EVENT.c.id).where(EVENT.c.kind == "model_change").limit(5)
    assert _sql(POSTGRES.claim(query), postgresql.dialect()).endswith("FOR UPDATE SKIP LOCKED")
    assert _sql(POSTGRES.lock_for_update(query), postgresql.dialect()).endswith("FOR UPDATE")
    # SQLite: one writer at a time; the statement is unchanged.
    assert SQLITE.claim(query) is query
    assert SQLITE.lock_for_update(query) is query


def test_insert_or_ignore_and_upsert_name_the_conflict_columns() -> None:
    values = {"kind": "model_change", "dedup_key": "k"}
    for ops, dialect in ((POSTGRES, postgresql.dialect()), (SQLITE, sqlite.dialect())):
        ignore = _sql(
            ops.insert_or_ignore(EVENT, values, conflict_on=["kind", "dedup_key"]), dialect
        )
        assert "ON CONFLICT (kind, dedup_key) DO NOTHING" in ignore
        upsert = _sql(
            ops.upsert(EVENT, values, conflict_on=["kind", "dedup_key"], update={"router": "r"}),
            dialect,
        )
        assert "ON CONFLICT (kind, dedup_key) DO UPDATE SET router" in upsert


def test_utc_day_per_dialect() -> None:
    assert "to_char(timezone" in _sql(POSTGRES.utc_day(EVENT.c.ts), postgresql.dialect())
    assert "strftime" in _sql(SQLITE.utc_day(EVENT.c.ts), sqlite.dialect())
