"""Ingest's throughput machinery keeps every guarantee: group commit, the key cache, and
traffic deltas, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import snapshots
from shadoweval.analytics.models import TrafficWindowSnapshot
from shadoweval.app import create_app
from shadoweval.auth import service as auth_service
from shadoweval.auth.models import ApiKey, Scope
from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest import store as ingest_store
from shadoweval.ingest.models import Decision, DecisionPayload, TrafficDelta
from shadoweval.ingest.parsing import parse_items
from shadoweval.ingest.submit import ingest_writer
from shadoweval.sampling import service as sampling_service
from tests.conftest import Keys, LiveApi, decision, serve, use_settings


def _count(engine: Engine, table: Any) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def _wait_for(condition: Any, what: str, limit_s: float = 20) -> None:
    """Wait for a state (not a duration): the assertion never depends on machine speed."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def one_writer_api(base_settings: Settings, engine: Engine) -> Iterator[LiveApi]:
    """A fresh API with a one-thread group-commit writer of its own, so which requests share
    a transaction is fixed by the test, not by thread timing or earlier tests."""
    app = create_app(base_settings, engine)
    ingest_writer(app).threads = 1
    with serve(app) as api:
        yield api


def _hold_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event, list[int]]:
    """Make the first write wait until released; record each transaction's item count."""
    entered, release = threading.Event(), threading.Event()
    sizes: list[int] = []
    real = ingest_store.store_prepared

    def held(**kwargs: Any) -> Any:
        sizes.append(sum(batch.size for batch in kwargs["batches"]))
        if len(sizes) == 1:
            entered.set()
            release.wait(20)
        return real(**kwargs)

    monkeypatch.setattr(ingest_store, "store_prepared", held)
    return entered, release, sizes


def test_concurrent_posts_share_a_transaction_and_each_is_answered_after_it(
    one_writer_api: LiveApi, keys: Keys, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seven requests: within the app's write slots (8), so none is turned away.
    entered, release, sizes = _hold_the_writer(monkeypatch)
    answers: dict[str, httpx.Response] = {}

    def post(request_id: str) -> None:
        with one_writer_api.client(keys.ingest) as client:
            answers[request_id] = client.post("/v1/decisions", json=decision(request_id))

    first = threading.Thread(target=post, args=("first",))
    first.start()
    assert entered.wait(20)
    others = [threading.Thread(target=post, args=(f"grouped-{i}",)) for i in range(6)]
    for thread in others:
        thread.start()
    writer = ingest_writer(one_writer_api.app)
    _wait_for(lambda: writer._queue.qsize() == 6, "six requests queued behind the first")
    # Nothing is acknowledged before its transaction commits.
    assert answers == {}
    release.set()
    for thread in [first, *others]:
        thread.join(20)

    assert sizes == [1, 6]  # the six waiting requests were written in one transaction
    assert {r.status_code for r in answers.values()} == {202}
    with Session(engine) as session:
        ids = {d.request_id: d.id for d in session.scalars(select(Decision))}
    for request_id, answer in answers.items():
        result = answer.json()["results"][0]
        assert result["index"] == 0
        assert (result["status"], result["request_id"], result["id"]) == (
            "stored",
            request_id,
            ids[request_id],
        )


def test_one_decision_in_two_grouped_requests_is_stored_once(
    one_writer_api: LiveApi, keys: Keys, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release, sizes = _hold_the_writer(monkeypatch)
    answers: list[httpx.Response] = []

    def post(body: list[dict[str, object]]) -> None:
        with one_writer_api.client(keys.ingest) as client:
            answers.append(client.post("/v1/decisions", json=body))

    threads = [threading.Thread(target=post, args=([decision("blocker")],))]
    threads[0].start()
    assert entered.wait(20)
    for body in (
        [decision("a"), decision("same")],
        [decision("same"), {"router": "x"}, decision("b")],
    ):
        threads.append(threading.Thread(target=post, args=(body,)))
        threads[-1].start()
    writer = ingest_writer(one_writer_api.app)
    _wait_for(lambda: writer._queue.qsize() == 2, "two requests queued")
    release.set()
    for thread in threads:
        thread.join(20)

    assert sizes == [1, 5]
    by_size = {len(a.json()["results"]): a for a in answers}
    two, three = by_size[2].json(), by_size[3].json()
    statuses = sorted(
        [r["status"] for r in two["results"] if r["request_id"] == "same"]
        + [r["status"] for r in three["results"] if r["request_id"] == "same"]
    )
    assert statuses == ["duplicate", "stored"]
    # The invalid item is reported at its index within its own request, not the group.
    assert by_size[3].status_code == 422
    assert {e["index"] for e in three["detail"]} == {1}
    assert [r["index"] for r in three["results"]] == [0, 1, 2]
    assert _count(engine, Decision) == 4  # blocker, a, same, b


def test_a_request_that_breaks_its_group_does_not_fail_the_others(
    one_writer_api: LiveApi, keys: Keys, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release, _sizes = _hold_the_writer(monkeypatch)
    held = ingest_store.store_prepared

    def poisoned(**kwargs: Any) -> Any:
        if any("poison" in key[1] for batch in kwargs["batches"] for key in batch.pending):
            raise RuntimeError("a bug triggered by one request")
        return held(**kwargs)

    monkeypatch.setattr(ingest_store, "store_prepared", poisoned)
    answers: dict[str, int] = {}

    def post(request_id: str) -> None:
        with one_writer_api.client(keys.ingest) as client:
            answers[request_id] = client.post(
                "/v1/decisions", json=decision(request_id)
            ).status_code

    threads = [threading.Thread(target=post, args=("blocker",))]
    threads[0].start()
    assert entered.wait(20)
    for request_id in ("good-1", "poison", "good-2"):
        threads.append(threading.Thread(target=post, args=(request_id,)))
        threads[-1].start()
    writer = ingest_writer(one_writer_api.app)
    _wait_for(lambda: writer._queue.qsize() == 3, "three requests queued")
    release.set()
    for thread in threads:
        thread.join(20)

    assert answers == {"blocker": 202, "good-1": 202, "poison": 500, "good-2": 202}
    assert _count(engine, Decision) == 3


def test_ingest_trusts_a_key_for_the_cache_period_only_and_revocation_here_applies_at_once(
    live_api: LiveApi, keys: Keys, session: Session
) -> None:
    use_settings(live_api, ingest_key_cache_seconds=3600)
    with live_api.client(keys.ingest) as client:
        assert client.post("/v1/decisions", json=decision("k-1")).status_code == 202
        # Revoked by another API process (straight in the database): this process's cache
        # still trusts the key, for at most ingest_key_cache_seconds.
        session.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
        session.commit()
        assert client.post("/v1/decisions", json=decision("k-2")).status_code == 202
        # A revocation through this process empties the cache at once.
        other = auth_service.create_key(session=session, scopes=[Scope.READ]).key
        auth_service.revoke_key(session=session, prefix="_".join(other.split("_")[:2]))
        refused = client.post("/v1/decisions", json=decision("k-3"))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_without_the_cache_a_revoked_key_is_refused_on_its_next_request(
    live_api: LiveApi, keys: Keys, session: Session
) -> None:
    use_settings(live_api, ingest_key_cache_seconds=0)
    with live_api.client(keys.ingest) as client:
        assert client.post("/v1/decisions", json=decision("n-1")).status_code == 202
        session.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
        session.commit()
        assert client.post("/v1/decisions", json=decision("n-2")).status_code == 401


def test_a_cached_key_still_needs_the_ingest_scope(live_api: LiveApi, keys: Keys) -> None:
    use_settings(live_api, ingest_key_cache_seconds=3600)
    with live_api.client(keys.read) as client:
        for _ in range(2):  # the first from the database, the second from the cache
            response = client.post("/v1/decisions", json=decision("scoped"))
            assert response.status_code == 403
            assert response.json()["required_scope"] == "ingest"


def _ingest(engine: Engine, settings: Settings, items: list[dict[str, object]]) -> None:
    import json

    body = "\n".join(json.dumps(item) for item in items).encode()
    parsed = parse_items(body, "application/x-ndjson", max_items=1000, defer_decoding=True)
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(session=session, settings=settings, parsed=parsed)
    assert not outcome.errors


def test_ingest_appends_traffic_deltas_that_are_folded_once(
    engine: Engine, base_settings: Settings
) -> None:
    settings = base_settings.model_copy(update={"sampling_rate_by_tier": {"cheap": 0.5}})
    _ingest(engine, settings, [decision(f"t-{i}", cost_usd=0.01) for i in range(30)])
    _ingest(engine, settings, [decision(f"t-{i}", cost_usd=0.01) for i in range(40)])  # 10 new
    assert _count(engine, TrafficWindowSnapshot) == 0
    assert _count(engine, TrafficDelta) == 2  # one per transaction and stratum-hour

    assert snapshots.fold_traffic_deltas(engine) == 2
    assert snapshots.fold_traffic_deltas(engine) == 0
    with Session(engine) as session:
        (snapshot,) = session.scalars(select(TrafficWindowSnapshot)).all()
        sampled = sum(d.sampled for d in session.scalars(select(Decision)))
    assert snapshot.decisions == 40
    assert snapshot.sampled == sampled
    assert snapshot.cost_usd == pytest.approx(0.40)
    assert _count(engine, TrafficDelta) == 0

    _ingest(engine, settings, [decision("t-late", cost_usd=0.01)])
    snapshots.fold_traffic_deltas(engine)
    with Session(engine) as session:
        assert session.scalars(select(TrafficWindowSnapshot)).one().decisions == 41


def test_the_planner_counts_traffic_not_folded_yet(engine: Engine, base_settings: Settings) -> None:
    now = datetime(2026, 11, 27, 18, tzinfo=UTC)
    items = [decision(f"p-{i}", segment={"topic": "billing"}) for i in range(50)]
    _ingest(engine, base_settings, items)
    snapshots.fold_traffic_deltas(engine)
    _ingest(
        engine, base_settings, [decision(f"q-{i}", segment={"topic": "billing"}) for i in range(25)]
    )
    with Session(engine) as session:
        sampling_service.plan_sampling(session=session, settings=base_settings, now=now)
        (stratum,) = sampling_service.list_strata(session=session)
    # Both the folded 50 and the unfolded 25 count, averaged over the router's 7 hours of
    # history (its decisions at 12:00, the plan through the hour of `now`, 18:00–19:00).
    assert stratum.expected_traffic_per_day == pytest.approx(75 / (7 / 24))


def _ingest_outcome(
    engine: Engine, settings: Settings, items: list[dict[str, object]]
) -> ingest_service.IngestOutcome:
    import json

    body = "\n".join(json.dumps(item) for item in items).encode()
    parsed = parse_items(body, "application/x-ndjson", max_items=1000, defer_decoding=True)
    with Session(engine) as session:
        return ingest_service.ingest_decisions(session=session, settings=settings, parsed=parsed)


def test_a_large_batch_stores_each_new_decision_once_with_its_own_id(
    engine: Engine, base_settings: Settings
) -> None:
    """Batches of 100+ take PostgreSQL's COPY path; small ones the row-by-row path."""
    settings = base_settings.model_copy(
        update={"sampling_rate_by_tier": {"cheap": 0.5}, "store_payloads": "sampled"}
    )
    first = _ingest_outcome(engine, settings, [decision(f"big-{i}") for i in range(40)])
    assert first.count("stored") == 40
    # 40 seen before, 160 new, one repeated inside the batch.
    items = [decision(f"big-{i}", cost_usd=9.0) for i in range(200)] + [decision("big-77")]
    outcome = _ingest_outcome(engine, settings, items)
    assert (outcome.count("stored"), outcome.count("duplicate")) == (160, 41)
    with Session(engine) as session:
        stored = {d.request_id: d for d in session.scalars(select(Decision))}
        payloads = dict(
            session.execute(select(DecisionPayload.decision_id, DecisionPayload.request)).all()
        )
    assert len(stored) == 200
    for result in outcome.results:
        row = stored[f"big-{result.index}" if result.index < 200 else "big-77"]
        if result.status == "stored":
            assert result.id == row.id
            assert result.sampled == row.sampled
            assert row.cost_usd == 9.0
            assert row.ts == datetime(2026, 11, 27, 12, tzinfo=UTC)
            assert row.segment == {"topic": "billing", "language": "en"}
            assert row.payload_stored == row.sampled == (row.id in payloads)
        else:
            assert result.id is None
    assert stored["big-3"].cost_usd == 0.0001  # the first write stays


def test_concurrent_large_batches_with_shared_decisions_store_each_once(
    engine: Engine, base_settings: Settings
) -> None:
    overlap = [decision(f"shared-{i}") for i in range(150)]
    outcomes: list[ingest_service.IngestOutcome] = []

    def post(name: str) -> None:
        own = [decision(f"{name}-{i}") for i in range(100)]
        outcomes.append(_ingest_outcome(engine, base_settings, own + overlap))

    threads = [threading.Thread(target=post, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 3
    assert sum(o.count("stored") for o in outcomes) == 3 * 100 + 150
    stored_ids = [r.id for o in outcomes for r in o.results if r.status == "stored"]
    assert len(set(stored_ids)) == len(stored_ids) == _count(engine, Decision) == 450
