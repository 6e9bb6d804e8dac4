"""Worker heartbeats and the leader lease (the leader lock where advisory locks do not exist)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import JsonType, UtcDateTime


class WorkerHeartbeat(SQLModel, table=True):
    __tablename__ = "worker_heartbeat"

    worker_id: str = SQLField(primary_key=True, max_length=100)
    hostname: str = SQLField(max_length=200)
    pid: int
    started_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    last_seen_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    is_leader: bool = False
    # Per job: last run, last error, runs and failures since start.
    jobs: dict[str, Any] = SQLField(
        default_factory=dict, sa_column=Column(JsonType, nullable=False)
    )


class LeaderLease(SQLModel, table=True):
    """On SQLite, the leader holds this row's lease and renews it; on PostgreSQL an
    advisory lock does the job and this table stays empty."""

    __tablename__ = "leader_lease"

    name: str = SQLField(primary_key=True, max_length=64)
    owner: str = SQLField(max_length=100)
    lease_until: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
