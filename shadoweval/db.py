"""Database engine, column types, the session dependency, and migration status."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import pydantic_core
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicError
from fastapi import Depends, Request
from sqlalchemy import JSON, BigInteger, DateTime, Integer, Table, event, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SqlalchemyTimeoutError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

from shadoweval.config import Settings
from shadoweval.db_waits import (
    DatabaseStallError,
    bound_database_waits,
    engine_state,
    statement_timeout_of,
)
from shadoweval.exceptions import (
    DatabaseNotReady,
    DatabaseStalled,
    Overloaded,
    ShadowevalError,
    StorageFull,
)

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_FULL = getattr(sqlite3, "SQLITE_FULL", 13)

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JsonType = JSON().with_variant(postgresql.JSONB(), "postgresql")
# 64-bit ids on PostgreSQL; SQLite's INTEGER PRIMARY KEY is already 64-bit and autoincrements.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so values are
    stored as naive UTC, which also keeps their text form sortable.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; shadoweval stores aware UTC datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def aware_utc(value: Any) -> datetime | None:
    """A datetime read back by a raw or aggregate query (SQLite gives naive UTC, or text for
    aggregates) as an aware UTC datetime; None stays None."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else cast(datetime, value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def json_text(value: Any) -> str:
    """JSON text of a value, as stored in JSON columns.

    pydantic-core's encoder (Rust) instead of json.dumps: ~3× faster, and ingest
    encodes several JSON columns per decision.
    """
    return pydantic_core.to_json(value).decode()


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc_day(column: Any, dialect_name: str) -> Any:
    """SQL for the UTC calendar day of a UtcDateTime column, as 'YYYY-MM-DD' text."""
    if dialect_name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)  # SQLite stores naive UTC


def dialect_insert(bind: Connection | Engine | Session) -> Callable[[Table], Any]:
    """The INSERT constructor of `bind`'s dialect, for ON CONFLICT clauses.

    Both dialects spell on_conflict_do_nothing/do_update the same way; the generic
    sqlalchemy.insert has neither. Typed Any because their Insert classes differ.
    """
    dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect
    return postgresql.insert if dialect.name == "postgresql" else sqlite.insert


def create_db_engine(
    settings: Settings, *, statement_timeout_seconds: float | None = None
) -> Engine:
    """The engine for `settings`: SQLite in WAL mode with a busy timeout, or a PostgreSQL pool
    whose every wait is bounded (connect, pool checkout, each statement and commit).

    `statement_timeout_seconds` overrides `db_statement_timeout_seconds` (the worker's jobs
    run longer aggregations than a request may).
    """
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": settings.sqlite_busy_timeout_ms / 1000,
            },
            pool_timeout=settings.db_pool_timeout_seconds,
            json_serializer=json_text,
        )
        busy_timeout = settings.sqlite_busy_timeout_ms

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers proceed while one writer commits.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")
            cursor.close()

        return engine
    limit = statement_timeout_seconds or settings.db_statement_timeout_seconds
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=True,
        json_serializer=json_text,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_seconds,
            # The server cancels a slow statement itself and keeps the connection.
            "options": f"-c statement_timeout={int(limit * 1000)}",
        },
    )
    if url.get_driver_name() == "psycopg":  # the watchdog hooks psycopg 3's wait
        bound_database_waits(engine, limit)
    else:
        log.warning("driver %s: no client-side stall limit (psycopg 3 only)", url.drivername)
    return engine


def database_error(exc: BaseException, *, engine: Engine | None = None) -> ShadowevalError:
    """The domain error for a database failure: a full disk (507), a stall (503 with the
    timeout), or any other operational failure (503, retry shortly)."""
    if is_disk_full(exc):
        if engine is not None:
            note_disk_full(engine)
        return StorageFull(
            "the database's disk is full; nothing can be stored until an operator frees "
            "space or grows the volume (retrying will not help)"
        )
    if isinstance(exc, DatabaseStallError):
        return DatabaseStalled(
            f"database not answering within {exc.limit_seconds:g}s; retry later",
            retry_after_s=max(1, round(exc.limit_seconds)),
        )
    limit = statement_timeout_of(engine) if engine is not None else None
    if isinstance(exc, SqlalchemyTimeoutError):
        return DatabaseStalled(
            "no database connection became free in time (the database is slow or stalled); "
            "retry later",
            retry_after_s=max(1, round(limit or 1)),
        )
    if _sqlstate(exc) == "57014" or _is_connect_timeout(exc):  # query_canceled; connect
        shown = f" within {limit:g}s" if limit else " in time"
        return DatabaseStalled(
            f"database not answering{shown}; retry later",
            retry_after_s=max(1, round(limit or 1)),
        )
    return Overloaded("the database is busy or unreachable; retry shortly")


def driver_operational_errors() -> tuple[type[Exception], ...]:
    """The drivers' own OperationalError classes: code that talks to the driver directly
    (ingest's bulk insert) raises these unwrapped by SQLAlchemy."""
    errors: list[type[Exception]] = [sqlite3.OperationalError]
    try:
        import psycopg
    except ImportError:  # SQLite-only install
        return tuple(errors)
    return (*errors, psycopg.OperationalError)


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or PostgreSQL's disk_full (53100)."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL:
        return True
    if _sqlstate(exc) == "53100":
        return True
    return "database or disk is full" in str(orig)


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None)


def _is_connect_timeout(exc: BaseException) -> bool:
    text_ = str(getattr(exc, "orig", exc)).lower()
    return "timeout expired" in text_ or "connection timeout" in text_


class SqliteWriterLock:
    """Queues one SQLite file's ingest writers, across processes, before they write.

    SQLite's busy handler sleeps in growing steps (up to 100 ms) and polls, so with
    two API processes writing one file each spent a fifth of its time asleep while
    the lock was free. A blocking `flock` wakes the next writer the moment the holder
    releases it; the kernel drops it when a process dies. Other writers (the worker's
    jobs) still meet the busy handler, which stays the correctness guard.
    """

    def __init__(self, database_path: Path) -> None:
        self.path = database_path.with_name(database_path.name + "-ingest.lock")
        self._threads = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> SqliteWriterLock:
        self._threads.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


def ingest_write_lock(engine: Engine) -> AbstractContextManager[object]:
    """What ingest holds from its first write to its commit: for a SQLite file, a
    SqliteWriterLock; PostgreSQL locks rows, not the database, so nothing."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return nullcontext()
    return SqliteWriterLock(Path(database).resolve())


def take_sqlite_write_lock(session: Session) -> None:
    """On SQLite, start the session's transaction holding the write lock (BEGIN IMMEDIATE).

    A deferred transaction that reads first fails its first write at once with "database
    is locked" (SQLITE_BUSY_SNAPSHOT skips the busy wait) whenever another connection
    committed in between; with the lock taken up front the caller waits its turn like
    any other writer, and what it reads stays true until its commit. No-op elsewhere.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    if not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def get_session(request: Request) -> Iterator[Session]:
    """The request-scoped session; the engine lives on the app."""
    session = Session(request.app.state.engine, expire_on_commit=False)
    try:
        yield session
    finally:
        try:
            session.close()
        except SQLAlchemyError as exc:
            # Closing only rolls back what was not committed; a database that stops
            # answering then must not turn an answer already sent into a reset connection.
            log.warning("closing a request's session failed: %s", str(exc).splitlines()[0])


SessionDep = Annotated[Session, Depends(get_session)]


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session for jobs and the CLI: commits on success, rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# --- migrations ----------------------------------------------------------------------------


def alembic_config(database_url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to `revision` (`shadoweval db upgrade`)."""
    url = settings.resolved_database_url
    if make_url(url).get_backend_name() == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    head = _script_directory().get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_database_ready(engine: Engine) -> str:
    """Return the database's revision, or raise DatabaseNotReady saying what to do.

    A database behind this code is not ready. A revision this code does not know
    is taken to be newer (a rolling deploy migrated ahead of old replicas), so it
    is served with a warning: migrations are written to stay backward compatible.
    """
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        error = database_error(exc, engine=engine)
        if isinstance(error, DatabaseStalled):
            raise DatabaseNotReady(f"database {shown}: {error.message}") from exc
        raise DatabaseNotReady(
            f"database {shown} is unreachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    head = head_revision()
    if current == head:
        return head
    if current is not None and not _is_known_revision(current):
        log.warning(
            "database is at revision %s, newer than this code's %s; serving anyway",
            current,
            head,
        )
        return current
    state = "empty (never migrated)" if current is None else f"at revision {current}"
    raise DatabaseNotReady(
        f"database {shown} is {state}, expected revision {head}; run `shadoweval db upgrade`",
        current=current,
        expected=head,
    )


def _is_known_revision(revision: str) -> bool:
    try:
        return _script_directory().get_revision(revision) is not None
    except AlembicError:
        return False


# --- readiness -----------------------------------------------------------------------------

# A disk-full error is remembered this long, so /readyz reports what ingest just hit even on
# PostgreSQL, where no client-side query can see the disk. Writes failing on a disk that
# stays full keep renewing it; once space is freed, readiness returns within this time.
DISK_FULL_MEMORY_SECONDS = 60.0
# Below this, SQLite cannot even grow its WAL by a few pages: the disk is as good as full.
SQLITE_MIN_FREE_BYTES = 64 * 1024


def note_disk_full(engine: Engine) -> None:
    engine_state(engine).disk_full_at = time.monotonic()


def storage_full_reason(engine: Engine) -> str | None:
    """Why `engine`'s database cannot take writes, or None: a SQLite file at its page limit
    (`PRAGMA max_page_count`) or a disk-full error seen in the last minute."""
    noted = engine_state(engine).disk_full_at
    if noted is not None and time.monotonic() - noted < DISK_FULL_MEMORY_SECONDS:
        return "the database's disk is full (a write just failed with disk full); free space"
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
        limit = connection.exec_driver_sql("PRAGMA max_page_count").scalar_one()
        free = connection.exec_driver_sql("PRAGMA freelist_count").scalar_one()
    if int(pages) >= int(limit) and int(free) == 0:
        return f"the SQLite file is full ({pages} of max_page_count {limit} pages); free space"
    database = engine.url.database
    if database and database != ":memory:":
        available = shutil.disk_usage(Path(database).resolve().parent).free
        if available < SQLITE_MIN_FREE_BYTES:
            return f"the disk holding {database} has {available} bytes free; free space"
    return None


def database_readiness(engine: Engine) -> tuple[int, dict[str, Any]]:
    """The status and body of /readyz: 200 ready, 503 unreachable, stalled or not migrated,
    507 when the disk is full (which retrying does not fix)."""
    try:
        revision = check_database_ready(engine)
        full = storage_full_reason(engine)
    except DatabaseNotReady as error:
        return 503, {
            "status": "not ready",
            "detail": error.message,
            "code": error.code,
            **error.context,
        }
    except SQLAlchemyError as exc:
        error_ = database_error(exc, engine=engine)
        return 503, {"status": "not ready", "detail": error_.message, "code": error_.code}
    if full is not None:
        return 507, {"status": "not ready", "detail": full, "code": StorageFull.code}
    return 200, {"status": "ready", "revision": revision}
