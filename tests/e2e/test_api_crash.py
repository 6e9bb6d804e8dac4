"""The API is SIGKILLed mid-stream: acknowledged decisions survive, resends store nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.ingest.models import Decision
from tests.conftest import Keys, decision, free_port

THREADS, BATCHES_PER_THREAD, BATCH = 4, 12, 150


def start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SHADOWEVAL_DATABASE_URL": settings.resolved_database_url,
        "SHADOWEVAL_DATA_DIR": str(settings.data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shadoweval", "api", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"API did not start: {log.read_text()}")


def test_acknowledged_decisions_survive_a_sigkill(
    base_settings: Settings, engine: Engine, keys: Keys, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/decisions"
    headers = {"Authorization": f"Bearer {keys.ingest}"}
    batches = {
        (t, b): [decision(f"crash-{t}-{b}-{i}") for i in range(BATCH)]
        for t in range(THREADS)
        for b in range(BATCHES_PER_THREAD)
    }
    acknowledged: set[tuple[int, int]] = set()
    cut_off: list[str] = []
    lock = threading.Lock()
    server = start_api(base_settings, port, tmp_path / "api.log")

    def post_batches(thread: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            for b in range(BATCHES_PER_THREAD):
                try:
                    response = client.post(url, json=batches[(thread, b)])
                except httpx.ConnectError:
                    return  # the server is gone: nothing was sent
                except httpx.TransportError as error:  # sent, answer lost
                    with lock:
                        cut_off.append(type(error).__name__)
                    return
                if response.status_code == 202:
                    with lock:
                        acknowledged.add((thread, b))

    threads = [threading.Thread(target=post_batches, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=30)

    assert len(acknowledged) >= 20
    assert cut_off, "no request was in flight at the kill; the test proved nothing"
    with Session(engine) as session:
        stored = set(session.scalars(select(Decision.request_id)))
    for key in acknowledged:
        assert {d["request_id"] for d in batches[key]} <= stored, f"acknowledged batch {key} lost"

    # Restart and resend everything: acknowledged batches again, the rest for the first time.
    server = start_api(base_settings, port, tmp_path / "api.log")
    try:
        with httpx.Client(headers=headers, timeout=60) as client:
            for batch in batches.values():
                assert client.post(url, json=batch).status_code == 202
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)

    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(Decision))
        distinct = session.scalar(select(func.count(func.distinct(Decision.request_id))))
    assert total == distinct == THREADS * BATCHES_PER_THREAD * BATCH
