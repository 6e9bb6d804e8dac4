"""SHADOWEVAL_DATABASE_READ_URL against a real streaming standby (issue 19 §3).

The test builds its own two-server PostgreSQL cluster in a temporary directory (initdb,
pg_basebackup -R, hot standby), so it needs the server binaries; it skips, saying why,
where they are missing or cannot be run (as root it runs them as the `postgres` user).
About 5–10 s: two servers start.

With the standby's replay paused, a decision posted to the primary is missing from a
replica route and present through a primary route, `shadoweval_replica_lag_seconds`
grows above 0, and once replay resumes the replica route shows it and the lag is 0.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlmodel import Session

from shadoweval.app import create_app
from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from shadoweval.db import create_db_engine, upgrade_database
from tests.conftest import decision, free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class Cluster:
    primary_url: str
    standby_url: str


def _runner() -> list[str]:
    """How to run the server binaries: directly, or as `postgres` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root without a `postgres` user to run PostgreSQL as")
    if shutil.which("runuser") is None:
        pytest.skip("running as root without `runuser`")
    return ["runuser", "-u", "postgres", "--"]


def _run(prefix: list[str], *argv: str) -> None:
    subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=60)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN} (set PG_BIN)")
    prefix = _runner()
    # Not pytest's tmp_path: its parents are private to us, and the servers may run as
    # another user.
    root = Path(tempfile.mkdtemp(prefix="shadoweval-standby-"))
    if prefix:
        shutil.chown(root, "postgres")
    primary, standby = root / "primary", root / "standby"
    primary_port, standby_port = free_port(), free_port()
    _run(prefix, str(PG_BIN / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust")
    with (primary / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port={primary_port}\nlisten_addresses='127.0.0.1'\n"
            f"unix_socket_directories='{root}'\nshared_buffers=16MB\n"
            "wal_level=replica\nmax_wal_senders=4\n"
        )
    with (primary / "pg_hba.conf").open("a") as hba:
        hba.write("host replication all 127.0.0.1/32 trust\n")
    started: list[Path] = []
    try:
        _run(
            prefix,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(primary),
            "-l",
            f"{primary}.log",
            "-w",
            "start",
        )
        started.append(primary)
        _run(
            prefix,
            str(PG_BIN / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(primary_port), "-U", "postgres"),
            *("-D", str(standby), "-R", "-X", "stream"),
        )
        with (standby / "postgresql.conf").open("a") as conf:
            conf.write(f"port={standby_port}\n")
        _run(
            prefix,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(standby),
            "-l",
            f"{standby}.log",
            "-w",
            "start",
        )
        started.append(standby)
        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{primary_port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE shadoweval"))
        admin.dispose()
        yield Cluster(
            primary_url=f"postgresql://postgres@127.0.0.1:{primary_port}/shadoweval",
            standby_url=f"postgresql://postgres@127.0.0.1:{standby_port}/shadoweval",
        )
    finally:
        for data in reversed(started):
            _run(prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _lag(client: TestClient) -> float:
    found = re.search(r"^shadoweval_replica_lag_seconds (\S+)$", client.get("/metrics").text, re.M)
    assert found, "no replica lag gauge"
    return float(found.group(1))


def _listed(client: TestClient, key: str) -> list[str]:
    answer = client.get("/v1/decisions", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    return [row["request_id"] for row in answer.json()["items"]]


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_paused_standby_lags_on_replica_routes_only(cluster: Cluster, tmp_path: Path) -> None:
    settings = Settings(
        database_url=cluster.primary_url,
        database_read_url=cluster.standby_url,
        data_dir=tmp_path / "data",
        sampling_mode="at_ingest",
        plan_refresh_seconds=0,
    )
    upgrade_database(settings)
    engine = create_db_engine(settings)
    with Session(engine) as session:
        ingest = auth_service.create_key(session=session, scopes=[Scope.INGEST]).key
        read = auth_service.create_key(session=session, scopes=[Scope.READ]).key
    standby = create_engine(
        settings.read_replica_settings().resolved_database_url,  # type: ignore[union-attr]
        isolation_level="AUTOCOMMIT",
    )
    try:
        with TestClient(create_app(settings, engine)) as client:
            post = {"Authorization": f"Bearer {ingest}"}
            # A key made a moment ago works on a replica route: keys are checked on the primary.
            assert (
                client.post("/v1/decisions", json=[decision("a")], headers=post).status_code == 202
            )
            _wait_for(lambda: _listed(client, read) == ["a"])
            assert _lag(client) == 0.0

            with standby.connect() as connection:
                connection.execute(text("SELECT pg_wal_replay_pause()"))
            assert (
                client.post("/v1/decisions", json=[decision("b")], headers=post).status_code == 202
            )
            _wait_for(lambda: _lag(client) > 0.5)
            assert _listed(client, read) == ["a"]  # the replica has not replayed "b"
            with engine.connect() as connection:
                b_id = connection.execute(
                    text("SELECT id FROM decision WHERE request_id = 'b'")
                ).scalar_one()
            by_id = client.get(f"/v1/decisions/{b_id}", headers={"Authorization": f"Bearer {read}"})
            assert by_id.status_code == 200  # a read of one's own write: on the primary

            with standby.connect() as connection:
                connection.execute(text("SELECT pg_wal_replay_resume()"))
            _wait_for(lambda: sorted(_listed(client, read)) == ["a", "b"])
            _wait_for(lambda: _lag(client) == 0.0)
    finally:
        standby.dispose()
        engine.dispose()
