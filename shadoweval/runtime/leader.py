"""Leader election for the periodic planning jobs.

PostgreSQL: a session-level advisory lock held on a dedicated connection. When
the leader dies its connection closes, the server releases the lock, and the
next worker to try (every tick) takes over. SQLite: a lease row renewed every
tick; a leader that stops renewing is replaced once the lease expires.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from shadoweval.db import utcnow
from shadoweval.runtime.models import LeaderLease
from shadoweval.sql import dialect_of, table_of

log = logging.getLogger(__name__)

# Arbitrary but fixed: identifies shadoweval's planner lock among the database's advisory locks.
PLANNER_LOCK_KEY = 0x5AD0E7A1
LEASE_TABLE = table_of(LeaderLease)


class LeaderElector:
    def __init__(self, engine: Engine, owner: str, lease_seconds: float, name: str = "planner"):
        self.engine = engine
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.name = name
        self._connection: Connection | None = None
        self.is_leader = False

    def refresh(self) -> bool:
        """Acquire or keep leadership; returns whether this worker leads now."""
        was_leader = self.is_leader
        try:
            if dialect_of(self.engine).has_advisory_locks:
                self.is_leader = self._refresh_advisory_lock()
            else:
                self.is_leader = self._refresh_lease()
        except SQLAlchemyError as error:
            log.warning("leader check failed, stepping down: %s", error)
            self._drop_connection()
            self.is_leader = False
        if self.is_leader != was_leader:
            log.info(
                "leadership %s",
                "acquired" if self.is_leader else "lost",
                extra={"worker": self.owner},
            )
        return self.is_leader

    def _refresh_advisory_lock(self) -> bool:
        if self._connection is not None and self.is_leader:
            # Still connected means still holding the lock.
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            return True
        if self._connection is None:
            self._connection = self.engine.connect()
        acquired = bool(
            self._connection.execute(select(func.pg_try_advisory_lock(PLANNER_LOCK_KEY))).scalar()
        )
        self._connection.commit()
        return acquired

    def _refresh_lease(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.lease_seconds)
        columns = LEASE_TABLE.c
        with self.engine.begin() as connection:
            renewed = connection.execute(
                update(LEASE_TABLE)
                .where(
                    columns.name == self.name,
                    (columns.owner == self.owner) | (columns.lease_until < now),
                )
                .values(owner=self.owner, lease_until=until)
            ).rowcount
            if renewed:
                return True
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(LEASE_TABLE).values(name=self.name, owner=self.owner, lease_until=until)
                )
            return True
        except IntegrityError:
            return False  # somebody else holds a live lease

    def release(self) -> None:
        try:
            if dialect_of(self.engine).has_advisory_locks:
                if self._connection is not None and self.is_leader:
                    self._connection.execute(select(func.pg_advisory_unlock(PLANNER_LOCK_KEY)))
                    self._connection.commit()
            elif self.is_leader:
                with self.engine.begin() as connection:
                    connection.execute(
                        LEASE_TABLE.delete().where(
                            LEASE_TABLE.c.name == self.name, LEASE_TABLE.c.owner == self.owner
                        )
                    )
        except SQLAlchemyError as error:
            log.warning("could not release leadership cleanly: %s", error)
        finally:
            self._drop_connection()
            self.is_leader = False

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.close()
            self._connection = None
