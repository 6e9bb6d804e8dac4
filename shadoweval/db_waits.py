"""Bounded waits on PostgreSQL: the stall watchdog, the breaker that fails fast while the
database is stalled, and the per-engine state the error mapping reads."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

log = logging.getLogger("shadoweval.db")

# statement_timeout cannot help when the server stops answering altogether (a SIGSTOPped
# or partitioned PostgreSQL: the kernel still acknowledges the bytes, nothing ever comes
# back), and libpq has no read timeout. So a watchdog thread shuts down the socket of any
# connection that has waited past its limit: the blocked call then fails at once as if the
# server had left, the pool replaces the connection, and the engine's StallBreaker fails
# every later call at once until a probe connection gets an answer again.

# A pre-ping is `SELECT 1`: a healthy server answers it in milliseconds.
PING_LIMIT_SECONDS = 1.0
# A wait is looked at once it reaches the statement timeout, and broken only if the
# server also leaves a `SELECT 1` on a spare connection unanswered this long. A live
# server keeps the wait (it cancels a slow statement itself, and the connection
# survives); one wait can also legitimately outlast the limit: a pipelined executemany
# is one wait, and the server sends nothing until its Sync, so N statements queued
# behind a concurrent writer's locks take up to N limits. A frozen server is found
# within the statement timeout + this check.
HEALTH_CHECK_SECONDS = 0.5


class StallWatch:
    """Breaks DBAPI connections that wait on the server longer than their limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[float, Any]] = {}
        self._broken: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def start(self, dbapi_connection: Any, limit_seconds: float) -> None:
        with self._lock:
            self._deadlines[id(dbapi_connection)] = (
                time.monotonic() + limit_seconds,
                dbapi_connection,
            )
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="db-stall-watch", daemon=True
                )
                self._thread.start()

    def stop(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._deadlines.pop(id(dbapi_connection), None)

    def was_broken(self, dbapi_connection: Any) -> bool:
        return dbapi_connection is not None and dbapi_connection in self._broken

    def _run(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self._lock:
                expired = [
                    connection
                    for deadline, connection in self._deadlines.values()
                    if deadline <= now
                ]
            answering: dict[int, bool] = {}
            for connection in expired:
                breaker = getattr(connection, "breaker", None)
                if breaker is not None and id(breaker) not in answering:
                    answering[id(breaker)] = breaker.server_answers(HEALTH_CHECK_SECONDS)
                with self._lock:
                    if self._deadlines.get(id(connection), (0.0, None))[1] is not connection:
                        continue  # its wait ended meanwhile
                    if breaker is not None and answering[id(breaker)]:
                        # Busy, not stalled: the server's statement_timeout bounds each
                        # statement; only silence from the whole server is a stall.
                        self._deadlines[id(connection)] = (
                            time.monotonic() + connection.stall_limit_seconds,
                            connection,
                        )
                        continue
                    del self._deadlines[id(connection)]
                    self._broken.add(connection)
                _shut_down_socket(connection)


def _shut_down_socket(dbapi_connection: Any) -> None:
    """Wake a thread blocked reading this psycopg connection: EOF, as if the server left."""
    try:
        fd = dbapi_connection.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        log.warning("database did not answer in time; broke the waiting connection")
    except Exception as exc:  # already closed (OSError, or psycopg's own): nothing waits on it
        log.debug("could not break a stalled connection: %s", exc)


STALL_WATCH = StallWatch()


@dataclass
class EngineState:
    statement_timeout_seconds: float | None = None
    disk_full_at: float | None = None  # monotonic time of the last disk-full error
    breaker: StallBreaker | None = None


_ENGINE_STATE: weakref.WeakKeyDictionary[Engine, EngineState] = weakref.WeakKeyDictionary()


def engine_state(engine: Engine) -> EngineState:
    return _ENGINE_STATE.setdefault(engine, EngineState())


def statement_timeout_of(engine: Engine) -> float | None:
    """The statement timeout `engine` enforces (None: SQLite, whose busy timeout rules)."""
    return engine_state(engine).statement_timeout_seconds


class StallBreaker:
    """Once the database is found stalled, fail its callers at once until it answers again.

    Without it every caller still pays a full timeout (and the single ingest writer pays
    them one after another); with it, a probe thread tries a fresh connection every
    PROBE_INTERVAL_SECONDS and closes the breaker on the first answer.
    """

    PROBE_INTERVAL_SECONDS = 0.5

    def __init__(self, limit_seconds: float, connect: Callable[[], Any]) -> None:
        self.limit_seconds = limit_seconds
        self._connect = connect
        self._lock = threading.Lock()
        self.open = False
        self._probe: threading.Thread | None = None
        self._spare: Any = None  # the health check's own connection, kept open
        self._spare_lock = threading.Lock()

    def trip(self) -> None:
        with self._lock:
            if self.open:
                return
            self.open = True
            log.warning(
                "database not answering within %gs: failing fast until it answers",
                self.limit_seconds,
            )
            self._probe = threading.Thread(target=self._run_probe, name="db-probe", daemon=True)
            self._probe.start()

    def server_answers(self, within_seconds: float) -> bool:
        """Whether the server answers `SELECT 1` on the spare connection within the time.

        The ping runs on its own thread so a frozen server costs the caller only
        `within_seconds`; a ping still stuck keeps the spare locked, so later checks
        fail fast until the stall watch breaks it.
        """
        answered: list[bool] = []

        def ping() -> None:
            if not self._spare_lock.acquire(blocking=False):
                return
            try:
                if self._spare is None or self._spare.closed:
                    self._spare = self._connect()
                    self._spare.autocommit = True
                self._spare.stall_limit_seconds = max(within_seconds, PING_LIMIT_SECONDS)
                self._spare.execute("SELECT 1")
                answered.append(True)
            except Exception as exc:  # down or stalled: not answering
                log.debug("database health check failed: %s", exc)
                with contextlib.suppress(Exception):
                    if self._spare is not None:
                        self._spare.close()
                self._spare = None
            finally:
                self._spare_lock.release()

        thread = threading.Thread(target=ping, name="db-health", daemon=True)
        thread.start()
        thread.join(within_seconds)
        return bool(answered)

    def check(self) -> None:
        if self.open:
            raise DatabaseStallError(
                ConnectionError("the database stopped answering; failing fast until it does"),
                limit_seconds=self.limit_seconds,
            )

    def _run_probe(self) -> None:
        while self.open:
            time.sleep(self.PROBE_INTERVAL_SECONDS)
            try:
                connection = self._connect()
                try:
                    connection.stall_limit_seconds = PING_LIMIT_SECONDS
                    connection.execute("SELECT 1")
                finally:
                    connection.close()
            except Exception as exc:  # still stalled (or down): keep failing fast
                log.debug("database probe failed: %s", exc)
                continue
            with self._lock:
                self.open = False
            log.warning("database answers again")


def bound_database_waits(engine: Engine, limit_seconds: float) -> None:
    """Open `engine`'s PostgreSQL connections as StallBoundConnection, so every wait on the
    server (statements, COPY, fetches, commits, also through the driver directly) is bounded,
    pre-pings more tightly, and a stall trips the engine's StallBreaker."""
    import psycopg

    watch_limit = limit_seconds
    engine_state(engine).statement_timeout_seconds = limit_seconds
    connection_class = _stall_bound_connection_class(psycopg.Connection)
    last_arguments: list[tuple[Any, dict[str, Any]]] = []

    def probe_connect() -> Any:
        cargs, cparams = last_arguments[-1]
        return connection_class.connect(*cargs, **cparams)  # no breaker: it probes for one

    breaker = StallBreaker(limit_seconds, probe_connect)
    engine_state(engine).breaker = breaker

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        last_arguments[:] = [(cargs, cparams)]
        breaker.check()
        try:
            connection = connection_class.connect(*cargs, **cparams)
        except psycopg.errors.ConnectionTimeout as exc:
            breaker.trip()
            raise DatabaseStallError(exc, limit_seconds=limit_seconds) from exc
        connection.stall_limit_seconds = watch_limit
        connection.statement_timeout_seconds = limit_seconds
        connection.breaker = breaker
        return connection

    ping = engine.dialect.do_ping

    def bounded_ping(dbapi_connection: Any) -> bool:
        dbapi_connection.stall_limit_seconds = PING_LIMIT_SECONDS
        try:
            return bool(ping(dbapi_connection))
        finally:
            dbapi_connection.stall_limit_seconds = watch_limit

    # An instance attribute shadows the dialect class's method for this engine only.
    engine.dialect.do_ping = bounded_ping  # type: ignore[method-assign]


@functools.cache
def _stall_bound_connection_class(base: type[Any]) -> type[Any]:
    class StallBoundConnection(base):  # type: ignore[misc]
        """A psycopg connection whose every wait on the server is watched by STALL_WATCH.

        `Connection.wait` is the one place psycopg blocks on the socket once connected.
        """

        stall_limit_seconds = 5.5
        statement_timeout_seconds = 5.0
        breaker: StallBreaker | None = None  # None: the probe's own connection

        def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
            if self.breaker is not None:
                self.breaker.check()  # before anything is sent: the connection stays usable
            STALL_WATCH.start(self, self.stall_limit_seconds)
            try:
                return super().wait(gen, *args, **kwargs)
            except Exception as exc:
                if STALL_WATCH.was_broken(self):
                    if self.breaker is not None:
                        self.breaker.trip()
                    raise DatabaseStallError(
                        exc, limit_seconds=self.statement_timeout_seconds
                    ) from exc
                raise
            finally:
                STALL_WATCH.stop(self)

    return StallBoundConnection


class DatabaseStallError(OperationalError):
    """A statement, fetch or commit the database did not answer within the timeout (the
    connection is broken, and SQLAlchemy replaces it once it is returned), or a call
    refused at once while the database is known to be stalled."""

    def __init__(self, orig: BaseException, *, limit_seconds: float) -> None:
        super().__init__(f"database not answering within {limit_seconds:g}s", None, orig)
        self.limit_seconds = limit_seconds
