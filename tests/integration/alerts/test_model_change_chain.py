"""From a decision stream to on-call: a model change yields exactly one model event, one
retrain trigger and one `router_stale` alert, delivered by the worker; failover yields none.

Runs the real worker pass (`worker --once` jobs) over decisions ingested through the
service, with a real local HTTP receiver as both the alert webhook and the retrain hook.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.alerts.channels import verify_signature
from shadoweval.alerts.models import Alert
from shadoweval.config import Settings
from shadoweval.events.models import Event
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.runtime.worker import WorkerRuntime, run_worker
from tests.conftest import decision
from tests.integration.alerts.test_delivery import SECRET, Receiver

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ROUTER = "support-router"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def settings(base_settings: Settings, engine: Engine, receiver: Receiver) -> Settings:
    return base_settings.model_copy(
        update={
            "model_watch_settle_seconds": 0,  # read decisions as soon as they commit
            "alert_webhook_url": receiver.url,
            "alert_webhook_secret": SECRET,
            "retrain_webhook_url": receiver.url + "/retrain",
            "alert_slack_webhook_url": None,
            "alert_pagerduty_routing_key": None,
            "public_base_url": "https://shadoweval.example",
        }
    )


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def ingest(engine: Engine, settings: Settings, items: list[dict[str, object]]) -> None:
    with Session(engine) as session:
        ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items)
        )


def worker_pass(engine: Engine, settings: Settings) -> None:
    runtime = WorkerRuntime(
        engine=engine,
        settings=settings,
        provider_for_model=lambda model: None,  # type: ignore[arg-type,return-value]
        price_per_mtok=lambda model: None,
    )
    asyncio.run(run_worker(runtime, once=True))
    failed = {name: s.last_error for name, s in runtime.stats.items() if s.last_error}
    assert not failed


def stream(prefix: str, start: float, model: str, n: int, **fields: object) -> list[dict[str, Any]]:
    return [
        decision(f"{prefix}-{i}", ts=at(start + i), chosen_model=model, **fields) for i in range(n)
    ]


def bodies(receiver: Receiver, path_suffix: str) -> list[dict[str, Any]]:
    return [r.json for r in receiver.requests if r.path.endswith(path_suffix)]


def test_a_model_change_yields_one_event_one_retrain_trigger_and_one_stale_alert(
    engine: Engine, settings: Settings, receiver: Receiver
) -> None:
    # The router's first model only establishes its pool; failover changes served, not chosen.
    ingest(engine, settings, stream("a", 0, "claude-haiku-4-5", 5))
    ingest(
        engine,
        settings,
        stream("f", 10, "claude-haiku-4-5", 3, served_model="gpt-5-mini", failover=True),
    )
    worker_pass(engine, settings)
    assert receiver.requests == []

    ingest(engine, settings, stream("b", 20, "claude-haiku-5", 5))
    worker_pass(engine, settings)
    worker_pass(engine, settings)  # a second pass repeats nothing

    with Session(engine) as session:
        events = session.scalars(select(Event).where(Event.kind == "model_change")).all()  # type: ignore[arg-type]
        alerts = session.scalars(select(Alert)).all()
    [event] = events
    assert event.details["model"] == "claude-haiku-5"
    assert [(a.rule, a.state, a.router) for a in alerts] == [("router_stale", "firing", ROUTER)]

    [retrain] = bodies(receiver, "/retrain")
    assert retrain["kind"] == "retrain"
    assert retrain["details"]["event_id"] == event.id
    assert "https://shadoweval.example/v1/exports/training?router=" in json.dumps(retrain)
    [stale] = bodies(receiver, "/hook")
    assert stale["rule"] == "router_stale"
    assert stale["kind"] == "trigger"
    assert stale["router"] == ROUTER
    for request in receiver.requests:
        assert verify_signature(
            SECRET,
            request.headers["X-Shadoweval-Timestamp"],
            request.headers["X-Shadoweval-Signature"],
            request.body,
            now=datetime.now(UTC).timestamp(),
        )


def test_failover_alone_raises_nothing(
    engine: Engine, settings: Settings, receiver: Receiver
) -> None:
    ingest(engine, settings, stream("a", 0, "claude-haiku-4-5", 5))
    worker_pass(engine, settings)
    ingest(
        engine,
        settings,
        stream("f", 10, "claude-haiku-4-5", 5, served_model="gpt-5-mini", failover=True),
    )
    worker_pass(engine, settings)

    with Session(engine) as session:
        assert session.scalars(select(Event).where(Event.kind == "model_change")).all() == []  # type: ignore[arg-type]
        assert session.scalars(select(Alert)).all() == []
    assert receiver.requests == []
