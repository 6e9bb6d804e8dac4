"""Runtime service: worker heartbeats and queue depths (read by /metrics)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Engine

from shadoweval.judge.models import Verdict
from shadoweval.runtime.models import WorkerHeartbeat
from shadoweval.shadow.models import ShadowRun

HEARTBEAT_TABLE = cast(Table, WorkerHeartbeat.__table__)  # type: ignore[attr-defined]
QUEUES: dict[str, Table] = {
    "shadow_run": cast(Table, ShadowRun.__table__),  # type: ignore[attr-defined]
    "verdict": cast(Table, Verdict.__table__),  # type: ignore[attr-defined]
}


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


def queue_depths(engine: Engine) -> dict[tuple[str, str], int]:
    """Rows per (queue, status)."""
    depths: dict[tuple[str, str], int] = {}
    with engine.connect() as connection:
        for queue, table in QUEUES.items():
            rows = connection.execute(select(table.c.status, func.count()).group_by(table.c.status))
            for status, count in rows:
                depths[(queue, status)] = int(count)
    return depths


def heartbeats(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(HEARTBEAT_TABLE))]


def budget_today(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    """Today's (UTC) budget rows per account."""
    from shadoweval.sampling.models import BudgetDay

    table = cast(Table, BudgetDay.__table__)  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return [
            dict(row._mapping)
            for row in connection.execute(
                select(table).where(table.c.day == now.strftime("%Y-%m-%d"))
            )
        ]
