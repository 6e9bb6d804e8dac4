"""The asyncio logger: `DecisionLogger` (`_loggers.py`) on an asyncio task with
httpx.AsyncClient, over the same base."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType
from typing import Self, Unpack

import httpx

from shadoweval_client._buffer import _deadline, _Item, _remaining
from shadoweval_client._loggers import _async_loggers, _BaseLogger
from shadoweval_client._wire import (
    _ASYNC_INLINE_GZIP_MAX,
    DecisionLike,
    LoggerOptions,
    _Answer,
    _describe,
    _encode_batch,
)


class AsyncDecisionLogger(_BaseLogger):
    """`DecisionLogger` on an asyncio task with httpx.AsyncClient, for async routers.

    `log()` is a plain method (no await), safe to call from the event loop and from other
    threads. The task starts on the first `log()` made inside a running loop (or the first
    `await flush()`); call `await aclose()` before the loop ends, e.g. in the app's lifespan:
    there is no interpreter-exit hook for an event loop that is already gone.

    Takes the same arguments as `DecisionLogger`, with an `httpx.AsyncBaseTransport`.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Unpack[LoggerOptions],
    ) -> None:
        super().__init__(url, key, **options)
        self._transport = transport
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        _async_loggers.add(self)

    def log(self, decision: DecisionLike) -> bool:
        """Queue one decision; True when accepted. Never awaits, never blocks, never raises."""
        accepted, wake = self._buf.offer(decision)
        if accepted:
            try:
                task = self._task
                if task is None or task.done():
                    self._ensure_task()
                elif wake:
                    self._signal(self._wake)
            except Exception as exc:
                self._buf.throttle.warn("internal", "shadoweval decision log: log: %s", exc)
        return accepted

    async def flush(self, timeout: float | None = 10.0) -> bool:
        """Send everything queued so far now; wait until it was sent or given up on."""
        try:
            deadline = _deadline(timeout)
            buf = self._buf
            target = buf.request_flush()
            if buf.flushed(target):
                return True
            self._ensure_task()
            self._signal(self._wake)
            while not buf.flushed(target):
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    return False
                # Polling keeps this correct when progress comes from another thread or loop.
                await asyncio.sleep(0.01 if remaining is None else min(0.01, remaining))
            return True
        except Exception as exc:
            self._buf.throttle.warn("internal", "shadoweval decision log: flush: %s", exc)
            return False

    async def aclose(self, timeout: float | None = 10.0) -> bool:
        """Flush, then stop the task. Idempotent; True when nothing was left unsent."""
        buf = self._buf
        if not self._begin_close():
            return buf.pending() == 0
        deadline = _deadline(timeout)
        flushed = await self.flush(timeout)
        with buf.cond:
            buf.stopping = True
            buf.cond.notify_all()
        task = self._task
        if task is not None and not task.done():
            self._signal(self._stop)
            self._signal(self._wake)
            if task.get_loop() is asyncio.get_running_loop():
                remaining = _remaining(deadline)
                await asyncio.wait(
                    {task}, timeout=None if remaining is None else max(remaining, 0.1)
                )
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        else:
            buf.abandon()
        _async_loggers.discard(self)
        return flushed and buf.pending() == 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- task --

    def _signal(self, event: asyncio.Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            event.set()
        else:  # asyncio objects may only be touched from their loop's thread
            loop.call_soon_threadsafe(event.set)

    def _ensure_task(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in a loop: the queue waits for the next log() or flush()
            return
        with self._buf.cond:
            if self._buf.stopping or (self._task is not None and not self._task.done()):
                return
            # Fresh events: an asyncio.Event binds to the first loop that waits on it.
            self._wake = asyncio.Event()
            self._stop = asyncio.Event()
            self._loop = loop
            self._loop_thread = threading.get_ident()
            self._task = loop.create_task(self._run(), name="shadoweval-decision-logger")

    async def _run(self) -> None:
        buf = self._buf
        cfg = self._config
        current: list[_Item] = []
        try:
            async with httpx.AsyncClient(
                headers=cfg.headers, timeout=cfg.http_timeout, transport=self._transport
            ) as client:
                while not buf.stopping:
                    batch = buf.take_batch(time.monotonic())
                    if batch is None:
                        # Clear, then look again: a log() in between must not be slept through.
                        self._wake.clear()
                        batch = buf.take_batch(time.monotonic())
                    if batch is None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                self._wake.wait(), buf.seconds_until_due(time.monotonic())
                            )
                        continue
                    current = batch
                    try:
                        await self._deliver(client, batch)
                    except Exception as exc:
                        buf.give_up_inflight(_describe(exc))
                    current = []
        except Exception as exc:
            buf.give_up_inflight(_describe(exc))
        finally:
            if buf.stopping:  # stopped, or cancelled by aclose() after its timeout
                buf.abandon()
            else:
                buf.requeue_inflight(current)

    async def _deliver(self, client: httpx.AsyncClient, items: list[_Item]) -> None:
        buf = self._buf
        lines = [item.line for item in items]
        if sum(len(line) + 1 for line in lines) > _ASYNC_INLINE_GZIP_MAX:
            body, headers = await asyncio.to_thread(
                _encode_batch, lines, self._config.gzip_min_bytes
            )
        else:
            body, headers = _encode_batch(lines, self._config.gzip_min_bytes)
        attempt = 0
        while True:
            attempt += 1
            buf.count_request()
            try:
                response = await client.post(self._config.endpoint, content=body, headers=headers)
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
                        await self._deliver(client, half)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), step.delay)
            if buf.stopping:
                buf.give_up(items, "on_close", answer.error)
                return
