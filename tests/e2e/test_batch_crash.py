"""A `shadoweval worker` in batch mode is SIGKILLed between submitting a batch and
collecting it: the restarted worker resumes polling the same batch, never creates it
again, and every item completes exactly once (shadows on Anthropic, judge on OpenAI)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shadoweval.config import Settings
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.shadow.models import BatchState, ProviderBatch, ShadowRun, WorkStatus
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import decision
from tests.e2e.test_worker_crash import count, start_worker, wait_for, worker_env
from tests.integration.pipeline.conftest import STRONG, ingest, pipeline_settings

BATCH_DELAY_S = 4.0  # how long the fake keeps each batch in progress


@pytest.fixture
def fake() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as server:
        server.configure(batch_delay_s=BATCH_DELAY_S)
        yield server


def submitted(engine: Engine) -> list[ProviderBatch]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(ProviderBatch).where(ProviderBatch.state == BatchState.SUBMITTED)
            ).all()
        )


def test_sigkill_between_submit_and_collect_resumes_the_same_batch(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, tmp_path: Path
) -> None:
    settings = pipeline_settings(base_settings, fake)
    env = worker_env(settings, fake)
    env.update(
        {
            "SHADOWEVAL_SHADOW_MODE": "batch",
            "SHADOWEVAL_BATCH_MAX_AGE_SECONDS": "0",
            "SHADOWEVAL_BATCH_SUBMIT_INTERVAL_SECONDS": "0.3",
            "SHADOWEVAL_BATCH_POLL_INTERVAL_SECONDS": "0.3",
        }
    )
    total = 12
    ingest(engine, settings, [decision(f"bk-{i:02d}") for i in range(total)])

    doomed = start_worker(env, tmp_path / "worker-a.log")
    replacement: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: bool(submitted(engine)), 60, "a submitted shadow batch")
        [in_flight] = submitted(engine)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        assert fake.batches()["creates"] == 1
        assert not any(b["ended"] for b in fake.batches()["batches"])

        replacement = start_worker(env, tmp_path / "worker-b.log")
        wait_for(
            lambda: count(engine, Verdict, status=VerdictStatus.DONE) == total,
            120,
            "every verdict to be done",
        )
    finally:
        if replacement is not None and replacement.poll() is None:
            replacement.send_signal(signal.SIGTERM)
        for process in (doomed, replacement):
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()

    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert replacement is not None
    assert replacement.returncode == 0, logs
    with Session(engine) as session:
        batches = list(session.exec(select(ProviderBatch)).all())
        runs = list(session.exec(select(ShadowRun)).all())
        resumed = session.get(ProviderBatch, in_flight.id)
    # The batch in flight at the kill was collected under the id stored before the kill.
    assert resumed is not None
    assert resumed.state == BatchState.COLLECTED
    assert resumed.provider_batch_id == in_flight.provider_batch_id
    # Exactly one creation per batch row, and every batch collected.
    assert fake.batches()["creates"] == len(batches)
    assert {b.state for b in batches} == {BatchState.COLLECTED}
    assert sum(b.item_count for b in batches if b.kind == "shadow") == total
    assert sum(b.item_count for b in batches if b.kind == "judge") == 2 * total
    # Every item completed once: one attempt per run, one answer per custom_id.
    assert {(r.status, r.attempts) for r in runs} == {(WorkStatus.SUCCEEDED, 1)}
    answered = [c for c in fake.calls()["calls"] if c["path"] == "batch"]
    assert len(answered) == len({c["custom_id"] for c in answered}) == 3 * total
    assert sum(1 for c in answered if c["model"] == STRONG) == total
    assert [c for c in fake.calls()["calls"] if c["path"] != "batch"] == []
    assert "Traceback" not in logs
