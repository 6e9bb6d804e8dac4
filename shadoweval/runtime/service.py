"""Runtime service: worker heartbeats (the queue depths /metrics shows are in gauges.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from shadoweval.runtime.models import WorkerHeartbeat
from shadoweval.sql import table_of

HEARTBEAT_TABLE = table_of(WorkerHeartbeat)


def beat(
    engine: Engine,
    *,
    worker_id: str,
    hostname: str,
    pid: int,
    started_at: datetime,
    now: datetime,
    is_leader: bool,
    jobs: dict[str, Any],
) -> None:
    values = {
        "hostname": hostname,
        "pid": pid,
        "started_at": started_at,
        "last_seen_at": now,
        "is_leader": is_leader,
        "jobs": jobs,
    }
    with engine.begin() as connection:
        updated = connection.execute(
            HEARTBEAT_TABLE.update()
            .where(HEARTBEAT_TABLE.c.worker_id == worker_id)
            .values(**values)
        ).rowcount
        if not updated:
            connection.execute(HEARTBEAT_TABLE.insert().values(worker_id=worker_id, **values))


def heartbeats(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(HEARTBEAT_TABLE))]
