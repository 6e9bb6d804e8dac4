"""Storage: the database URLs, the connection pool and the bounded waits on it."""

from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field


class DatabaseSettings(BaseModel):
    """Where the data lives and how long a wait on the database may take."""

    data_dir: Path = Field(
        default=Path(".shadoweval"),
        description="Where the embedded SQLite database and local state live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; `postgresql://…` is accepted. Default: SQLite in data_dir.",
    )
    database_read_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a read replica for the read routes the dashboard "
        "uses (deps.REPLICA_READ_ROUTES); everything that reads its own writes stays on "
        "database_url. Default: none, every read goes to the primary.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)

    # A stalled PostgreSQL must not hang requests: each wait on it is bounded, and a request
    # waits at most about max(statement, pool + connect) seconds before its 503.
    db_connect_timeout_seconds: int = Field(
        default=2,
        ge=2,
        description="Seconds to open a PostgreSQL connection (libpq's minimum is 2).",
    )
    db_statement_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds one statement or commit may take in the API (PostgreSQL "
        "statement_timeout, and a client-side limit for a database that stops answering).",
    )
    db_worker_statement_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="The same limit for the worker's jobs, whose aggregations run longer; "
        "a job over it fails, is logged, and runs again next tick.",
    )
    db_pool_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a request waits for a free pooled connection before its 503.",
    )

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to, with the psycopg 3 driver for PostgreSQL."""
        if self.database_url is None:
            return f"sqlite:///{self.data_dir / 'shadoweval.db'}"
        return _with_psycopg(self.database_url)

    def read_replica_settings(self) -> Self | None:
        """These settings with the read replica as the database (for `create_db_engine`),
        or None when no `database_read_url` is set."""
        if self.database_read_url is None:
            return None
        return self.model_copy(
            update={
                "database_url": _with_psycopg(self.database_read_url),
                "database_read_url": None,
            }
        )


def _with_psycopg(url: str) -> str:
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url
