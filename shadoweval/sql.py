"""Typed table access and the SQL that differs between SQLite and PostgreSQL, behind names.

Services say what they need (`insert_or_ignore`, `upsert`, `lock_for_update`, `claim`)
and `dialect_of(bind)` answers with the statement for the database in use, so the
`dialect.name == …` branches live here only (one class per dialect behind one interface,
as PrefectHQ/prefect's `server/database/query_components.py` does). A leaf module: it
imports no stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
from sqlalchemy import Select, Table, case, func, select, text
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


# --- Aggregation over many rows into few groups (issue 19 §4) ---------------------------


def hour_start(bind: Connection | Engine | Session, column: Any) -> Any:
    """SQL for the start of the UTC hour of a UtcDateTime column, comparable with (and stored
    like) a UtcDateTime value: PostgreSQL truncates the timestamptz; SQLite keeps naive UTC
    'YYYY-MM-DD HH:MM:SS.ffffff' text, where cutting the string beats strftime by far."""
    if dialect_of(bind) is POSTGRES:
        return func.date_trunc("hour", func.timezone("UTC", column)).op("AT TIME ZONE")("UTC")
    return func.substr(column, 1, 13).concat(":00:00.000000")


def day_start(bind: Connection | Engine | Session, column: Any) -> Any:
    """SQL for the start of the UTC day of a UtcDateTime column (see `hour_start`)."""
    if dialect_of(bind) is POSTGRES:
        return func.date_trunc("day", func.timezone("UTC", column)).op("AT TIME ZONE")("UTC")
    return func.substr(column, 1, 10).concat(" 00:00:00.000000")


def prefer_hash_aggregate(connection: Connection | Session) -> None:
    """For the rest of the transaction, group with a hash table in memory and without JIT.

    PostgreSQL estimates a GROUP BY on an expression (an hour of `ts`) at one group per
    row, so it sorts a million rows to disk and JIT-compiles for a plan that costly: 7 s
    where hashing the few thousand groups takes 1.5 s (measured at 1 M decisions). The
    verdict fold's 50,000 wide rows (20 CASE sums) spill a hash table of the default 4 MB
    `work_mem`; 64 MB holds them (a worker job's statement, one at a time per leader).
    SQLite has one plan; nothing to do there."""
    if dialect_of(connection) is POSTGRES:
        connection.execute(text("SET LOCAL enable_sort = off"))
        connection.execute(text("SET LOCAL jit = off"))
        connection.execute(text("SET LOCAL work_mem = '64MB'"))


def take_and_fold(
    connection: Connection,
    *,
    queue: Table,
    key: str,
    source: Table,
    columns: Sequence[str],
    limit: int,
    fold: Callable[[Any], Any],
) -> int:
    """Delete up to `limit` entries of the work queue `queue` (lowest `key` first) and fold
    the rows of `source` whose ids they name into other tables, in one transaction, so each
    entry is folded exactly once; returns how many entries were taken (one whose row is gone
    is taken and adds nothing).

    `fold(rows)` builds the INSERT … SELECT over `rows` (a selectable with the named
    `columns` of `source`). PostgreSQL does it in one statement (DELETE … RETURNING as a CTE,
    the entries taken FOR UPDATE SKIP LOCKED), so concurrent folders take disjoint entries;
    SQLite folds and then deletes the same entries, which nothing can change in between
    because its first write holds the database's write lock until commit; there the fold
    must start with INSERT (not WITH), or Python's sqlite3 commits it at once, opening the
    transaction only before a statement it sees as DML."""
    entry = queue.c[key]
    oldest = select(entry).order_by(entry).limit(limit)
    if dialect_of(connection) is POSTGRES:
        taken = (
            queue.delete()
            .where(entry.in_(oldest.with_for_update(skip_locked=True).scalar_subquery()))
            .returning(entry)
            .cte("taken")
        )
        claimed = (
            select(*(source.c[name] for name in columns))
            .join_from(source, taken, source.c.id == taken.c[key])
            .cte("claimed")
        )
        folded = fold(claimed).cte("folded")
        return int(connection.scalar(select(func.count()).select_from(taken).add_cte(folded)) or 0)
    rows = (
        select(*(source.c[name] for name in columns))
        .where(source.c.id.in_(oldest.scalar_subquery()))
        .subquery("claimed")
    )
    connection.execute(fold(rows))
    result = connection.execute(queue.delete().where(entry.in_(oldest.scalar_subquery())))
    return int(result.rowcount or 0)


def groups_hour_by_hour(bind: Connection | Engine | Session) -> bool:
    """Whether a GROUP BY of the decision log by hour should run one hour at a time.

    SQLite groups by sorting, and a million rows spill its sorter to disk: an hour's few
    thousand rows at a time take half as long (2.8 s against 5–8 s at 1 M decisions).
    PostgreSQL hashes them in one statement faster (`prefer_hash_aggregate`; 2.5–3.1 s
    against 3.5 s hour by hour, measured together on a loaded machine)."""
    return dialect_of(bind) is SQLITE


def percentiles(
    bind: Connection | Session,
    column: Any,
    *,
    where: Sequence[Any],
    groups: Mapping[str, Any],
    quantiles: Sequence[float],
    fetch_rows: int = 20_000,
) -> dict[str, tuple[int, list[float] | None]]:
    """Per named group (a condition), the count of non-null values of `column` among the
    rows `where` selects, and their `quantiles` by linear interpolation between order
    statistics (numpy's default, PostgreSQL's percentile_cont); None for an empty group.

    PostgreSQL computes them in one statement. SQLite has no percentile function, and
    handing a million values to Python costs seconds (the driver's rows, then numpy): it
    counts per bucket of the value range in SQL instead, and fetches only the rows of the
    buckets that hold the order statistics the quantiles need (a bucket of more than
    `fetch_rows` rows is bucketed again). Typically three scans and a few thousand rows
    to Python, whatever the window's size; the same order statistics, so the same result."""
    names = list(groups)
    if dialect_of(bind) is POSTGRES:
        # Each percentile_cont sorts its group's values: with the default 4 MB a million
        # latencies spill to disk (about twice as slow at 1 M decisions). For the rest of
        # the (read-only) transaction; a sort takes only what it holds.
        bind.execute(text("SET LOCAL work_mem = '64MB'"))
        wanted = postgresql.array([float(q) for q in quantiles])
        query = select(
            *(func.count(column).filter(groups[name]) for name in names),
            *(
                func.percentile_cont(wanted).within_group(column).filter(groups[name])
                for name in names
            ),
        ).where(*where)
        row: Any = bind.execute(query).one()
        return {
            name: (int(row[i]), [float(v) for v in row[len(names) + i]] if row[i] else None)
            for i, name in enumerate(names)
        }
    flags = [case((groups[name], 1), else_=0) for name in names]
    base = [*where, column.is_not(None)]
    total, low, high, *sizes = bind.execute(
        select(func.count(), func.min(column), func.max(column), *map(func.sum, flags)).where(*base)
    ).one()
    counts = [int(size or 0) for size in sizes]
    # Per group, the ranks (0-based, ascending) of the order statistics its quantiles need.
    needed = {g: _quantile_ranks(n, quantiles) for g, n in enumerate(counts) if n}
    order_statistics: dict[tuple[int, int], float] = {}
    if needed:
        _SqliteOrderStatistics(bind, column, flags, fetch_rows, order_statistics).settle(
            base,
            float(low),
            float(high),
            int(total),
            {g: [(k, k) for k in ks] for g, ks in needed.items()},
        )
    out: dict[str, tuple[int, list[float] | None]] = {}
    for g, name in enumerate(names):
        n = counts[g]
        out[name] = (n, [_interpolate(n, q, g, order_statistics) for q in quantiles] if n else None)
    return out


def _quantile_ranks(n: int, quantiles: Sequence[float]) -> list[int]:
    ranks: set[int] = set()
    for q in quantiles:
        below = int((n - 1) * float(q))  # floor: never negative
        ranks.update((below, min(below + 1, n - 1)))
    return sorted(ranks)


def _interpolate(
    n: int, q: float, group: int, order_statistics: Mapping[tuple[int, int], float]
) -> float:
    """numpy's linear quantile of n values from its two order statistics: np.quantile over
    just those two, at the fraction of the way between them, interpolates identically."""
    position = (n - 1) * float(q)
    below = int(position)
    pair = np.array(
        [order_statistics[(group, below)], order_statistics[(group, min(below + 1, n - 1))]]
    )
    return float(np.quantile(pair, position - below))


_BUCKETS = 4096
Wants = dict[int, list[tuple[int, int]]]  # group -> (rank in the group, rank in the region)


class _SqliteOrderStatistics:
    """Finds order statistics of `column` per group by narrowing to buckets in SQL."""

    def __init__(
        self,
        bind: Connection | Session,
        column: Any,
        flags: list[Any],
        fetch_rows: int,
        found: dict[tuple[int, int], float],
    ) -> None:
        self.bind, self.column, self.flags = bind, column, flags
        self.fetch_rows, self.found = fetch_rows, found

    def settle(
        self, conditions: list[Any], low: float, high: float, rows: int, wants: Wants
    ) -> None:
        """Fill `found` for `wants` among the `rows` rows `conditions` select, whose values
        lie in [low, high]."""
        if low == high:
            for g, pairs in wants.items():
                for rank, _ in pairs:
                    self.found[(g, rank)] = low
            return
        if rows <= self.fetch_rows:
            self._fetch(conditions, None, {None: wants})
            return
        from sqlalchemy import Integer
        from sqlalchemy import cast as sql_cast

        # The same SQL expression picks a bucket's rows later, so no float edge can differ.
        bucket = sql_cast((self.column - low) * (_BUCKETS / (high - low)), Integer)
        histogram = self.bind.execute(
            select(
                bucket,
                func.count(),
                func.min(self.column),
                func.max(self.column),
                *map(func.sum, self.flags),
            )
            .where(*conditions)
            .group_by(bucket)
            .order_by(bucket)
        ).all()
        if len(histogram) == 1:  # no narrowing possible (e.g. an infinite bound)
            self._fetch(conditions, None, {None: wants})
            return
        by_bucket: dict[Any, Wants] = {}
        for g, pairs in wants.items():
            before = 0
            pending = sorted(pairs, key=lambda pair: pair[1])
            for b, _, _, _, *in_groups in histogram:
                inside = int(in_groups[g] or 0)
                while pending and pending[0][1] < before + inside:
                    rank, local = pending.pop(0)
                    by_bucket.setdefault(b, {}).setdefault(g, []).append((rank, local - before))
                before += inside
        shape = {b: (int(n), float(lo), float(hi)) for b, n, lo, hi, *_ in histogram}
        small = {b: w for b, w in by_bucket.items() if shape[b][0] <= self.fetch_rows}
        if small:
            self._fetch(conditions, bucket, small)
        for b, bucket_wants in by_bucket.items():
            if b not in small:
                n, lo, hi = shape[b]
                self.settle([*conditions, bucket == b], lo, hi, n, bucket_wants)

    def _fetch(self, conditions: list[Any], bucket: Any, wants: dict[Any, Wants]) -> None:
        """The rows of the wanted buckets (all rows with no bucket), sorted per group in numpy."""
        from sqlalchemy import literal

        key = bucket if bucket is not None else literal(None)
        where = [*conditions] + ([bucket.in_(list(wants))] if bucket is not None else [])
        rows = self.bind.execute(select(self.column, key, *self.flags).where(*where)).all()
        for b, bucket_wants in wants.items():
            # Plain tuples: numpy reads a Row as an opaque sequence, 30x slower.
            chosen = [tuple(row) for row in rows if bucket is None or row[1] == b]
            values = np.array([row[0] for row in chosen], dtype=float)
            member = np.array([row[2:] for row in chosen], dtype=float).reshape(len(chosen), -1)
            for g, pairs in bucket_wants.items():
                ordered = np.sort(values[member[:, g] == 1])
                for rank, local in pairs:
                    self.found[(g, rank)] = float(ordered[local])
