"""Two `shadoweval worker` processes share the queue; one is SIGKILLed mid-run.

After a replacement starts, every shadow run and verdict is finished exactly
once, the planning leadership moves to a survivor, and repeated provider calls
are bounded by what the dead worker held in flight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.shadow.models import ShadowRun, WorkStatus
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import decision
from tests.integration.pipeline.conftest import CHEAP, JUDGE, STRONG, ingest, pipeline_settings

BATCH = 4
LANES = 2


@pytest.fixture
def fake() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as server:
        server.configure(latency_s=0.3)  # keeps work in flight when the kill lands
        yield server


def worker_env(settings: Settings, fake: FakeProviderServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    env.update(
        {
            "SHADOWEVAL_DATABASE_URL": settings.resolved_database_url,
            "SHADOWEVAL_DATA_DIR": str(settings.data_dir),
            "SHADOWEVAL_ANTHROPIC_API_KEY": "test-key",
            "SHADOWEVAL_ANTHROPIC_BASE_URL": fake.anthropic_url,
            "SHADOWEVAL_OPENAI_API_KEY": "test-key",
            "SHADOWEVAL_OPENAI_BASE_URL": fake.openai_url,
            "SHADOWEVAL_TIER_MODELS": json.dumps({"*": {"cheap": CHEAP, "strong": STRONG}}),
            "SHADOWEVAL_JUDGE_MODEL": JUDGE,
            "SHADOWEVAL_WORKER_BATCH_SIZE": str(BATCH),
            "SHADOWEVAL_WORKER_LANES": str(LANES),
            "SHADOWEVAL_WORKER_POLL_SECONDS": "0.2",
            "SHADOWEVAL_ENQUEUE_INTERVAL_SECONDS": "0.3",
            # Short, so the dead worker's leases are taken over soon; long enough that a
            # live worker slowed by a loaded machine (a full suite run) keeps its own.
            "SHADOWEVAL_WORK_LEASE_SECONDS": "12",
            "SHADOWEVAL_LEADER_LEASE_SECONDS": "3",
            "SHADOWEVAL_WORK_RETRY_BASE_S": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shadoweval", "worker"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def count(engine: Engine, table: type, **where: object) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(table)
        for name, value in where.items():
            query = query.where(getattr(table, name) == value)
        return int(session.scalar(query) or 0)


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def held_by(engine: Engine, pid: int) -> int:
    with Session(engine) as session:
        owners = [
            *session.scalars(select(ShadowRun.lease_owner).where(ShadowRun.status == "running")),  # type: ignore[arg-type]
            *session.scalars(select(Verdict.lease_owner).where(Verdict.status == "running")),  # type: ignore[arg-type]
        ]
    return sum(1 for owner in owners if owner and f"-{pid}-" in owner)


def test_sigkilled_worker_loses_nothing_and_repeats_nothing_finished(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, tmp_path: Path
) -> None:
    settings = pipeline_settings(base_settings, fake)
    env = worker_env(settings, fake)
    first_batch = [decision(f"k-{i:03d}") for i in range(60)]
    ingest(engine, settings, first_batch)

    doomed = start_worker(env, tmp_path / "worker-a.log")
    survivor = start_worker(env, tmp_path / "worker-b.log")
    replacement = None
    try:
        # Kill it mid-run: some work finished, and the doomed worker holding leases right now.
        wait_for(
            lambda: (
                count(engine, Verdict, status=VerdictStatus.DONE) >= 4
                and held_by(engine, doomed.pid) > 0
            ),
            60,
            "progress while the doomed worker holds leases",
        )
        held = held_by(engine, doomed.pid)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)

        # Work arriving after the kill needs a live leader to be enqueued.
        second_batch = [decision(f"late-{i:03d}") for i in range(6)]
        ingest(engine, settings, second_batch)
        replacement = start_worker(env, tmp_path / "worker-c.log")
        # Until it logs this it has no SIGTERM handler: a stop sent earlier would kill it.
        wait_for(
            lambda: "worker started" in (tmp_path / "worker-c.log").read_text(),
            60,
            "the replacement worker to start",
        )
        total = len(first_batch) + len(second_batch)
        wait_for(
            lambda: count(engine, Verdict, status=VerdictStatus.DONE) == total,
            120,
            "every verdict to be done",
        )
    finally:
        for process in (survivor, replacement):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (doomed, survivor, replacement):
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()

    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert survivor.returncode == 0, logs
    assert replacement is not None
    assert replacement.returncode == 0, logs
    assert held > 0
    # Exactly once: one verdict per decision, all done; one shadow run each, all succeeded.
    assert count(engine, Verdict) == total
    assert count(engine, ShadowRun) == total
    assert count(engine, ShadowRun, status=WorkStatus.SUCCEEDED) == total
    with Session(engine) as session:
        attempts = list(session.scalars(select(ShadowRun.attempts))) + list(  # type: ignore[call-overload]
            session.scalars(select(Verdict.attempts))  # type: ignore[call-overload]
        )
    assert max(attempts) >= 2, "the dead worker's leases were taken over"
    # Provider calls repeated only for what the dead worker held: at most one shadow call
    # or two judge calls per item it had claimed.
    calls = fake.calls()["calls"]
    shadow_calls = sum(1 for c in calls if c["model"] == STRONG)
    judge_calls = sum(1 for c in calls if c["model"] == JUDGE)
    assert total <= shadow_calls <= total + LANES * BATCH
    assert 2 * total <= judge_calls <= 2 * total + 2 * LANES * BATCH
    assert "Traceback" not in logs
