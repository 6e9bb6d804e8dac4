"""A frozen PostgreSQL never hangs the API (issue 15 §9).

A TCP proxy between the API and PostgreSQL stops forwarding for a while, which is what
a SIGSTOPped or partitioned server looks like to a client: connections open, bytes are
acknowledged, nothing comes back. During the freeze every request must be answered within
the statement timeout + 1 s (503 + Retry-After for those that need the database),
`/healthz` within 100 ms (p99), and afterwards the same process serves normally again.

`SHADOWEVAL_TEST_FREEZE_SECONDS` lengthens the freeze (default 6) to measure by hand, e.g.
`SHADOWEVAL_TEST_FREEZE_SECONDS=20 pytest -s tests/e2e/test_frozen_database.py` prints
the figures.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session

from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from shadoweval.db import create_db_engine, upgrade_database
from tests.conftest import _require_postgres, decision, free_port

FREEZE_SECONDS = float(os.environ.get("SHADOWEVAL_TEST_FREEZE_SECONDS", "6"))
STATEMENT_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 2  # libpq's minimum
POOL_TIMEOUT_S = 1.0
HEALTHZ_LIMIT_S = 0.1

pytestmark = pytest.mark.postgresql


class FreezableProxy:
    """Forwards TCP between local clients and `upstream`; `frozen` stops all forwarding
    (and the opening of new upstream connections) until it is cleared."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.frozen = threading.Event()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            while self.frozen.is_set() and not self._closing.is_set():
                time.sleep(0.02)  # the kernel completed the handshake; the server never speaks
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(source, target), daemon=True)
                thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self._closing.is_set():
                if self.frozen.is_set():
                    time.sleep(0.02)
                    continue
                readable, _, _ = select.select([source], [], [], 0.05)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@dataclass
class Timings:
    healthz: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds)
    others: list[tuple[str, int, float, str | None]] = field(default_factory=list)


def _load(url: str, key: str, until: threading.Event, timings: Timings, worker: int) -> None:
    """Reads and ingest in a loop, recording (route, status, seconds, Retry-After)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        n = 0
        while not until.is_set():
            n += 1
            for method, path, body in (
                ("GET", "/v1/verdicts", None),
                ("POST", "/v1/decisions", [decision(f"w{worker}-{n}")]),
            ):
                started = time.perf_counter()
                response = http.request(method, path, json=body)
                timings.others.append(
                    (
                        f"{method} {path}",
                        response.status_code,
                        time.perf_counter() - started,
                        response.headers.get("retry-after"),
                    )
                )
                time.sleep(0.02)  # steady traffic, not a flood that measures this process


def _probe_healthz(url: str, until: threading.Event, timings: Timings) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while not until.is_set():
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            timings.healthz.append((started, time.perf_counter() - started))
            time.sleep(0.02)


@pytest.fixture
def proxied_settings(
    tmp_path: Path, postgres_database_factory: object
) -> Iterator[tuple[Settings, FreezableProxy]]:
    _require_postgres()
    real_url = make_url(postgres_database_factory())  # type: ignore[operator]
    upgrade_database(Settings(data_dir=tmp_path, database_url=real_url.render_as_string(False)))
    proxy = FreezableProxy((real_url.host or "127.0.0.1", real_url.port or 5432))
    proxied = real_url.set(host="127.0.0.1", port=proxy.port)
    settings = Settings(
        data_dir=tmp_path,
        database_url=proxied.render_as_string(hide_password=False),
        sampling_mode="at_ingest",
        db_statement_timeout_seconds=STATEMENT_TIMEOUT_S,
        db_connect_timeout_seconds=CONNECT_TIMEOUT_S,
        db_pool_timeout_seconds=POOL_TIMEOUT_S,
        db_pool_size=4,
        db_max_overflow=2,
    )
    try:
        yield settings, proxy
    finally:
        proxy.close()


def start_api(settings: Settings, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`shadoweval api` in its own process (its event loop shares no GIL with the load)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        **{
            f"SHADOWEVAL_{name.upper()}": str(getattr(settings, name))
            for name in (
                "data_dir",
                "database_url",
                "sampling_mode",
                "db_statement_timeout_seconds",
                "db_connect_timeout_seconds",
                "db_pool_timeout_seconds",
                "db_pool_size",
                "db_max_overflow",
            )
        },
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shadoweval", "api", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"API did not start: {log.read_text()}")


def test_a_frozen_database_gets_fast_503s_and_the_api_recovers_without_restart(
    proxied_settings: tuple[Settings, FreezableProxy], tmp_path: Path
) -> None:
    settings, proxy = proxied_settings
    engine = create_db_engine(settings)
    with Session(engine) as session:
        key = auth_service.create_key(
            session=session, scopes=[Scope.INGEST, Scope.READ], name="freeze"
        ).key
    engine.dispose()
    process, url = start_api(settings, tmp_path / "api.log")
    try:
        _freeze_and_check(url, key, proxy)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _freeze_and_check(url: str, key: str, proxy: FreezableProxy) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        assert http.post("/v1/decisions", json=[decision("before")]).status_code == 202
        assert http.get("/healthz").status_code == 200

        stop, timings = threading.Event(), Timings()
        threads = [threading.Thread(target=_probe_healthz, args=(url, stop, timings))] + [
            threading.Thread(target=_load, args=(url, key, stop, timings, worker))
            for worker in range(3)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        proxy.frozen.set()
        frozen_at = time.perf_counter()
        time.sleep(FREEZE_SECONDS)
        readyz_started = time.perf_counter()
        readyz = httpx.get(f"{url}/readyz", timeout=30)
        readyz_seconds = time.perf_counter() - readyz_started
        proxy.frozen.clear()
        thawed_after = time.perf_counter() - frozen_at
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

        # Back without a restart: the same process stores and reads again.
        deadline = time.monotonic() + STATEMENT_TIMEOUT_S + CONNECT_TIMEOUT_S
        while (status := http.post("/v1/decisions", json=[decision("after")]).status_code) != 202:
            assert time.monotonic() < deadline, f"not recovered after the freeze: {status}"
            time.sleep(0.2)
        assert http.get("/v1/verdicts").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200

    slowest = max(seconds for _, _, seconds, _ in timings.others)
    # The probe's first calls share the test process with three clients starting up: only
    # the freeze itself is measured.
    healthz = sorted(
        seconds
        for when, seconds in timings.healthz
        if frozen_at <= when <= frozen_at + thawed_after
    )
    healthz_p99 = healthz[int(0.99 * (len(healthz) - 1))]
    refused = [t for t in timings.others if t[1] >= 500]
    print(
        f"\nfreeze {thawed_after:.1f} s: {len(timings.others)} reads/ingest, slowest "
        f"{slowest:.2f} s, {len(refused)} answered 503; /healthz during it n={len(healthz)} "
        f"p99 {healthz_p99 * 1000:.1f} ms max {healthz[-1] * 1000:.1f} ms; "
        f"/readyz {readyz.status_code} in {readyz_seconds:.2f} s"
    )
    assert slowest <= STATEMENT_TIMEOUT_S + 1, sorted(timings.others, key=lambda t: -t[2])[:5]
    # p99 and not the maximum: on a loaded CI box the OS alone can delay one call past
    # 100 ms (seen: 152 ms measured by this client while the server logged 18 ms). Before
    # the fix, /healthz queued behind the stalled threads for the whole freeze.
    assert healthz_p99 < HEALTHZ_LIMIT_S
    assert healthz[-1] < 1.0
    assert refused, "the freeze was not felt: the proxy did not stop the database"
    for route, status, _seconds, retry_after in refused:
        assert status == 503, (route, status)
        assert retry_after is not None
        assert int(retry_after) >= 1
    assert readyz.status_code == 503
    assert "not answering within" in readyz.json()["detail"]
    assert readyz_seconds <= STATEMENT_TIMEOUT_S + 1
