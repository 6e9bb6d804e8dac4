"""Typed table access and the SQL that differs between SQLite and PostgreSQL, behind names.

Services say what they need (`insert_or_ignore`, `upsert`, `lock_for_update`, `claim`)
and `dialect_of(bind)` answers with the statement for the database in use, so the
`dialect.name == …` branches live here only (one class per dialect behind one interface,
as PrefectHQ/prefect's `server/database/query_components.py` does). A leaf module: it
imports no stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel

SelectT = TypeVar("SelectT", bound=Select[Any])


def table_of(model: type[SQLModel]) -> Table:
    """The Core table behind a SQLModel table class (`__table__`, which SQLModel does not
    declare to type checkers)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


class DialectOperations(ABC):
    """The named operations; PostgreSQL and SQLite spell ON CONFLICT the same way, and
    differ in row locks and calendar functions."""

    name = ""
    # Session-level advisory locks (pg_try_advisory_lock) for the leader; elsewhere a lease row.
    has_advisory_locks = False

    @abstractmethod
    def insert(self, table: Table) -> Any:
        """The dialect's INSERT, which has on_conflict_do_nothing/do_update (the generic
        sqlalchemy.insert has neither). Typed Any because the two Insert classes differ."""

    def insert_or_ignore(
        self, table: Table, values: Mapping[str, Any], *, conflict_on: Sequence[str]
    ) -> Any:
        """INSERT … ON CONFLICT (conflict_on) DO NOTHING."""
        return (
            self.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict_on)
        )

    def upsert(
        self,
        table: Table,
        values: Mapping[str, Any],
        *,
        conflict_on: Sequence[str],
        update: Mapping[str, Any],
    ) -> Any:
        """INSERT … ON CONFLICT (conflict_on) DO UPDATE SET update."""
        return (
            self.insert(table)
            .values(**values)
            .on_conflict_do_update(index_elements=conflict_on, set_=update)
        )

    def lock_for_update(self, query: SelectT) -> SelectT:
        """Hold the selected rows until commit (SELECT … FOR UPDATE). SQLite locks the
        whole database for a writing transaction, so the query runs unchanged there."""
        return query

    def claim(self, query: SelectT) -> SelectT:
        """Take the selected rows, passing over rows another transaction holds
        (FOR UPDATE SKIP LOCKED), so concurrent workers claim different work items. On
        SQLite one writer at a time already makes a claim exclusive."""
        return query

    @abstractmethod
    def utc_day(self, column: Any) -> Any:
        """SQL for the UTC calendar day of a UtcDateTime column, as 'YYYY-MM-DD' text."""


class PostgresOperations(DialectOperations):
    name = "postgresql"
    has_advisory_locks = True

    def insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def lock_for_update(self, query: SelectT) -> SelectT:
        return query.with_for_update()

    def claim(self, query: SelectT) -> SelectT:
        return query.with_for_update(skip_locked=True)

    def utc_day(self, column: Any) -> Any:
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


class SqliteOperations(DialectOperations):
    name = "sqlite"

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def utc_day(self, column: Any) -> Any:
        return func.strftime("%Y-%m-%d", column)  # SQLite stores naive UTC


POSTGRES = PostgresOperations()
SQLITE = SqliteOperations()


def dialect_of(bind: Connection | Engine | Session) -> DialectOperations:
    """The operations of the database `bind` talks to."""
    dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect
    return POSTGRES if dialect.name == "postgresql" else SQLITE
