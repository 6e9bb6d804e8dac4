"""The base both loggers share, the thread logger, and the process hooks (exit, fork).

The asyncio logger over the same base is in `_async_logger.py`."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self, Unpack

import httpx

from shadoweval_client._buffer import _Buffer, _deadline, _Item, _remaining
from shadoweval_client._wire import (
    KEY_ENV,
    URL_ENV,
    DecisionLike,
    LoggerOptions,
    LoggerStats,
    _Answer,
    _Config,
    _describe,
    _encode_batch,
    _endpoint,
    _from_env,
    _headers,
    _interpret,
    _log,
)

if TYPE_CHECKING:
    from shadoweval_client._async_logger import AsyncDecisionLogger

# --- what both loggers share ----------------------------------------------------------------


class _BaseLogger:
    """Configuration, the queue, closing and reading an answer: everything but the I/O.

    As httpx's BaseClient under Client/AsyncClient: `DecisionLogger` sends from a thread
    with httpx.Client, `AsyncDecisionLogger` from an asyncio task with httpx.AsyncClient.
    """

    def __init__(self, url: str | None, key: str | None, **options: Unpack[LoggerOptions]) -> None:
        # Raises ValueError for a bad configuration, at startup, never from log().
        unknown = sorted(set(options) - LoggerOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {unknown}")
        url = _from_env(url, URL_ENV, "url")
        key = _from_env(key, KEY_ENV, "key")
        self._config = _Config(endpoint=_endpoint(url), headers=_headers(key), **options)
        self._buf = _Buffer(self._config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return self._config.endpoint

    def stats(self) -> LoggerStats:
        return self._buf.snapshot()

    def _begin_close(self) -> bool:
        """Mark the queue closing; True only for the first call, which does the closing."""
        buf = self._buf
        with buf.cond:
            first = not buf.closing
            buf.closing = True
        return first

    @staticmethod
    def _read(response: httpx.Response, items: Sequence[_Item]) -> _Answer:
        return _interpret(response.status_code, response.headers, response.content, len(items))


# --- the thread logger ---------------------------------------------------------------------


class DecisionLogger(_BaseLogger):
    """Posts decisions to shadoweval from a background thread; `log()` never blocks or raises.

    Args:
        url: the shadoweval base URL (`https://host`) or the full `…/v1/decisions` URL;
            default: the `SHADOWEVAL_URL` environment variable.
        key: an API key with the `ingest` scope; default: `SHADOWEVAL_INGEST_KEY`.
            Explicit arguments win over the environment; with neither, ValueError.
        max_batch_items / max_batch_bytes / max_batch_age: a batch is sent when it holds
            this many decisions, this many uncompressed bytes, or its oldest decision has
            waited this many seconds, whichever comes first. The server takes at most 1,000
            decisions and 5 MB per request; a 413 makes the client split the batch.
        max_queue_items / max_queue_bytes: the bound of the in-memory queue.
        drop: which decision a full queue gives up, "oldest" (default: keeps the freshest
            traffic, which the alerts are about) or "newest".
        gzip_min_bytes: compress bodies from this size on.
        max_retries / backoff_base / backoff_max: retries of 408/425/429/5xx and connection
            errors, with exponential backoff (base·2^n, capped, equal jitter).
        max_retry_after: a server's `Retry-After` is honoured up to this many seconds.
        timeout: seconds per HTTP request.
        log_interval: each kind of problem is logged at most once per this many seconds.
        atexit_timeout: how long the interpreter-exit hook waits for `close()`.
        transport: an httpx transport, for tests or custom networking.

    Create one per process at startup and share it: it owns a thread and a connection pool,
    and building it sets up the HTTP client (a TLS context takes tens of milliseconds).
    The constructor raises ValueError for a bad configuration; nothing else raises.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        atexit_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[LoggerOptions],
    ) -> None:
        super().__init__(url, key, **options)
        self._transport = transport
        self._atexit_timeout = atexit_timeout
        # Built here, on the caller's thread at startup: httpx imports httpcore, ssl and
        # certifi lazily when a client is built, and a fork while the worker thread holds an
        # import lock would leave the child hung on it for good.
        self._client = self._new_client()
        self._thread: threading.Thread | None = None
        _thread_loggers.add(self)

    def log(self, decision: DecisionLike) -> bool:
        """Queue one decision; True when it was accepted. Never blocks on I/O, never raises.

        A missing `ts` is set to now (UTC): the decision time is the routing time, not the
        send time. The decision is serialised right here, so later changes to the dict do
        not leak into the log, and a decision that is not JSON is refused (and counted)
        now, not later in a batch.
        """
        buf = self._buf
        accepted, wake = buf.offer(decision)
        if accepted and (self._thread is None or (wake and not self._thread.is_alive())):
            self._ensure_worker(buf)
        return accepted

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything queued so far now; block until it was sent or given up on.

        Returns False when `timeout` seconds passed first (None: wait as long as it takes).
        """
        try:
            deadline = _deadline(timeout)
            buf = self._buf
            with buf.cond:
                target = buf.request_flush()
                if buf.flushed(target):
                    return True
                self._ensure_worker(buf)
                while not buf.flushed(target):
                    remaining = _remaining(deadline)
                    if remaining is not None and remaining <= 0:
                        return False
                    buf.cond.wait(remaining)
                return True
        except Exception as exc:
            self._buf.throttle.warn("internal", "shadoweval decision log: flush: %s", exc)
            return False

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, then stop the thread. Idempotent; True when nothing was left unsent.

        Decisions still unsent after `timeout` are counted in `dropped_on_close`; `log()`
        after close is refused and counted in `dropped_closed`.
        """
        buf = self._buf
        if not self._begin_close():
            return buf.pending() == 0
        deadline = _deadline(timeout)
        flushed = self.flush(timeout)
        with buf.cond:
            buf.stopping = True
            buf.cond.notify_all()
            thread = self._thread
        if thread is not None and thread.is_alive():
            remaining = _remaining(deadline)
            # The worker may be inside an HTTP call; a short grace lets it count the result.
            thread.join(None if remaining is None else max(remaining, 0.1))
        else:
            buf.abandon()
            with contextlib.suppress(Exception):
                self._client.close()
        _thread_loggers.discard(self)
        return flushed and buf.pending() == 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- worker --

    def _ensure_worker(self, buf: _Buffer) -> None:
        with buf.cond:
            if buf.stopping or (self._thread is not None and self._thread.is_alive()):
                return
            thread = threading.Thread(
                target=self._run,
                args=(buf, self._client),
                name="shadoweval-decision-logger",
                daemon=True,
            )
            try:
                thread.start()
            except RuntimeError as exc:  # interpreter shutting down, or no threads left
                buf.counters.last_error = _describe(exc)
                return
            self._thread = thread

    def _new_client(self) -> httpx.Client:
        cfg = self._config
        return httpx.Client(
            headers=cfg.headers, timeout=cfg.http_timeout, transport=self._transport
        )

    def _run(self, buf: _Buffer, client: httpx.Client) -> None:
        try:
            while (batch := self._next_batch(buf)) is not None:
                try:
                    self._deliver(buf, client, batch)
                except Exception as exc:
                    buf.give_up_inflight(_describe(exc))
        except Exception as exc:
            buf.give_up_inflight(_describe(exc))
        finally:
            # Only a stop closes the client: after a crash, a new thread takes it over.
            if buf.stopping:
                buf.abandon()
                with contextlib.suppress(Exception):
                    client.close()

    def _next_batch(self, buf: _Buffer) -> list[_Item] | None:
        with buf.cond:
            while True:
                if buf.stopping:
                    return None
                now = time.monotonic()
                batch = buf.take_batch(now)
                if batch is not None:
                    return batch
                buf.cond.wait(buf.seconds_until_due(now))

    def _deliver(self, buf: _Buffer, client: httpx.Client, items: list[_Item]) -> None:
        body, headers = _encode_batch([item.line for item in items], self._config.gzip_min_bytes)
        attempt = 0
        while True:
            attempt += 1
            buf.count_request()
            try:
                response = client.post(self._config.endpoint, content=body, headers=headers)
                answer = self._read(response, items)
            except httpx.HTTPError as exc:
                answer = _Answer("retry", error=_describe(exc))
            step = buf.conclude(items, answer, attempt)
            if step.action == "done":
                return
            if step.action == "split":
                middle = len(items) // 2
                for half in (items[:middle], items[middle:]):
                    if buf.stopping:
                        buf.give_up(half, "on_close", answer.error)
                    else:
                        self._deliver(buf, client, half)
                return
            with buf.cond:
                stopping = buf.cond.wait_for(lambda: buf.stopping, timeout=step.delay)
            if stopping:
                buf.give_up(items, "on_close", answer.error)
                return

    def _reset_after_fork(self) -> None:
        # The parent still owns and sends what it queued; its thread does not exist here,
        # and its connection pool holds the parent's sockets, so the child gets new ones.
        # Every module the client needs is imported by now: building it takes no import lock.
        closing = self._buf.closing
        self._buf = _Buffer(self._config)
        self._buf.closing = closing
        self._thread = None
        if not closing:
            self._client = self._new_client()


# --- process lifecycle ---------------------------------------------------------------------

_thread_loggers: weakref.WeakSet[DecisionLogger] = weakref.WeakSet()
_async_loggers: weakref.WeakSet[AsyncDecisionLogger] = weakref.WeakSet()


def _close_at_exit() -> None:
    for logger in list(_thread_loggers):
        with contextlib.suppress(Exception):
            logger.close(logger._atexit_timeout)
    for async_logger in list(_async_loggers):
        pending = async_logger.stats().pending
        if pending:
            with contextlib.suppress(Exception):
                _log.warning(
                    "shadoweval decision log: %r not closed; %d decisions unsent at exit "
                    "(await aclose() before the event loop ends)",
                    async_logger,
                    pending,
                )


def _after_fork_in_child() -> None:
    for logger in list(_thread_loggers):
        with contextlib.suppress(Exception):  # an exception here would be printed, not raised
            logger._reset_after_fork()


atexit.register(_close_at_exit)
# Pre-forking servers (gunicorn --preload) fork after the logger exists: the child gets a
# fresh queue and starts its own thread on its first log().
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
