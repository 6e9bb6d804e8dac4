"""The alert outbox against real local HTTP receivers, on both databases.

Time that matters to delivery (backoff, max age) is driven through an injectable
clock, so "down for an hour" takes as long as the attempts themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from shadoweval.jobs import retrain_triggers, scheduler
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.alerts import channels, delivery_records, outbox, sender
from shadoweval.alerts.delivery_models import AlertDelivery, AlertDeliveryAttempt
from shadoweval.alerts.notification import Notification
from shadoweval.config import Settings
from shadoweval.db import create_db_engine, session_scope, upgrade_database
from shadoweval.events.service import record_event
from shadoweval.runtime.worker import WorkerRuntime, run_worker
from tests.conftest import Keys, LiveApi, free_port, make_empty_database_url

SECRET = "whsec-test-secret"
ROUTING_KEY = "R0UT1NGKEYSECRET0000000000000000"
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
EXPORT_PATH = "/v1/exports/training?router=support-router&since=2026-11-28T09:00:00Z"


# --- a real local receiver -----------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server in a thread that records every POST and answers from a script."""

    port: int = field(default_factory=free_port)
    # (status, headers) answered in order; then `default_status`.
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default_status: int = 200
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.requests.append(
                    Received(self.path, dict(self.headers.items()), self.rfile.read(length))
                )
                status, headers = (
                    receiver.script.pop(0) if receiver.script else (receiver.default_status, {})
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                body = b'{"status":"success"}' if status < 300 else b'{"error":"nope"}'
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


class Clock:
    """The outbox's notion of now; tests move it forward instead of sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# --- helpers -------------------------------------------------------------------------------


def make_settings(base: Settings, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "alert_webhook_url": None,
        "alert_webhook_secret": SECRET,
        "alert_slack_webhook_url": None,
        "alert_pagerduty_routing_key": None,
        "retrain_webhook_url": None,
        "public_base_url": "https://shadoweval.example",
        "delivery_timeout_seconds": 5.0,
    }
    values.update(changes)
    return base.model_copy(update=values)


@pytest.fixture
def base(base_settings: Settings, engine: Engine) -> Settings:
    """The backend's settings; through `engine`, every table is emptied after the test."""
    return base_settings


def alert(kind: str = "trigger", **changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "kind": kind,
        "dedup_key": "quality_drop|support-router|billing",
        "rule": "quality_drop",
        "severity": "critical",
        "title": "CRITICAL quality_drop billing on support-router",
        "summary": "billing: harm 10 % → 21 % since 2026-11-27 09:07 UTC decision time "
        "(95 % CI 15 %–28 %), 240 labels\nGLR statistic / threshold: 1.2 ratio",
        "ts": T0,
        "router": "support-router",
        "segment": "billing",
        "numbers": {
            "estimate": 0.21,
            "ci_low": 0.15,
            "ci_high": 0.28,
            "n": 240,
            "threshold": 0.15,
            "window_start": "2026-11-28T00:00:00+00:00",
            "window_end": "2026-11-28T09:00:00+00:00",
        },
        "dashboard_url": "https://dash.example/segments?segment=billing",
        "runbook_url": "https://wiki.example/runbooks/quality_drop",
        "alert_id": 42,
    }
    fields.update(changes)
    return Notification(**fields)


def enqueue(engine: Engine, settings: Settings, notification: Notification) -> list[int]:
    with session_scope(engine) as session:
        return outbox.enqueue_notification(session, notification, settings=settings, now=T0)


def process(engine: Engine, settings: Settings, clock: Clock) -> dict[str, int]:
    return asyncio.run(
        sender.process_due_deliveries(
            engine=engine,
            settings=settings,
            owner="test-worker",
            limit=10,
            clock=clock,
            rng=random.Random(1),
        )
    )


def delivery(engine: Engine, delivery_id: int) -> AlertDelivery:
    with Session(engine) as session:
        row = session.get(AlertDelivery, delivery_id)
        assert row is not None
        return row


def attempts(engine: Engine, delivery_id: int) -> list[AlertDeliveryAttempt]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(AlertDeliveryAttempt)
                .where(AlertDeliveryAttempt.delivery_id == delivery_id)  # type: ignore[arg-type]
                .order_by(AlertDeliveryAttempt.attempt)  # type: ignore[arg-type]
            )
        )


def run_until_settled(
    engine: Engine, settings: Settings, clock: Clock, ids: list[int], max_rounds: int = 50
) -> None:
    """Process, then jump the clock to the next due attempt, until every delivery is final."""
    for _ in range(max_rounds):
        process(engine, settings, clock)
        rows = [delivery(engine, i) for i in ids]
        open_rows = [r for r in rows if r.status in ("pending", "in_flight")]
        if not open_rows:
            return
        clock.now = max(clock.now, min(r.next_attempt_at for r in open_rows))
    raise AssertionError("deliveries did not settle")


# --- tests ---------------------------------------------------------------------------------


def test_signed_webhook_verifies_and_tampering_or_staleness_fails(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    settings = make_settings(base, alert_webhook_url=receiver.url)
    [delivery_id] = enqueue(engine, settings, alert())

    assert process(engine, settings, Clock(T0)) == {"delivered": 1}

    [request] = receiver.requests
    timestamp = request.headers[channels.TIMESTAMP_HEADER]
    signature = request.headers[channels.SIGNATURE_HEADER]
    now = time.time()
    assert channels.verify_signature(SECRET, timestamp, signature, request.body, now=now)
    tampered = request.body.replace(b"0.21", b"0.01")
    assert tampered != request.body
    assert not channels.verify_signature(SECRET, timestamp, signature, tampered, now=now)
    assert not channels.verify_signature(SECRET, timestamp, signature, request.body, now=now + 301)
    assert request.headers[channels.DELIVERY_HEADER] == str(delivery_id)
    # The delivery id is signed too: a replay cannot pass as another delivery.
    assert request.json["delivery_id"] == delivery_id
    forged = request.body.replace(
        f'"delivery_id":{delivery_id}'.encode(), f'"delivery_id":{delivery_id + 1}'.encode()
    )
    assert forged != request.body
    assert not channels.verify_signature(SECRET, timestamp, signature, forged, now=now)
    # Standard Webhooks: the same body verifies by the spec, with the delivery id as
    # webhook-id; tampering or a forged delivery id fails the same way.
    assert request.headers["webhook-id"] == str(delivery_id)
    assert channels.verify_standard_signature(SECRET, request.headers, request.body, now=now)
    assert not channels.verify_standard_signature(SECRET, request.headers, tampered, now=now)
    assert not channels.verify_standard_signature(SECRET, request.headers, forged, now=now)
    standardwebhooks = pytest.importorskip("standardwebhooks")
    library = standardwebhooks.Webhook(SECRET.encode())  # a plain secret is used as raw bytes
    assert library.verify(request.body, request.headers)["delivery_id"] == delivery_id
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        library.verify(tampered, request.headers)

    payload = request.json
    assert payload["kind"] == "trigger"
    assert payload["dedup_key"] == "quality_drop|support-router|billing"
    assert payload["numbers"]["estimate"] == 0.21
    assert payload["numbers"]["n"] == 240
    assert payload["links"]["dashboard"] == "https://dash.example/segments?segment=billing"
    assert payload["links"]["runbook"] == "https://wiki.example/runbooks/quality_drop"

    row = delivery(engine, delivery_id)
    assert (row.status, row.attempts, row.alert_id) == ("delivered", 1, 42)
    assert row.delivered_at is not None
    [attempt] = attempts(engine, delivery_id)
    assert (attempt.outcome, attempt.status_code, attempt.error) == ("delivered", 200, None)


def test_no_channel_configured_enqueues_nothing(engine: Engine, base: Settings) -> None:
    assert enqueue(engine, make_settings(base), alert()) == []


def test_receiver_answering_500_twice_then_200_gets_three_attempts(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    receiver.script = [(500, {}), (500, {})]
    settings = make_settings(base, alert_webhook_url=receiver.url)
    [delivery_id] = enqueue(engine, settings, alert())
    clock = Clock(T0)

    assert process(engine, settings, clock) == {"pending": 1}
    first_retry = delivery(engine, delivery_id).next_attempt_at
    assert T0 + timedelta(seconds=5) <= first_retry <= T0 + timedelta(seconds=10)
    assert process(engine, settings, clock) == {}  # not due yet: nothing sent early
    run_until_settled(engine, settings, clock, [delivery_id])

    assert len(receiver.requests) == 3
    # The same delivery each time, so a receiver can drop repeats.
    assert {r.headers[channels.DELIVERY_HEADER] for r in receiver.requests} == {str(delivery_id)}
    row = delivery(engine, delivery_id)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    history = attempts(engine, delivery_id)
    assert [(a.attempt, a.outcome, a.status_code) for a in history] == [
        (1, "retry", 500),
        (2, "retry", 500),
        (3, "delivered", 200),
    ]
    assert history[0].error is not None
    assert history[0].error.startswith("HTTP 500")
    assert history[0].retry_at == first_retry


def test_receiver_down_for_an_hour_loses_nothing(engine: Engine, base: Settings) -> None:
    down = Receiver()  # its port is free: connections are refused until it starts
    settings = make_settings(base, alert_webhook_url=down.url)
    ids = [id_ for n in range(3) for id_ in enqueue(engine, settings, alert(dedup_key=f"k{n}"))]
    clock = Clock(T0)

    while clock.now < T0 + timedelta(hours=1):
        process(engine, settings, clock)
        clock.now = min(delivery(engine, i).next_attempt_at for i in ids)

    rows = [delivery(engine, i) for i in ids]
    assert {r.status for r in rows} == {"pending"}
    for row in rows:
        history = attempts(engine, int(row.id))  # type: ignore[arg-type]
        assert len(history) >= 8  # kept trying through the hour
        assert all(a.status_code is None and a.error for a in history)
        # Backoff is capped, so the receiver's return is noticed within minutes.
        gaps = [b.at - a.at for a, b in itertools.pairwise(history)]
        assert max(gaps) <= timedelta(seconds=settings.delivery_retry_max_seconds)

    down.start()
    try:
        run_until_settled(engine, settings, clock, ids)
    finally:
        down.stop()
    assert {delivery(engine, i).status for i in ids} == {"delivered"}
    assert sorted(r.json["dedup_key"] for r in down.requests) == ["k0", "k1", "k2"]


def test_gives_up_only_after_the_max_age(engine: Engine, base: Settings) -> None:
    down = Receiver()
    settings = make_settings(base, alert_webhook_url=down.url, delivery_max_age_hours=1)
    [delivery_id] = enqueue(engine, settings, alert())
    clock = Clock(T0)
    run_until_settled(engine, settings, clock, [delivery_id], max_rounds=100)

    row = delivery(engine, delivery_id)
    assert row.status == "failed"
    assert row.failed_at is not None
    assert row.failed_at >= T0 + timedelta(hours=1)
    assert row.last_error is not None
    assert row.last_error.startswith("gave up after")
    history = attempts(engine, delivery_id)
    assert history[-1].at == T0 + timedelta(hours=1)  # one last try at the deadline
    assert history[-1].outcome == "failed"


def test_client_error_fails_at_once_and_429_honours_retry_after(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    receiver.script = [(400, {}), (429, {"Retry-After": "900"})]
    settings = make_settings(base, alert_webhook_url=receiver.url)
    [refused] = enqueue(engine, settings, alert(dedup_key="a"))
    clock = Clock(T0)
    process(engine, settings, clock)
    row = delivery(engine, refused)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error is not None
    assert row.last_error.startswith("HTTP 400")

    [limited] = enqueue(engine, settings, alert(dedup_key="b"))
    process(engine, settings, clock)
    row = delivery(engine, limited)
    assert row.status == "pending"
    assert row.next_attempt_at == T0 + timedelta(seconds=900)


def test_crashed_worker_lease_expires_and_the_delivery_is_sent(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    settings = make_settings(base, alert_webhook_url=receiver.url)
    [delivery_id] = enqueue(engine, settings, alert())
    # A worker claims it and dies before sending.
    assert sender.claim_due(engine, owner="dead", limit=5, lease_seconds=60, now=T0) == [
        delivery_id
    ]
    assert process(engine, settings, Clock(T0 + timedelta(seconds=30))) == {}
    assert process(engine, settings, Clock(T0 + timedelta(seconds=61))) == {"delivered": 1}
    assert len(receiver.requests) == 1
    assert delivery(engine, delivery_id).attempts == 2


def test_slack_receiver_gets_readable_blocks(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    settings = make_settings(base, alert_slack_webhook_url=receiver.url)
    enqueue(engine, settings, alert())
    enqueue(engine, settings, alert("resolve"))
    process(engine, settings, Clock(T0))  # the trigger; its resolve waits for it
    process(engine, settings, Clock(T0))

    trigger, resolve = receiver.requests
    assert channels.SIGNATURE_HEADER not in trigger.headers  # Slack verifies by its URL
    message = trigger.json
    assert set(message) == {"text", "blocks"}
    assert message["text"] == (
        "CRITICAL quality_drop billing on support-router — billing: harm 10 % → 21 % since "
        "2026-11-27 09:07 UTC decision time (95 % CI 15 %–28 %), 240 labels"
    )
    kinds = [block["type"] for block in message["blocks"]]
    assert kinds[0] == "header"
    assert "actions" in kinds
    fields = [f["text"] for b in message["blocks"] if "fields" in b for f in b["fields"]]
    assert "*Estimate*\n0.21 (95 % CI 0.15 – 0.28)" in fields
    assert "*Sample size n*\n240" in fields
    assert "*Threshold*\n0.15" in fields
    assert any(f.startswith("*Window (decision time)*") for f in fields)
    buttons = next(b["elements"] for b in message["blocks"] if b["type"] == "actions")
    assert {b["url"] for b in buttons} == {
        "https://dash.example/segments?segment=billing",
        "https://wiki.example/runbooks/quality_drop",
    }
    assert resolve.json["blocks"][0]["text"]["text"].startswith(":white_check_mark: ")


def test_pagerduty_receiver_gets_trigger_then_resolve_with_one_dedup_key(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    receiver.default_status = 202  # what the Events API answers
    settings = make_settings(
        base,
        alert_pagerduty_routing_key=ROUTING_KEY,
        alert_pagerduty_url=receiver.url,
    )
    clock = Clock(T0)
    [trigger_id] = enqueue(engine, settings, alert(severity="warning"))
    process(engine, settings, clock)
    [resolve_id] = enqueue(engine, settings, alert("resolve"))
    process(engine, settings, clock)

    trigger, resolve = (r.json for r in receiver.requests)
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "quality_drop|support-router|billing"
    assert trigger["payload"]["severity"] == "warning"
    assert trigger["payload"]["summary"] == (
        "billing: harm 10 % → 21 % since 2026-11-27 09:07 UTC decision time "
        "(95 % CI 15 %–28 %), 240 labels"
    )
    assert trigger["payload"]["custom_details"]["detail"] == "GLR statistic / threshold: 1.2 ratio"
    assert trigger["payload"]["source"] == "shadoweval.example"
    assert trigger["payload"]["custom_details"]["numbers"]["ci_high"] == 0.28
    assert {link["href"] for link in trigger["links"]} == {
        "https://dash.example/segments?segment=billing",
        "https://wiki.example/runbooks/quality_drop",
    }
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    assert {delivery(engine, i).status for i in (trigger_id, resolve_id)} == {"delivered"}
    # The routing key is added when sending, never stored.
    assert ROUTING_KEY not in json.dumps(delivery(engine, trigger_id).payload)


def test_every_configured_channel_gets_a_delivery_and_retrain_goes_only_to_its_hook(
    engine: Engine, base: Settings
) -> None:
    settings = make_settings(
        base,
        alert_webhook_url="http://127.0.0.1:9/a",
        alert_slack_webhook_url="https://hooks.slack.com/services/T/B/X",
        alert_pagerduty_routing_key=ROUTING_KEY,
        retrain_webhook_url="http://127.0.0.1:9/retrain",
    )
    ids = enqueue(engine, settings, alert())
    assert sorted(delivery(engine, i).channel for i in ids) == ["pagerduty", "slack", "webhook"]
    retrain = alert("retrain", severity="info", details={"event_id": None})
    [retrain_id] = enqueue(engine, settings, retrain)
    assert delivery(engine, retrain_id).channel == "retrain"


def _model_change(engine: Engine, model: str = "claude-haiku-5") -> int:
    with session_scope(engine) as session:
        assert record_event(
            session,
            kind="model_change",
            dedup_key=f"support-router|cheap|{model}",
            ts=T0,
            router="support-router",
            details={
                "tier": "cheap",
                "model": model,
                "previous_models": ["claude-haiku-4-5"],
                "source": "observed",
                "export_url": EXPORT_PATH,
            },
        )
        event_id = session.execute(
            select(outbox.EVENT_TABLE.c.id).where(
                outbox.EVENT_TABLE.c.dedup_key == f"support-router|cheap|{model}"
            )
        ).scalar_one()
    return int(event_id)


def test_a_model_change_yields_exactly_one_signed_retrain_trigger(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    settings = make_settings(base, retrain_webhook_url=receiver.url)
    event_id = _model_change(engine)
    runtime = WorkerRuntime(
        engine=engine,
        settings=settings,
        provider_for_model=lambda model: None,  # type: ignore[arg-type,return-value]
        price_per_mtok=lambda model: None,
    )
    # The job twice (as after a restart), and the service racing it: one delivery.
    assert asyncio.run(retrain_triggers.run(runtime)) == {"queued": 1}
    assert asyncio.run(retrain_triggers.run(runtime)) == {"queued": 0}
    with session_scope(engine) as session:
        assert outbox.enqueue_retrain_triggers(session=session, settings=settings) == 0
        notification = outbox.retrain_notification(
            event_id=event_id,
            dedup_key="support-router|cheap|claude-haiku-5",
            ts=T0,
            router="support-router",
            details={},
            public_base_url=settings.public_base_url,
        )
        assert outbox.enqueue_notification(session, notification, settings=settings) == []

    process(engine, settings, Clock(datetime.now(UTC)))
    [request] = receiver.requests
    assert channels.verify_signature(
        SECRET,
        request.headers[channels.TIMESTAMP_HEADER],
        request.headers[channels.SIGNATURE_HEADER],
        request.body,
        now=time.time(),
    )
    assert channels.verify_standard_signature(
        SECRET, request.headers, request.body, now=time.time()
    )
    payload = request.json
    assert payload["kind"] == "retrain"
    assert payload["title"] == "INFO model_change on support-router"
    assert "(was claude-haiku-4-5) since" in payload["summary"]
    assert payload["details"]["event"]["id"] == event_id
    assert payload["details"]["event"]["details"]["model"] == "claude-haiku-5"
    export = "https://shadoweval.example" + EXPORT_PATH
    assert payload["details"]["export_url"] == export
    assert payload["links"]["export"] == export
    with Session(engine) as session:
        [row] = delivery_records.list_deliveries(session=session, event_id=event_id).items
    assert (row.channel, row.status) == ("retrain", "delivered")

    # A second model change is a new event and gets its own trigger.
    _model_change(engine, "claude-haiku-6")
    assert asyncio.run(retrain_triggers.run(runtime)) == {"queued": 1}


def test_no_retrain_hook_means_no_trigger_and_old_events_stay_untriggered(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    _model_change(engine)
    with session_scope(engine) as session:
        settings = make_settings(base)
        assert outbox.enqueue_retrain_triggers(session=session, settings=settings) == 0
        settings = make_settings(base, retrain_webhook_url=receiver.url)
        later = datetime.now(UTC) + timedelta(hours=25)
        assert outbox.enqueue_retrain_triggers(session=session, settings=settings, now=later) == 0


def test_api_lists_deliveries_with_attempts_and_redacted_secrets(
    live_api: LiveApi, keys: Keys, engine: Engine, base: Settings, receiver: Receiver
) -> None:
    slack_url = f"http://127.0.0.1:{receiver.port}/services/T000/B000/SLACKSECRETPATH"
    receiver.script = [(503, {})]
    settings = make_settings(
        base,
        alert_webhook_url=receiver.url + "?token=QUERYSECRET",
        alert_slack_webhook_url=slack_url,
        alert_pagerduty_routing_key=ROUTING_KEY,
        alert_pagerduty_url=receiver.url,
    )
    ids = enqueue(engine, settings, alert())
    # Alert 42's deliveries go first, so the one scripted 503 lands on one of them.
    process(engine, settings, Clock(T0))
    enqueue(engine, settings, alert(alert_id=43, dedup_key="other"))
    process(engine, settings, Clock(T0))

    with live_api.client(keys.read) as client:
        response = client.get("/v1/alert-deliveries", params={"alert_id": 42})
        assert response.status_code == 200
        page = response.json()
        assert page["next_cursor"] is None
        assert sorted(item["id"] for item in page["items"]) == sorted(ids)
        for secret in ("SLACKSECRETPATH", "QUERYSECRET", ROUTING_KEY, SECRET):
            assert secret not in response.text
        by_channel = {item["channel"]: item for item in page["items"]}
        assert by_channel["slack"]["url"] == f"http://127.0.0.1:{receiver.port}/***"
        assert by_channel["webhook"]["url"] == f"http://127.0.0.1:{receiver.port}/***?***"
        assert sum(len(item["attempts"]) for item in page["items"]) == 3
        failed_once = [i for i in page["items"] if i["attempts"][0]["status_code"] == 503]
        assert len(failed_once) == 1
        assert failed_once[0]["status"] == "pending"

        first = client.get("/v1/alert-deliveries", params={"limit": 4}).json()
        assert len(first["items"]) == 4
        assert first["next_cursor"]
        rest = client.get(
            "/v1/alert-deliveries", params={"limit": 4, "cursor": first["next_cursor"]}
        ).json()
        assert len(rest["items"]) == 2
        assert rest["next_cursor"] is None
        junk = client.get("/v1/alert-deliveries", params={"cursor": "junk"})
        assert (junk.status_code, junk.json()["loc"]) == (400, ["query", "cursor"])

        metrics = client.get("/metrics").text
        assert 'shadoweval_alert_deliveries_pending{channel="webhook"}' in metrics
        assert 'shadoweval_alert_deliveries_failed{channel="slack"} 0.0' in metrics


def test_lists_show_the_last_attempts_and_the_attempts_route_pages_all(
    live_api: LiveApi, keys: Keys, engine: Engine, base: Settings
) -> None:
    settings = make_settings(base, alert_webhook_url="http://127.0.0.1:9/hook")
    [delivery_id] = enqueue(engine, settings, alert())
    with session_scope(engine) as session:
        for n in range(1, 9):
            session.add(
                AlertDeliveryAttempt(
                    delivery_id=delivery_id,
                    attempt=n,
                    at=T0 + timedelta(minutes=n),
                    outcome="retry",
                    status_code=503,
                    duration_ms=1.0,
                )
            )
        row = session.get(AlertDelivery, delivery_id)
        assert row is not None
        row.attempts = 8
        session.add(row)
        session.commit()

    with live_api.client(keys.read) as client:
        [item] = client.get("/v1/alert-deliveries", params={"alert_id": 42}).json()["items"]
        assert item["attempt_count"] == 8
        assert [a["attempt"] for a in item["attempts"]] == [4, 5, 6, 7, 8]

        path = f"/v1/alert-deliveries/{delivery_id}/attempts"
        first = client.get(path, params={"limit": 5}).json()
        assert [a["attempt"] for a in first["items"]] == [8, 7, 6, 5, 4]
        rest = client.get(path, params={"limit": 5, "cursor": first["next_cursor"]}).json()
        assert [a["attempt"] for a in rest["items"]] == [3, 2, 1]
        assert rest["next_cursor"] is None
        bad = client.get(path, params={"cursor": "junk"})
        assert bad.status_code == 400
        assert bad.json()["loc"] == ["query", "cursor"]
        assert client.get("/v1/alert-deliveries/999999/attempts").status_code == 404


def test_resolve_never_overtakes_its_trigger_after_an_outage(
    engine: Engine, base: Settings
) -> None:
    down = Receiver(default_status=202)
    settings = make_settings(
        base, alert_pagerduty_routing_key=ROUTING_KEY, alert_pagerduty_url=down.url
    )
    clock = Clock(T0)
    [trigger_id] = enqueue(engine, settings, alert())
    process(engine, settings, clock)  # refused: the trigger waits for a retry
    [resolve_id] = enqueue(engine, settings, alert("resolve"))
    [other_id] = enqueue(engine, settings, alert(dedup_key="another-key"))
    # The resolve is due now, but its trigger is still open: only the unrelated key goes.
    assert sender.claim_due(engine, owner="w", limit=10, lease_seconds=60, now=clock.now) == [
        other_id
    ]
    clock.now += timedelta(minutes=2)  # let that lease lapse
    down.start()
    try:
        run_until_settled(engine, settings, clock, [trigger_id, resolve_id, other_id])
    finally:
        down.stop()
    actions = [
        r.json["event_action"]
        for r in down.requests
        if r.json["dedup_key"] == "quality_drop|support-router|billing"
    ]
    assert actions == ["trigger", "resolve"]


def test_one_worker_pass_triggers_and_delivers_a_retrain(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    assert "deliver_alerts" in {job.name for job in scheduler.WORK_JOBS}
    [job] = [job for job in scheduler.PERIODIC_JOBS if job.name == "retrain_triggers"]
    assert job.leader_only  # planning runs on one worker; delivery on all
    settings = make_settings(base, retrain_webhook_url=receiver.url)
    event_id = _model_change(engine)
    runtime = WorkerRuntime(
        engine=engine,
        settings=settings,
        provider_for_model=lambda model: None,  # type: ignore[arg-type,return-value]
        price_per_mtok=lambda model: None,
    )
    asyncio.run(run_worker(runtime, once=True))
    asyncio.run(run_worker(runtime, once=True))

    [request] = receiver.requests
    assert request.json["details"]["event_id"] == event_id
    assert runtime.stats["deliver_alerts"].last_error is None


def test_finished_deliveries_are_purged_after_the_retention_period(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    [job] = [job for job in scheduler.PERIODIC_JOBS if job.name == "purge_deliveries"]
    assert job.leader_only
    settings = make_settings(base, alert_webhook_url=receiver.url, delivery_retention_days=30.0)
    receiver.script = [(503, {})]
    [done] = enqueue(engine, settings, alert())
    assert process(engine, settings, Clock(T0)) == {"pending": 1}  # 503: retried later
    assert process(engine, settings, Clock(T0 + timedelta(hours=1))) == {"delivered": 1}
    [still_open] = enqueue(engine, settings, alert(alert_id=43, dedup_key="open"))
    assert len(attempts(engine, done)) == 2

    def purge(days: float) -> int:
        return delivery_records.purge_finished_deliveries(
            engine, settings=settings, now=T0 + timedelta(days=days), batch=1
        )

    def exists(delivery_id: int) -> bool:
        with Session(engine) as session:
            return session.get(AlertDelivery, delivery_id) is not None

    assert purge(29) == 0
    assert exists(done)
    assert purge(31) == 1
    assert not exists(done)
    assert attempts(engine, done) == []
    # Pending rows are never purged, however old.
    assert exists(still_open)
    # Never sooner than a day past the retry period, whatever the setting says.
    short = settings.model_copy(update={"delivery_retention_days": 0.01})
    [again] = enqueue(engine, short, alert(alert_id=44, dedup_key="again"))
    with session_scope(engine) as session:
        row = session.get(AlertDelivery, again)
        assert row is not None
        row.status = "failed"
        session.add(row)
        session.commit()
    now = T0 + timedelta(hours=30)
    assert delivery_records.purge_finished_deliveries(engine, settings=short, now=now) == 0
    assert (
        delivery_records.purge_finished_deliveries(
            engine, settings=short, now=now + timedelta(days=1)
        )
        == 1
    )


# --- secrets at rest (issue 15 §11) --------------------------------------------------------


def _stored_text(engine: Engine) -> str:
    """Every column of every delivery and attempt row, as text: what a dump would show."""
    with engine.connect() as connection:
        rows = [
            *connection.execute(select(AlertDelivery.__table__)).all(),  # type: ignore[attr-defined]
            *connection.execute(select(AlertDeliveryAttempt.__table__)).all(),  # type: ignore[attr-defined]
        ]
    return "\n".join(repr(tuple(row)) for row in rows)


def test_rows_hold_no_url_secret_and_deliveries_still_arrive_signed(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    webhook_url = f"http://127.0.0.1:{receiver.port}/hooks/WEBHOOKPATHSECRET?token=QUERYSECRET"
    slack_url = f"http://127.0.0.1:{receiver.port}/services/T000/B000/SLACKSECRETPATH"
    settings = make_settings(
        base,
        alert_webhook_url=webhook_url,
        alert_slack_webhook_url=slack_url,
        alert_pagerduty_routing_key=ROUTING_KEY,
        alert_pagerduty_url=f"http://127.0.0.1:{receiver.port}/v2/enqueue",
    )
    ids = enqueue(engine, settings, alert())
    assert len(ids) == 3
    secrets = ("WEBHOOKPATHSECRET", "QUERYSECRET", "SLACKSECRETPATH", ROUTING_KEY, SECRET)
    stored = _stored_text(engine)
    assert not [secret for secret in secrets if secret in stored]
    rows = {row.channel: row for row in (delivery(engine, i) for i in ids)}
    assert {name: row.channel_name for name, row in rows.items()} == {
        "webhook": "webhook",
        "slack": "slack",
        "pagerduty": "pagerduty",
    }
    assert rows["webhook"].url == f"http://127.0.0.1:{receiver.port}/***?***"

    assert process(engine, settings, Clock(T0)) == {"delivered": 3}
    by_path = {request.path: request for request in receiver.requests}
    assert set(by_path) == {
        "/hooks/WEBHOOKPATHSECRET?token=QUERYSECRET",
        "/services/T000/B000/SLACKSECRETPATH",
        "/v2/enqueue",
    }
    signed = by_path["/hooks/WEBHOOKPATHSECRET?token=QUERYSECRET"]
    assert channels.verify_signature(
        SECRET,
        signed.headers[channels.TIMESTAMP_HEADER],
        signed.headers[channels.SIGNATURE_HEADER],
        signed.body,
        now=time.time(),
    )
    assert by_path["/v2/enqueue"].json["routing_key"] == ROUTING_KEY
    stored = _stored_text(engine)  # attempts and errors too
    assert not [secret for secret in secrets if secret in stored]


def test_an_open_delivery_goes_to_the_url_configured_when_it_is_sent(
    engine: Engine, base: Settings, receiver: Receiver
) -> None:
    """A leaked webhook URL is rotated in the settings: queued deliveries follow it."""
    (queued,) = enqueue(
        engine, make_settings(base, alert_webhook_url="http://127.0.0.1:9/old"), alert()
    )
    rotated = make_settings(base, alert_webhook_url=receiver.url)
    assert process(engine, rotated, Clock(T0)) == {"delivered": 1}
    assert [request.path for request in receiver.requests] == ["/hook"]

    (orphan,) = enqueue(engine, rotated, alert(alert_id=43, dedup_key="other"))
    assert process(engine, make_settings(base), Clock(T0)) == {"failed": 1}
    row = delivery(engine, orphan)
    assert (
        row.last_error == "channel 'webhook' is not configured (set SHADOWEVAL_ALERT_WEBHOOK_URL)"
    )
    assert len(receiver.requests) == 1
    assert delivery(engine, queued).status == "delivered"


def test_migration_0017_redacts_stored_urls_and_keeps_open_rows_deliverable(
    backend: str,
    tmp_path: Path,
    postgres_database_factory: object,
    receiver: Receiver,
) -> None:
    url = make_empty_database_url(backend, tmp_path, postgres_database_factory)
    settings = Settings(data_dir=tmp_path, database_url=url)
    upgrade_database(settings, "0016_pool_first_seen")
    secret_url = f"http://127.0.0.1:{receiver.port}/hook?token=QUERYSECRET"
    engine = create_db_engine(settings)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO alert_delivery (channel, url, payload, dedup_key, kind, rule, status,"
                " attempts, next_attempt_at, created_at) VALUES ('webhook', :url, '{}', 'k',"
                " 'trigger', 'quality_drop', 'pending', 0, :at, :at)"
            ),
            {"url": secret_url, "at": T0.replace(tzinfo=None) if backend == "sqlite" else T0},
        )
    upgrade_database(settings)
    row = delivery(engine, 1)
    assert (row.channel_name, row.url) == ("webhook", f"http://127.0.0.1:{receiver.port}/***?***")
    assert "QUERYSECRET" not in _stored_text(engine)
    sending = make_settings(settings, alert_webhook_url=secret_url)
    assert process(engine, sending, Clock(T0)) == {"delivered": 1}
    assert [request.path for request in receiver.requests] == ["/hook?token=QUERYSECRET"]
    engine.dispose()
