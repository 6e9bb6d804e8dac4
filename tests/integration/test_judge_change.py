"""Judge change control: one event per new judge key, and windows that split there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from shadoweval.jobs import watch_judges
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import snapshots
from shadoweval.config import Settings
from shadoweval.events.models import Event
from shadoweval.feedback import judge_changes
from shadoweval.judge.models import Outcome
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import Keys, LiveApi, decision
from tests.integration.pipeline.conftest import CHEAP, JUDGE, drain, ingest, pipeline_settings
from tests.integration.test_feedback import START, judged_pair


def watch(engine: Engine) -> int:
    # The job needs only the runtime's engine.
    runtime: Any = SimpleNamespace(
        engine=engine, settings=SimpleNamespace(judge_watch_settle_seconds=60.0)
    )
    return int(asyncio.run(watch_judges.run(runtime)))


def aggregate(engine: Engine) -> None:
    while snapshots.aggregate_finished_verdicts(engine):
        pass


def judge_events(engine: Engine) -> list[Event]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Event).where(Event.kind == "judge_changed").order_by(Event.id)  # type: ignore[arg-type]
            )
        )


def forward_rows(client: Any, segment: str = "billing") -> dict[str, dict[str, Any]]:
    response = client.get("/v1/segments", params={"router": "r"})
    assert response.status_code == 200, response.text
    return {
        row["judge_key"]: row
        for row in response.json()
        if row["segment"] == segment and row["direction"] == "forward"
    }


def test_a_judge_change_is_one_event_and_splits_the_windows(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    first_judged = START + timedelta(hours=1)
    for i in range(5):
        judged_pair(engine, ts=START + timedelta(minutes=10 * i), finished_at=first_judged)
    # The router's first judge only establishes it.
    aggregate(engine)
    assert watch(engine) == 0

    # A new judge model finishes later, partly on decisions older than the first judge's.
    switched = START + timedelta(hours=2)
    new_ts = [START - timedelta(minutes=30), START + timedelta(minutes=5), START]
    for ts in new_ts:
        judged_pair(
            engine,
            outcome=Outcome.STRONGER_WINS,
            judge_key="judge-b#h1",
            ts=ts,
            finished_at=switched,
        )
    aggregate(engine)
    assert watch(engine) == 1
    assert watch(engine) == 0  # exactly once, however often the job runs

    (event,) = judge_events(engine)
    assert (event.router, event.dedup_key) == ("r", "r|judge-b#h1")
    assert event.ts == min(new_ts)  # decision time of the first pair the new judge judged
    assert event.details["judge_model"] == "judge-b"
    assert event.details["prompt_hash"] == "h1"
    assert event.details["previous_judge_key"] == "judge-a#h1"

    with live_api.client(keys.read) as client:
        rows = forward_rows(client)
    # Same router, segment, direction and day: two rows, never one pooled estimate.
    assert set(rows) == {"judge-a#h1", "judge-b#h1"}
    old, new = rows["judge-a#h1"], rows["judge-b#h1"]
    assert (old["rate"]["n"], old["rate"]["estimate"]) == (5, 0.0)
    assert (new["rate"]["n"], new["rate"]["estimate"]) == (3, 1.0)
    assert (old["judge_model"], old["prompt_hash"], old["judge_changed_at"]) == (
        "judge-a",
        "h1",
        None,
    )
    assert new["judge_model"] == "judge-b"
    assert new["judge_changed_at"].replace("Z", "+00:00") == min(new_ts).isoformat()


def test_a_new_prompt_hash_is_a_new_judge_too(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    judged_pair(engine, finished_at=START + timedelta(hours=1))
    judged_pair(engine, judge_key="judge-a#h2", finished_at=START + timedelta(hours=2))
    judged_pair(engine, judge_key="judge-a#h3", finished_at=START + timedelta(hours=3))
    # Another router's first judge is no change.
    judged_pair(engine, judge_key="judge-a#h3", router="other", finished_at=START)
    aggregate(engine)
    assert watch(engine) == 2

    events = judge_events(engine)
    assert [(e.dedup_key, e.details["previous_judge_key"]) for e in events] == [
        ("r|judge-a#h2", "judge-a#h1"),
        ("r|judge-a#h3", "judge-a#h2"),
    ]
    with live_api.client(keys.read) as client:
        rows = forward_rows(client)
    assert {key: row["rate"]["n"] for key, row in rows.items()} == {
        "judge-a#h1": 1,
        "judge-a#h2": 1,
        "judge-a#h3": 1,
    }


def test_switching_back_to_an_earlier_judge_records_another_event(engine: Engine) -> None:
    judged_pair(engine, finished_at=START + timedelta(hours=1))
    judged_pair(engine, judge_key="judge-b#h1", finished_at=START + timedelta(hours=2))
    assert watch(engine) == 1
    # The watermark moved past what was read: back to judge A is a change of its own.
    back = START + timedelta(hours=3)
    judged_pair(engine, finished_at=back, ts=START + timedelta(minutes=7))
    judged_pair(engine, finished_at=back + timedelta(minutes=1), ts=START + timedelta(minutes=9))
    assert watch(engine) == 1
    assert watch(engine) == 0

    events = judge_events(engine)
    assert [(e.dedup_key, e.details["previous_judge_key"]) for e in events] == [
        ("r|judge-b#h1", "judge-a#h1"),
        (f"r|judge-a#h1@{back.isoformat()}", "judge-b#h1"),
    ]
    assert events[1].ts == START + timedelta(minutes=7)


def test_an_unsettled_verdict_waits_for_the_next_pass(engine: Engine) -> None:
    judged_pair(engine, finished_at=START)
    now = datetime.now(UTC)
    # Finished just now: its transaction may still be open elsewhere, so it is not read yet.
    judged_pair(engine, judge_key="judge-b#h1", finished_at=now)
    with Session(engine) as session:
        settle = timedelta(seconds=60)
        assert judge_changes.record_judge_changes(session, settle=settle, now=now) == 0
        later = now + settle + timedelta(seconds=1)
        assert judge_changes.record_judge_changes(session, settle=settle, now=later) == 1


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as fake:
        yield fake


def test_switching_the_worker_to_a_new_judge_model_records_it_and_splits_segments(
    live_api: LiveApi,
    keys: Keys,
    engine: Engine,
    base_settings: Settings,
    fake_server: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    fake_server.reset()
    # The pass runs right after judging: read verdicts as soon as they commit.
    base_settings = base_settings.model_copy(update={"judge_watch_settle_seconds": 0})
    before = pipeline_settings(base_settings, fake_server)
    ingest(engine, before, [decision(f"before-{i}") for i in range(3)])
    drain(engine, before)  # a worker pass: shadow, judge, aggregate, watch_judges
    assert judge_events(engine) == []

    after = pipeline_settings(base_settings, fake_server, judge_model=CHEAP)
    ingest(engine, after, [decision(f"after-{i}") for i in range(2)])
    drain(engine, after)

    (event,) = judge_events(engine)
    assert event.details["judge_model"] == CHEAP
    assert event.details["previous_judge_key"].startswith(f"{JUDGE}#")
    with live_api.client(keys.read) as client:
        response = client.get("/v1/segments", params={"router": "support-router"})
    rows = {r["judge_model"]: r for r in response.json() if r["direction"] == "forward"}
    assert {model: row["rate"]["n"] for model, row in rows.items()} == {JUDGE: 3, CHEAP: 2}
    assert rows[CHEAP]["judge_changed_at"] is not None
    assert rows[JUDGE]["judge_changed_at"] is None
