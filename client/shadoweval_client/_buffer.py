"""The bounded queue both loggers share: admission, batching, retry decisions, counters."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from shadoweval_client._wire import (
    LoggerStats,
    _Answer,
    _Config,
    _Counters,
    _describe,
    _encode,
    _log,
)
from shadoweval_client.retry import equal_jitter

# --- the queue, shared by both loggers -----------------------------------------------------


class _Throttle:
    """Logs each kind of problem at most once per interval, with how many were suppressed."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" ({suppressed} more like this in the last {self._interval:g}s)"
        with contextlib.suppress(Exception):  # a broken log handler must not break routing
            _log.warning(message, *args)


@dataclass(slots=True)
class _Item:
    seq: int
    line: bytes
    at: float  # monotonic time of log()


@dataclass(frozen=True, slots=True)
class _Step:
    action: Literal["done", "retry", "split"]
    delay: float = 0.0


class _Buffer:
    """Queue, batching and accounting of one logger; no I/O, safe from any thread.

    Items carry increasing sequence numbers, so `flush()` can wait for exactly the items
    queued before it: those still in the queue or in the one batch in flight.
    """

    def __init__(self, config: _Config) -> None:
        self.config = config
        # Reentrant, so methods can lock although the worker already holds it while waiting.
        self.cond = threading.Condition(threading.RLock())
        self.queue: deque[_Item] = deque()
        self.queue_bytes = 0
        self.inflight = 0
        self.inflight_first: int | None = None
        self.next_seq = 0
        self.flush_through = -1
        self.closing = False
        self.stopping = False
        self.counters = _Counters()
        self.throttle = _Throttle(config.log_interval)

    # -- producer side (the caller's thread) --

    def offer(self, decision: object) -> tuple[bool, bool]:
        """Queue one decision. Returns (accepted, wake the worker). Never raises."""
        cfg = self.config
        try:
            if self.closing:  # unlocked read: a stale answer is re-checked under the lock
                return self._refuse_closed()
            try:
                line = _encode(decision)
            except Exception as exc:
                return self._refuse_input(_describe(exc))
            size = len(line) + 1
            if size > cfg.max_batch_bytes:
                return self._refuse_input(
                    f"{size} bytes exceeds max_batch_bytes={cfg.max_batch_bytes}"
                )
            dropped = 0
            with self.cond:
                if self.closing:
                    return self._refuse_closed()
                self.counters.queued += 1
                full = (
                    len(self.queue) >= cfg.max_queue_items
                    or self.queue_bytes + size > cfg.max_queue_bytes
                )
                if full and cfg.drop == "newest":
                    self.counters.dropped_queue_full += 1
                    dropped = -1
                else:
                    while self.queue and (
                        len(self.queue) >= cfg.max_queue_items
                        or self.queue_bytes + size > cfg.max_queue_bytes
                    ):
                        old = self.queue.popleft()
                        self.queue_bytes -= len(old.line) + 1
                        dropped += 1
                    self.counters.dropped_queue_full += dropped
                    self.queue.append(_Item(self.next_seq, line, time.monotonic()))
                    self.next_seq += 1
                    self.queue_bytes += size
                queued = len(self.queue)
                wake = (
                    queued == 1
                    or queued >= cfg.max_batch_items
                    or self.queue_bytes >= cfg.max_batch_bytes
                )
                if wake or dropped > 0:  # dropped items may complete a flush() waiting on them
                    self.cond.notify_all()
            if dropped:
                self.throttle.warn(
                    "queue_full",
                    "shadoweval decision log: queue full (%d decisions, %d bytes); dropping "
                    "the %s decision. The server is slow or unreachable, or max_queue_* is low",
                    queued,
                    self.queue_bytes,
                    cfg.drop,
                )
            return dropped >= 0, wake
        except Exception as exc:  # the request path is never the place to find a bug of ours
            with contextlib.suppress(Exception):
                self._refuse_input(f"internal error: {_describe(exc)}")
            return False, False

    def _refuse_closed(self) -> tuple[bool, bool]:
        with self.cond:
            self.counters.dropped_closed += 1
        self.throttle.warn("closed", "shadoweval decision log: log() after close(); dropped")
        return False, False

    def _refuse_input(self, reason: str) -> tuple[bool, bool]:
        with self.cond:
            self.counters.dropped_invalid_input += 1
        self.throttle.warn("invalid_input", "shadoweval decision log: not logged: %s", reason)
        return False, False

    # -- consumer side (the worker) --

    def take_batch(self, now: float) -> list[_Item] | None:
        """The next batch when one is due; the single in-flight batch until settled."""
        cfg = self.config
        with self.cond:
            if not self.queue or self.inflight:
                return None
            head = self.queue[0]
            due = (
                head.seq <= self.flush_through
                or len(self.queue) >= cfg.max_batch_items
                or self.queue_bytes >= cfg.max_batch_bytes
                or now - head.at >= cfg.max_batch_age
            )
            if not due:
                return None
            batch: list[_Item] = []
            size = 0
            while (
                self.queue
                and len(batch) < cfg.max_batch_items
                and size + len(self.queue[0].line) + 1 <= cfg.max_batch_bytes
            ):
                item = self.queue.popleft()
                size += len(item.line) + 1
                batch.append(item)
            self.queue_bytes -= size
            self.inflight = len(batch)
            self.inflight_first = batch[0].seq
            return batch

    def seconds_until_due(self, now: float) -> float | None:
        with self.cond:
            if not self.queue or self.inflight:
                return None
            return max(0.0, self.queue[0].at + self.config.max_batch_age - now)

    def count_request(self) -> None:
        with self.cond:
            self.counters.requests += 1

    def conclude(self, items: Sequence[_Item], answer: _Answer, attempt: int) -> _Step:
        """Account for a server answer to a batch; say whether to retry, split or move on."""
        c = self.counters
        n = len(items)
        if answer.kind == "delivered":
            if answer.invalid:
                # Logged before the release: a flush() that returns has seen it logged.
                self.throttle.warn("invalid", "shadoweval decision log: %s", answer.error)
            with self.cond:
                c.sent += n
                c.stored += answer.stored
                c.duplicates += answer.duplicates
                c.invalid += answer.invalid
                if answer.invalid:
                    c.last_error = answer.error
                self._release(items)
            return _Step("done")
        if answer.kind == "split" and n > 1:
            return _Step("split")
        if answer.kind in ("rejected", "split"):
            self.throttle.warn(
                "rejected",
                "shadoweval decision log: %d decisions refused, not retried: %s",
                n,
                answer.error,
            )
            with self.cond:
                c.dropped_rejected += n
                c.last_error = answer.error
                self._release(items)
            return _Step("done")
        if attempt > self.config.max_retries:
            self.give_up(items, "after_retries", answer.error)
            return _Step("done")
        delay = self.retry_delay(attempt, answer.retry_after)
        with self.cond:
            c.retries += 1
            c.last_error = answer.error
        self.throttle.warn(
            "retry",
            "shadoweval decision log: retrying %d decisions in %.1fs (retry %d of %d): %s",
            n,
            delay,
            attempt,
            self.config.max_retries,
            answer.error,
        )
        return _Step("retry", delay)

    def retry_delay(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        backoff = equal_jitter(attempt, base_seconds=cfg.backoff_base, max_seconds=cfg.backoff_max)
        if retry_after is None:
            return backoff
        # The server's wish is a floor; up to 10 % on top spreads replicas told the same time.
        asked = retry_after * random.uniform(1.0, 1.1)  # noqa: S311 - jitter, not crypto
        return min(cfg.max_retry_after, max(asked, backoff))

    def give_up(
        self,
        items: Sequence[_Item],
        reason: Literal["after_retries", "on_close"],
        error: str | None,
    ) -> None:
        # Logged before the release: a flush() or close() that returns has seen it logged.
        self.throttle.warn(
            f"gave_up_{reason}",
            "shadoweval decision log: dropped %d decisions %s: %s",
            len(items),
            "after retries" if reason == "after_retries" else "unsent at close",
            error,
        )
        with self.cond:
            if reason == "after_retries":
                self.counters.dropped_after_retries += len(items)
            else:
                self.counters.dropped_on_close += len(items)
            if error:
                self.counters.last_error = error
            self._release(items)

    def give_up_inflight(self, error: str) -> None:
        """After a bug of ours mid-batch: drop what is still in flight rather than stall."""
        with self.cond:
            self.counters.dropped_after_retries += self.inflight
            self.counters.last_error = error
            self.inflight = 0
            self.inflight_first = None
            self.cond.notify_all()
        self.throttle.warn("internal", "shadoweval decision log: internal error: %s", error)

    def requeue_inflight(self, batch: Sequence[_Item]) -> None:
        """Put the unsettled part of a batch back at the head, for the next worker to send.

        For an asyncio task cancelled mid-request (its loop ended without aclose()): a task
        started later, maybe on another loop, must not find the batch stuck in flight.
        """
        with self.cond:
            first = self.inflight_first
            if not self.inflight or first is None:
                return
            for item in reversed([item for item in batch if item.seq >= first]):
                self.queue.appendleft(item)
                self.queue_bytes += len(item.line) + 1
            self.inflight = 0
            self.inflight_first = None
            self.cond.notify_all()

    def abandon(self) -> None:
        """At stop: whatever is still queued or in flight will not be sent."""
        with self.cond:
            lost = len(self.queue) + self.inflight
            self.counters.dropped_on_close += lost
            self.queue.clear()
            self.queue_bytes = 0
            self.inflight = 0
            self.inflight_first = None
            self.cond.notify_all()
        if lost:
            self.throttle.warn(
                "abandoned", "shadoweval decision log: %d decisions unsent at close", lost
            )

    def _release(self, items: Sequence[_Item]) -> None:
        # A 413 split settles a batch in consecutive parts; what is left starts after them.
        self.inflight = max(0, self.inflight - len(items))
        self.inflight_first = items[-1].seq + 1 if self.inflight and items else None
        self.cond.notify_all()

    # -- flush and stats --

    def request_flush(self) -> int:
        with self.cond:
            target = self.next_seq - 1
            self.flush_through = max(self.flush_through, target)
            self.cond.notify_all()
            return target

    def flushed(self, target: int) -> bool:
        with self.cond:
            inflight_done = self.inflight_first is None or self.inflight_first > target
            return inflight_done and (not self.queue or self.queue[0].seq > target)

    def pending(self) -> int:
        with self.cond:
            return len(self.queue) + self.inflight

    def snapshot(self) -> LoggerStats:
        with self.cond:
            counters = dataclasses.asdict(self.counters)
            return LoggerStats(**counters, pending=len(self.queue) + self.inflight)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + max(0.0, timeout)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()
