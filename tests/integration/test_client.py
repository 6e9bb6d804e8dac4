"""shadoweval.client: the router-side logger, against the real API and a scripted stub.

The real API runs on SQLite and PostgreSQL (`live_api`). The stub server stands in for it
where a test needs answers the API does not give on demand (503/429 with Retry-After, 5xx):
it answers from a script first, then proxies to the real API or accepts by itself.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.client import (
    AsyncDecisionLogger,
    DecisionLogger,
    LoggerStats,
    LoggingController,
    RouteLLMLogger,
    parse_retry_after,
    parse_router_model,
    route_and_log,
)
from shadoweval.ingest.models import Decision, DecisionIn
from tests.conftest import Keys, LiveApi, decision, free_port, use_settings

# Batches leave quickly and backoff is short, so only Retry-After can explain a long wait.
FAST: dict[str, Any] = {"max_batch_age": 0.05, "backoff_base": 0.01, "backoff_max": 0.05}

LoggerFactory = Callable[..., DecisionLogger]


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def stored_rows(engine: Engine) -> dict[str, Decision]:
    with Session(engine) as session:
        return {row.request_id: row for row in session.scalars(select(Decision))}


def conserved(stats: LoggerStats) -> bool:
    """Every accepted decision is sent, dropped for one reason, or still pending."""
    settled = (
        stats.sent
        + stats.dropped_queue_full
        + stats.dropped_rejected
        + stats.dropped_after_retries
        + stats.dropped_on_close
    )
    return stats.queued == settled + stats.pending


@pytest.fixture
def loggers() -> Iterator[LoggerFactory]:
    """Makes fast-batching loggers and closes them before the tables are emptied."""
    made: list[DecisionLogger] = []

    def make(url: str, key: str, **options: Any) -> DecisionLogger:
        logger = DecisionLogger(url, key, **{**FAST, **options})
        made.append(logger)
        return logger

    yield make
    for logger in made:
        logger.close(timeout=1)


# --- the stub server -----------------------------------------------------------------------


@dataclass
class Seen:
    at: float
    headers: dict[str, str]
    items: list[dict[str, Any]]


Scripted = tuple[int, Mapping[str, str] | Callable[[], Mapping[str, str]]]


class Stub:
    """Answers from `script` first, then proxies to `upstream`, or accepts everything."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.script: deque[Scripted] = deque()
        self.upstream: str | None = None
        self.seen: list[Seen] = []
        self.url = ""
        self.app = FastAPI()
        self.app.add_api_route("/v1/decisions", self.handle, methods=["POST"])

    def reset(self, *, upstream: str | None = None, script: list[Scripted] | None = None) -> None:
        with self.lock:
            self.upstream = upstream
            self.script = deque(script or [])
            self.seen = []

    def request_ids(self) -> list[str]:
        with self.lock:
            return [str(item.get("request_id")) for seen in self.seen for item in seen.items]

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        body = gzip.decompress(raw) if request.headers.get("content-encoding") == "gzip" else raw
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        with self.lock:
            self.seen.append(Seen(time.monotonic(), dict(request.headers), items))
            scripted = self.script.popleft() if self.script else None
            upstream = self.upstream
        if scripted is not None:
            status, headers = scripted
            return Response(
                status_code=status, headers=dict(headers() if callable(headers) else headers)
            )
        if upstream is not None:
            forwarded = {
                k: v
                for k, v in request.headers.items()
                if k in ("authorization", "content-type", "content-encoding")
            }
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"{upstream}/v1/decisions", content=raw, headers=forwarded
                )
            return Response(answer.content, answer.status_code, media_type="application/json")
        results = [
            {"index": i, "status": "stored", "request_id": item.get("request_id")}
            for i, item in enumerate(items)
        ]
        body_out = {"stored": len(items), "duplicates": 0, "invalid": 0, "results": results}
        return JSONResponse(body_out, status_code=202)


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Stub]:
    stub = Stub()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(stub.app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=20)
    stub.url = f"http://127.0.0.1:{port}"
    yield stub
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def stub(stub_server: Stub) -> Stub:
    stub_server.reset()
    return stub_server


# --- delivery to the real API --------------------------------------------------------------


def test_logged_decisions_arrive_and_are_stored(
    live_api: LiveApi, keys: Keys, engine: Engine, loggers: LoggerFactory
) -> None:
    logger = loggers(live_api.url, keys.ingest, max_batch_age=30)
    without_ts = decision("no-ts")
    del without_ts["ts"]
    for i in range(30):
        assert logger.log(decision(f"c-{i}")) is True
    assert logger.log(DecisionIn.model_validate(decision("model")))  # pydantic models too
    assert logger.log(decision("aware", ts=datetime(2026, 11, 27, 9, 30, tzinfo=UTC)))
    before = datetime.now(UTC)
    assert logger.log(without_ts)
    after = datetime.now(UTC)
    assert "ts" not in without_ts  # the caller's dict is left alone

    time.sleep(0.3)  # the batch leaves well after the routing time
    assert logger.flush(timeout=10)

    stats = logger.stats()
    assert (stats.queued, stats.sent, stats.stored, stats.pending, stats.dropped) == (
        33,
        33,
        33,
        0,
        0,
    )
    assert stats.last_error is None
    rows = stored_rows(engine)
    assert set(rows) == {f"c-{i}" for i in range(30)} | {"model", "aware", "no-ts"}
    assert rows["aware"].ts == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    # `ts` is the log() time, not the send time.
    assert before - timedelta(milliseconds=1) <= rows["no-ts"].ts <= after
    assert rows["no-ts"].received_at >= after + timedelta(milliseconds=250)
    with live_api.client(keys.read) as reader:
        page = reader.get("/v1/decisions", params={"limit": 100}).json()
    assert len(page["items"]) == 33


def test_flush_and_close_semantics(live_api: LiveApi, keys: Keys, engine: Engine) -> None:
    logger = DecisionLogger(live_api.url, keys.ingest, max_batch_age=30)
    assert logger.flush(timeout=0.5) is True  # nothing queued: returns at once

    logger.log(decision("f-1"))
    assert stored_rows(engine) == {}  # not due for 30 s
    assert logger.flush(timeout=10) is True  # blocks until the server committed it
    assert set(stored_rows(engine)) == {"f-1"}

    logger.log(decision("f-2"))
    logger.log(decision("f-3"))
    assert logger.close(timeout=10) is True  # close flushes first
    assert set(stored_rows(engine)) == {"f-1", "f-2", "f-3"}
    assert logger.close() is True  # idempotent
    assert logger.log(decision("f-late")) is False
    assert logger.stats().dropped_closed == 1
    assert logger.flush(timeout=0.1) is True

    with DecisionLogger(live_api.url, keys.ingest, max_batch_age=30) as scoped:
        scoped.log(decision("f-4"))
    assert "f-4" in stored_rows(engine)
    assert scoped.stats().stored == 1


def test_gzip_for_large_batches(
    live_api: LiveApi, keys: Keys, engine: Engine, stub: Stub, loggers: LoggerFactory
) -> None:
    stub.reset(upstream=live_api.url)
    logger = loggers(stub.url, keys.ingest, gzip_min_bytes=2048, max_batch_age=30)
    logger.log(decision("small"))
    assert logger.flush(timeout=10)
    for i in range(20):
        logger.log(decision(f"big-{i}"))
    assert logger.flush(timeout=10)

    assert [s.headers.get("content-encoding") for s in stub.seen] == [None, "gzip"]
    assert all(s.headers["content-type"] == "application/x-ndjson" for s in stub.seen)
    assert len(stored_rows(engine)) == 21
    assert logger.stats().stored == 21


def test_retries_503_and_429_honouring_retry_after_then_stores(
    live_api: LiveApi, keys: Keys, engine: Engine, stub: Stub, loggers: LoggerFactory
) -> None:
    stub.reset(
        upstream=live_api.url,
        script=[(503, {"Retry-After": "1"}), (429, {"Retry-After": "1"})],
    )
    logger = loggers(stub.url, keys.ingest)
    for i in range(5):
        logger.log(decision(f"r-{i}"))
    assert logger.flush(timeout=10)

    assert len(stub.seen) == 3
    assert all(later.at - earlier.at >= 0.95 for earlier, later in pairwise(stub.seen))
    assert all(len(s.items) == 5 for s in stub.seen)  # the same batch each time
    stats = logger.stats()
    assert (stats.requests, stats.retries, stats.sent, stats.stored) == (3, 2, 5, 5)
    assert stats.last_error is not None
    assert stats.last_error.startswith("HTTP 429")
    assert set(stored_rows(engine)) == {f"r-{i}" for i in range(5)}


def test_422_counts_invalid_items_and_does_not_resend(
    live_api: LiveApi,
    keys: Keys,
    engine: Engine,
    stub: Stub,
    loggers: LoggerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub.reset(upstream=live_api.url)
    logger = loggers(stub.url, keys.ingest, max_batch_age=30)
    for i in range(3):
        logger.log(decision(f"ok-{i}"))
    logger.log(decision("bad-score", router_score=2.0))
    logger.log(decision("bad-tier", tier="not a tier"))
    logger.log(decision("bad-both", router_score=-1.0, tier="no tier"))  # two errors, one item
    with caplog.at_level(logging.WARNING, logger="shadoweval.client"):
        assert logger.flush(timeout=10)

    assert len(stub.seen) == 1  # the valid ones are stored: nothing to resend
    stats = logger.stats()
    assert (stats.sent, stats.stored, stats.invalid) == (6, 3, 3)
    assert (stats.retries, stats.dropped) == (0, 0)
    assert stats.last_error is not None
    assert "3 of 6 decisions invalid" in stats.last_error
    assert "request_id=bad-score" in stats.last_error
    assert set(stored_rows(engine)) == {"ok-0", "ok-1", "ok-2"}
    assert any("invalid" in record.getMessage() for record in caplog.records)


def test_401_and_403_are_not_retried(live_api: LiveApi, keys: Keys, loggers: LoggerFactory) -> None:
    for key, status in (("not-a-key", 401), (keys.read, 403)):
        # A batch age the three logs cannot outlast, so they go as one request under any load.
        logger = loggers(live_api.url, key, max_batch_age=30)
        for i in range(3):
            logger.log(decision(f"k-{i}"))
        assert logger.flush(timeout=10)
        stats = logger.stats()
        assert (stats.requests, stats.retries, stats.sent, stats.dropped_rejected) == (1, 0, 0, 3)
        assert stats.last_error is not None
        assert stats.last_error.startswith(f"HTTP {status}")


def test_413_splits_the_batch_until_it_fits(
    live_api: LiveApi, keys: Keys, engine: Engine, loggers: LoggerFactory
) -> None:
    use_settings(live_api, ingest_max_items=4)
    logger = loggers(live_api.url, keys.ingest, max_batch_items=10, max_batch_age=30)
    for i in range(10):
        logger.log(decision(f"split-{i}"))
    assert logger.flush(timeout=10)

    stats = logger.stats()
    # 10 → 413; 5 → 413, 2 + 3 stored; 5 → 413, 2 + 3 stored.
    assert (stats.requests, stats.stored, stats.dropped) == (7, 10, 0)
    assert len(stored_rows(engine)) == 10


# --- batching and retries, against the stub ------------------------------------------------


def test_batches_by_size_and_by_bytes(stub: Stub, loggers: LoggerFactory) -> None:
    logger = loggers(stub.url, "key", max_batch_items=10, max_batch_age=30)
    for i in range(25):
        logger.log(decision(f"s-{i:02}"))
    wait_until(lambda: len(stub.seen) >= 2)
    time.sleep(0.1)
    assert [len(s.items) for s in stub.seen] == [10, 10]  # the last 5 wait for age or flush
    assert logger.flush(timeout=5)
    assert [len(s.items) for s in stub.seen] == [10, 10, 5]
    assert stub.request_ids() == [f"s-{i:02}" for i in range(25)]

    stub.reset()
    line = len(json.dumps(decision("s-00"), separators=(",", ":"))) + 1
    by_bytes = loggers(stub.url, "key", max_batch_bytes=max(1024, 3 * line), max_batch_age=30)
    for i in range(10):
        by_bytes.log(decision(f"s-{i:02}"))
    assert by_bytes.flush(timeout=5)
    assert [len(s.items) for s in stub.seen] == [3, 3, 3, 1]


def test_batches_by_age(stub: Stub, loggers: LoggerFactory) -> None:
    logger = loggers(stub.url, "key", max_batch_age=0.3)
    started = time.monotonic()
    for i in range(3):
        logger.log(decision(f"age-{i}"))
    time.sleep(0.1)
    assert stub.seen == []
    wait_until(lambda: stub.seen, timeout=3)
    assert stub.seen[0].at - started >= 0.25
    assert len(stub.seen[0].items) == 3


def test_retry_after_as_http_date(stub: Stub, loggers: LoggerFactory) -> None:
    def later() -> dict[str, str]:
        when = datetime.now(UTC) + timedelta(seconds=2)
        return {"Retry-After": format_datetime(when, usegmt=True)}

    stub.reset(script=[(503, later)])
    logger = loggers(stub.url, "key")
    logger.log(decision("dated"))
    assert logger.flush(timeout=10)
    first, second = stub.seen
    # An HTTP date has whole seconds: "now + 2 s" is at least 1 s away.
    assert 1.0 <= second.at - first.at < 3.5
    assert logger.stats().retries == 1


def test_5xx_are_retried_with_backoff_then_given_up(stub: Stub, loggers: LoggerFactory) -> None:
    stub.reset(script=[(500, {}), (502, {}), (504, {})])
    logger = loggers(stub.url, "key")
    logger.log(decision("five"))
    assert logger.flush(timeout=5)
    stats = logger.stats()
    assert (stats.requests, stats.retries, stats.sent, stats.dropped) == (4, 3, 1, 0)

    stub.reset(script=[(503, {})] * 3)
    stubborn = loggers(stub.url, "key", max_retries=2)
    for i in range(4):
        stubborn.log(decision(f"lost-{i}"))
    assert stubborn.flush(timeout=5)  # given up counts as done
    stats = stubborn.stats()
    assert (stats.requests, stats.retries, stats.sent, stats.dropped_after_retries) == (3, 2, 0, 4)
    stubborn.log(decision("next"))  # the logger moves on to the next batch
    assert stubborn.flush(timeout=5)
    assert stubborn.stats().sent == 1
    assert conserved(stubborn.stats())


def test_unreachable_server_drops_and_counts_without_blocking_log(loggers: LoggerFactory) -> None:
    closed_port = f"http://127.0.0.1:{free_port()}"
    logger = loggers(
        closed_port,
        "key",
        max_queue_items=100,
        max_batch_items=50,
        backoff_base=1.0,
        backoff_max=1.0,
    )
    durations = []
    for i in range(2000):
        started = time.perf_counter()
        logger.log(decision(f"u-{i}"))
        durations.append(time.perf_counter() - started)
    # Never waits for the network: the sender is backing off for 1 s per attempt, so a log()
    # that blocked on it would take that long. (No tighter bound: CI machines are shared.)
    assert max(durations) < 0.5, max(durations)

    wait_until(lambda: logger.stats().retries >= 1)
    stats = logger.stats()
    assert stats.queued == 2000
    assert stats.pending <= 150
    assert stats.dropped_queue_full >= 2000 - 150
    assert stats.last_error is not None
    assert "ConnectError" in stats.last_error
    assert conserved(stats)

    assert logger.flush(timeout=0.2) is False
    started = time.monotonic()
    assert logger.close(timeout=0.3) is False
    assert time.monotonic() - started < 1.5
    stats = logger.stats()
    assert stats.pending == 0
    assert stats.dropped_on_close > 0
    assert conserved(stats)


def test_drop_oldest_or_newest_when_the_queue_is_full(stub: Stub, loggers: LoggerFactory) -> None:
    for policy, kept in (("oldest", range(3, 8)), ("newest", range(5))):
        stub.reset()
        logger = loggers(stub.url, "key", drop=policy, max_queue_items=5, max_batch_age=30)
        accepted = [logger.log(decision(f"{policy}-{i}")) for i in range(8)]
        assert logger.flush(timeout=5)
        assert stub.request_ids() == [f"{policy}-{i}" for i in kept]
        assert accepted == ([True] * 8 if policy == "oldest" else [True] * 5 + [False] * 3)
        assert logger.stats().dropped_queue_full == 3
        assert conserved(logger.stats())


def test_log_never_raises_for_junk_or_after_close(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("boom")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("boom")

        def __len__(self) -> int:
            return 1

    logger = DecisionLogger(f"http://127.0.0.1:{free_port()}", "key", max_batch_bytes=2048)
    junk: list[Any] = [
        None,
        42,
        "a string",
        [decision("in-a-list")],
        decision("nan", router_score=float("nan")),
        decision("object", features={"x": object()}),
        Exploding(),
        decision("huge", response={"text": "x" * 4096}),
    ]
    with caplog.at_level(logging.WARNING, logger="shadoweval.client"):
        for item in junk:
            assert logger.log(item) is False
        assert logger.close(timeout=1) is True
        assert logger.log(decision("late")) is False
        assert logger.log(decision("later")) is False

    stats = logger.stats()
    assert (stats.queued, stats.dropped_invalid_input, stats.dropped_closed) == (0, len(junk), 2)
    assert stats.requests == 0
    messages = [r.getMessage() for r in caplog.records]
    # At most one message per kind of problem per log_interval (60 s by default).
    assert sum("not logged" in m for m in messages) == 1
    assert sum("after close" in m for m in messages) == 1


def test_many_threads_log_at_once(stub: Stub, loggers: LoggerFactory) -> None:
    logger = loggers(stub.url, "key", max_batch_items=37)

    def produce(worker: int) -> None:
        for i in range(100):
            logger.log(decision(f"t{worker}-{i}"))
            if i % 40 == 0:
                logger.flush(timeout=5)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert logger.flush(timeout=10)
    ids = stub.request_ids()
    assert len(ids) == 800
    assert len(set(ids)) == 800
    assert logger.stats().sent == 800


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_sends_only_its_own_decisions(stub: Stub, loggers: LoggerFactory) -> None:
    logger = loggers(stub.url, "key", max_batch_age=30)
    logger.log(decision("parent"))  # queued in the parent when it forks
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            logger.log(decision("child"))
            flushed = logger.flush(timeout=5)
            stats = logger.stats()
            code = 0 if flushed and (stats.queued, stats.sent) == (1, 1) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        assert time.monotonic() < deadline, "child did not exit"
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    assert logger.flush(timeout=5)
    assert sorted(stub.request_ids()) == ["child", "parent"]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_future_http_date() -> None:
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Fri, 27 Nov 2026 12:00:30 GMT", now=now) == 30.0


# --- the asyncio variant -------------------------------------------------------------------


def test_async_logger_delivers_flushes_and_closes(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    async def main() -> AsyncDecisionLogger:
        async with AsyncDecisionLogger(live_api.url, keys.ingest, max_batch_age=30) as logger:
            for i in range(20):
                assert logger.log(decision(f"a-{i}"))
            # log() from a worker thread wakes the loop's task too.
            await asyncio.to_thread(lambda: [logger.log(decision(f"t-{i}")) for i in range(5)])
            assert await logger.flush(timeout=10)
            assert logger.stats().stored == 25
            logger.log(decision("on-exit"))
        assert logger.log(decision("late")) is False
        return logger

    logger = asyncio.run(main())
    stats = logger.stats()
    assert (stats.sent, stats.stored, stats.dropped_closed, stats.pending) == (26, 26, 1, 0)
    assert len(stored_rows(engine)) == 26


def test_async_logger_retries_and_never_blocks_when_unreachable(stub: Stub) -> None:
    stub.reset(script=[(503, {"Retry-After": "0"}), (500, {})])

    async def retried() -> LoggerStats:
        logger = AsyncDecisionLogger(stub.url, "key", **FAST)
        logger.log(decision("async-retry"))
        assert await logger.flush(timeout=5)
        assert await logger.aclose(timeout=5)
        assert await logger.aclose() is True  # idempotent
        return logger.stats()

    stats = asyncio.run(retried())
    assert (stats.requests, stats.retries, stats.sent) == (3, 2, 1)

    async def unreachable() -> tuple[LoggerStats, float, float]:
        logger = AsyncDecisionLogger(
            f"http://127.0.0.1:{free_port()}",
            "key",
            max_queue_items=50,
            max_batch_age=0.01,
            backoff_base=1.0,
            backoff_max=1.0,
        )
        slowest = 0.0
        for i in range(500):
            started = time.perf_counter()
            logger.log(decision(f"down-{i}"))
            slowest = max(slowest, time.perf_counter() - started)
            if i % 100 == 0:
                await asyncio.sleep(0.01)  # let the task try, and fail
        started = time.monotonic()
        closed = await logger.aclose(timeout=0.3)
        assert closed is False
        return logger.stats(), slowest, time.monotonic() - started

    stats, slowest, closing = asyncio.run(unreachable())
    assert slowest < 0.5  # the 1 s backoff never leaks into log()
    assert closing < 1.5
    assert stats.retries >= 1
    assert stats.dropped_queue_full > 0
    assert stats.dropped_on_close > 0
    assert stats.pending == 0
    assert conserved(stats)


# --- RouteLLM ------------------------------------------------------------------------------


class FakeRouter:
    """Scores prompts from a table, like a RouteLLM router's calculate_strong_win_rate."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls: list[str] = []

    def calculate_strong_win_rate(self, prompt: str) -> float:
        self.calls.append(prompt)
        if prompt not in self.scores:
            raise RuntimeError("embedding service down")
        return self.scores[prompt]


@dataclass
class ModelPair:
    strong: str
    weak: str


class FakeController:
    def __init__(self, router: FakeRouter) -> None:
        self.routers = {"mf": router}
        self.model_pair = ModelPair(strong="gpt-4-1106-preview", weak="mixtral-8x7b-instruct-v0.1")

    def route(self, prompt: str, router: str, threshold: float) -> str:
        raise AssertionError(
            "route() scores again and returns no score; the wrapper must not call it"
        )


def user(text: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "an earlier turn"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": text},
    ]


def test_route_and_log_scores_once_and_routes_on_both_sides(
    live_api: LiveApi, keys: Keys, engine: Engine, loggers: LoggerFactory
) -> None:
    router = FakeRouter({"hard": 0.8, "easy": 0.2, "edge": 0.5})
    controller = FakeController(router)
    logger = loggers(live_api.url, keys.ingest)

    routed = {
        prompt: route_and_log(
            controller,
            "mf",
            0.5,
            user(prompt),
            None,
            None,
            logger,
            request_id=f"rl-{prompt}",
            segment={"topic": "math"},
        )
        for prompt in ("hard", "easy", "edge")
    }

    assert router.calls == ["hard", "easy", "edge"]  # once per decision, last message only
    assert (routed["hard"].model, routed["hard"].tier) == ("gpt-4-1106-preview", "strong")
    assert (routed["easy"].model, routed["easy"].tier) == ("mixtral-8x7b-instruct-v0.1", "cheap")
    assert routed["edge"].strong  # score == threshold routes strong, as in RouteLLM
    assert logger.flush(timeout=10)

    rows = stored_rows(engine)
    for prompt, score in (("hard", 0.8), ("easy", 0.2), ("edge", 0.5)):
        row = rows[f"rl-{prompt}"]
        assert row.router == "routellm-mf"
        assert (row.router_score, row.threshold, row.score_semantics) == (
            score,
            0.5,
            "p_strong_needed",
        )
        assert row.chosen_model == routed[prompt].model
        assert row.tier == routed[prompt].tier
        assert {c["tier"]: c["model"] for c in row.candidates} == {
            "strong": "gpt-4-1106-preview",
            "cheap": "mixtral-8x7b-instruct-v0.1",
        }
        assert row.extra["routellm_router"] == "mf"
        assert row.router_latency_ms is not None
        assert row.router_latency_ms >= 0
        assert row.has_request
        assert row.segment == {"topic": "math"}
        assert row.fallback is False


def test_routellm_logger_logs_once_after_the_answer(
    live_api: LiveApi, keys: Keys, engine: Engine, loggers: LoggerFactory
) -> None:
    router = FakeRouter({"easy": 0.1})
    logger = loggers(live_api.url, keys.ingest, max_batch_age=30)
    routellm = RouteLLMLogger(
        FakeController(router),
        logger,
        router_name="mf",
        threshold=0.11593,
        strong_model="claude-sonnet-4-5",
        weak_model="claude-haiku-4-5",
        name="support-router",
        fallback="weak",
    )
    routed_at = datetime.now(UTC)
    routed = routellm.route(user("easy"), request_id="deferred")
    assert (routed.model, routed.score, routed.threshold) == ("claude-haiku-4-5", 0.1, 0.11593)
    assert logger.stats().queued == 0  # nothing logged until the answer is in

    assert routed.log(
        response_text="The answer.",
        finish_reason="stop",
        usage={"input_tokens": 9, "output_tokens": 3},
        latency_ms=12.5,
    )
    assert routed.log(response_text="again") is False  # one log per decision

    down = routellm.route_and_log(user("not in the table"), request_id="fell-back")
    assert (down.model, down.score) == ("claude-haiku-4-5", None)
    assert logger.flush(timeout=10)

    rows = stored_rows(engine)
    row = rows["deferred"]
    assert (row.router, row.chosen_model, row.router_score) == (
        "support-router",
        "claude-haiku-4-5",
        0.1,
    )
    assert row.has_response
    assert row.output_tokens == 3
    assert row.latency_ms == 12.5
    assert routed_at - timedelta(milliseconds=1) <= row.ts <= datetime.now(UTC)
    fell_back = rows["fell-back"]
    assert fell_back.fallback is True
    assert fell_back.router_score is None
    assert "embedding service down" in fell_back.extra["router_error"]


def test_routellm_configuration_errors_raise_and_scoring_errors_propagate() -> None:
    controller = FakeController(FakeRouter({}))
    logger = DecisionLogger("http://127.0.0.1:9", "key")
    with pytest.raises(ValueError, match="not loaded"):
        RouteLLMLogger(controller, logger, router_name="bert", threshold=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        RouteLLMLogger(controller, logger, router_name="mf", threshold=1.5)
    with pytest.raises(RuntimeError, match="embedding service down"):  # no fallback configured
        route_and_log(controller, "mf", 0.5, user("x"), None, None, logger)
    with pytest.raises(ValueError, match="empty"):
        route_and_log(controller, "mf", 0.5, [], None, None, logger)
    assert logger.stats().queued == 0
    logger.close(timeout=1)

    assert parse_router_model("router-mf-0.11593") == ("mf", 0.11593)
    assert parse_router_model("router-causal_llm-0.3") == ("causal_llm", 0.3)
    with pytest.raises(ValueError, match="router-<router>-<threshold>"):
        parse_router_model("gpt-4o")


class CompletingController(FakeController):
    """RouteLLM 0.2.0's `Controller.completion`, step for step, with a canned provider.

    Stands in where the real package is not installed (tests/integration/test_routellm.py
    runs the real one): parse `router-<name>-<threshold>`, route through
    `routers[name].route(prompt, threshold, model_pair)`, then call the model.
    """

    def __init__(self, router: FakeRouter, answers: dict[str, Any]) -> None:
        super().__init__(router)
        self.model_pair = ModelPair(strong="openai/gpt-4o", weak="openai/gpt-4o-mini")
        self.answers = answers
        self.called: list[str] = []

    def completion(self, **kwargs: Any) -> Any:
        _, router, threshold = kwargs["model"].split("-", 2)
        if router not in self.routers:
            raise LookupError(f"Invalid router {router}")
        prompt = kwargs["messages"][-1]["content"]
        # Router.route(prompt, threshold, pair): here the wrapper's recording stand-in.
        model = self.routers[router].route(prompt, float(threshold), self.model_pair)
        self.called.append(model)
        return self.answers[model]

    async def acompletion(self, **kwargs: Any) -> Any:
        return self.completion(**kwargs)


class Answer:
    """A LiteLLM ModelResponse as far as the wrapper reads it."""

    def __init__(self, served: str, cost: float | None) -> None:
        self.id = f"chatcmpl-{served}"
        self.model = served
        self.choices = [
            {"message": {"role": "assistant", "content": f"[{served}]"}, "finish_reason": "stop"}
        ]
        self.usage = {"prompt_tokens": 11, "completion_tokens": 4}
        self._hidden_params = {"response_cost": cost}


def test_logging_controller_logs_the_score_the_controller_routed_on_once(
    live_api: LiveApi, keys: Keys, engine: Engine, loggers: LoggerFactory
) -> None:
    router = FakeRouter({"hard": 0.9, "easy": 0.1, "edge": 0.3, "odd": 1.25})
    answers = {
        "openai/gpt-4o": Answer("gpt-4o-2024-08-06", 0.0025),
        "openai/gpt-4o-mini": Answer("gpt-4o-mini", None),  # LiteLLM could not price it
    }
    controller = CompletingController(router, answers)
    logger = loggers(live_api.url, keys.ingest)
    client = LoggingController(controller, logger, router_version="v7")

    for prompt in ("hard", "easy", "edge", "odd"):
        answer = client.chat.completions.create(
            model="router-mf-0.3", messages=user(prompt), request_id=f"lc-{prompt}"
        )
        assert answer is answers[controller.called[-1]]  # the controller's answer, unchanged
    asyncio.run(client.acompletion(model="router-mf-0.3", messages=user("easy")))
    with pytest.raises(LookupError):  # refused before routing: nothing logged
        client.completion(model="router-bert-0.3", messages=user("hard"))
    with pytest.raises(RuntimeError, match="embedding service down"):  # scoring failed
        client.completion(model="router-mf-0.3", messages=user("unknown"))
    assert logger.flush(timeout=10)

    assert router.calls == ["hard", "easy", "edge", "odd", "easy", "unknown"]  # once each
    rows = stored_rows(engine)
    assert set(rows) == {"lc-hard", "lc-easy", "lc-edge", "lc-odd", "chatcmpl-gpt-4o-mini"}
    hard, easy, edge, odd = (rows[f"lc-{p}"] for p in ("hard", "easy", "edge", "odd"))
    assert (hard.tier, hard.chosen_model, hard.served_model, hard.cost_usd) == (
        "strong",
        "openai/gpt-4o",
        "openai/gpt-4o-2024-08-06",  # the snapshot the provider reports, prefix put back
        0.0025,
    )
    assert (easy.tier, easy.chosen_model, easy.served_model, easy.cost_usd) == (
        "cheap",
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini",
        None,
    )
    assert (edge.router_score, edge.tier) == (0.3, "strong")  # score == threshold: strong
    assert (odd.router_score, odd.extra["router_score_raw"]) == (1.0, 1.25)
    assert (hard.router, hard.router_version, hard.threshold) == ("routellm-mf", "v7", 0.3)
    assert hard.has_response
    assert (hard.input_tokens, hard.output_tokens) == (11, 4)
    assert hard.latency_ms is not None
    assert rows["chatcmpl-gpt-4o-mini"].tier == "cheap"  # no request_id: the answer's id
