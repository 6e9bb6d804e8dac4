"""Router-side client for the shadoweval decision log (`POST /v1/decisions`).

A router calls `DecisionLogger.log(decision)` in its request path. `log()` only
serialises the decision and appends it to a bounded in-memory queue; a background
thread batches the queue into NDJSON posts, retries what can be retried and counts
everything it had to give up on. Nothing in here ever raises into the request path:
logging is fail-open, because a monitoring outage must never become a routing outage.

    logger = DecisionLogger("https://shadoweval.internal", key=os.environ["SHADOWEVAL_KEY"])
    logger.log({"request_id": rid, "router": "support-router", "tier": "cheap",
                "chosen_model": "claude-haiku-4-5", "router_score": 0.31, "threshold": 0.5})
    ...
    logger.close()  # also runs at interpreter exit

`AsyncDecisionLogger` is the same on an asyncio task (`log()` stays a plain, non-blocking
method; `await flush()`, `await aclose()`). `RouteLLMLogger` and `route_and_log()` wrap a
RouteLLM `Controller`, which is typed structurally: RouteLLM is not a dependency.

Only the standard library, httpx and pydantic are imported, so a router can use this
module without the server's dependencies being exercised. See docs/client.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import email.utils
import gzip
import json
import logging
import math
import os
import random
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as clock_time
from decimal import Decimal
from enum import Enum
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import httpx
from pydantic import BaseModel

from shadoweval import __version__

__all__ = [
    "DECISIONS_PATH",
    "AsyncDecisionLogger",
    "DecisionLike",
    "DecisionLogger",
    "DropPolicy",
    "LoggerStats",
    "RouteLLMController",
    "RouteLLMLogger",
    "RoutedDecision",
    "StrongWinRateRouter",
    "SupportsLog",
    "parse_retry_after",
    "parse_router_model",
    "route_and_log",
]

DECISIONS_PATH = "/v1/decisions"

DecisionLike = Mapping[str, Any] | BaseModel
"""What `log()` accepts: a mapping in the decision-log (v1) shape, or a pydantic model of it."""

DropPolicy = Literal["oldest", "newest"]
"""Which decision a full queue gives up: the oldest queued one (default) or the new one."""

_log = logging.getLogger("shadoweval.client")

_KIB = 1024
_MIB = 1024 * 1024
_NDJSON = "application/x-ndjson"
# 501 and 505 say the server will never accept this request, so resending cannot help.
_RETRYABLE = frozenset({408, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})
# Compressing a big batch takes milliseconds; the async logger does that off the event loop.
_ASYNC_INLINE_GZIP_MAX = 64 * _KIB


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counters of one logger since it was created (per process: a fork starts at zero).

    Every decision `log()` accepted ends up in exactly one of `sent`, `dropped_queue_full`,
    `dropped_rejected`, `dropped_after_retries`, `dropped_on_close`, or is still `pending`.
    Of the sent ones the server reports `stored + duplicates + invalid`.
    """

    queued: int = 0
    """Decisions `log()` accepted (serialisable, logger open); with drop="newest" this
    includes the ones then refused for a full queue."""
    sent: int = 0
    """Decisions in requests the server answered (202 or 422)."""
    stored: int = 0
    duplicates: int = 0
    """Already stored under the same (router, request_id): resends after a timeout land here."""
    invalid: int = 0
    """Refused by the server's validation (distinct item indexes of a 422's `detail`)."""
    dropped_invalid_input: int = 0
    """Refused by `log()` itself: not a mapping, not JSON (NaN, objects), or over a batch."""
    dropped_closed: int = 0
    """Passed to `log()` after `close()` began."""
    dropped_queue_full: int = 0
    dropped_rejected: int = 0
    """Refused as a whole: 401/403 (bad key), or another 4xx that resending cannot fix."""
    dropped_after_retries: int = 0
    """Given up on after `max_retries` retries (network down, 5xx, 429)."""
    dropped_on_close: int = 0
    """Still unsent when `close(timeout)` ran out of time."""
    retries: int = 0
    """Requests repeated after a retryable answer or a connection error."""
    requests: int = 0
    """HTTP requests attempted."""
    pending: int = 0
    """Queued or in flight right now."""
    last_error: str | None = None

    @property
    def dropped(self) -> int:
        """Every decision lost on the client side, for whatever reason."""
        return (
            self.dropped_invalid_input
            + self.dropped_closed
            + self.dropped_queue_full
            + self.dropped_rejected
            + self.dropped_after_retries
            + self.dropped_on_close
        )

    def as_dict(self) -> dict[str, int | str | None]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _Counters:
    queued: int = 0
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    dropped_invalid_input: int = 0
    dropped_closed: int = 0
    dropped_queue_full: int = 0
    dropped_rejected: int = 0
    dropped_after_retries: int = 0
    dropped_on_close: int = 0
    retries: int = 0
    requests: int = 0
    last_error: str | None = None


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Config:
    endpoint: str
    headers: dict[str, str]
    max_batch_items: int
    max_batch_bytes: int
    max_batch_age: float
    max_queue_items: int
    max_queue_bytes: int
    drop: DropPolicy
    gzip_min_bytes: int
    max_retries: int
    backoff_base: float
    backoff_max: float
    max_retry_after: float
    timeout: float
    log_interval: float

    def __post_init__(self) -> None:
        # Misconfiguration is reported at construction, at startup, never from log().
        checks = {
            "max_batch_items must be ≥ 1": self.max_batch_items >= 1,
            "max_batch_bytes must be ≥ 1024": self.max_batch_bytes >= _KIB,
            "max_batch_age must be > 0": self.max_batch_age > 0,
            "max_queue_items must be ≥ 1": self.max_queue_items >= 1,
            "max_queue_bytes must be ≥ max_batch_bytes": self.max_queue_bytes
            >= self.max_batch_bytes,
            "drop must be 'oldest' or 'newest'": self.drop in ("oldest", "newest"),
            "gzip_min_bytes must be ≥ 0": self.gzip_min_bytes >= 0,
            "max_retries must be ≥ 0": self.max_retries >= 0,
            "backoff_base must be > 0": self.backoff_base > 0,
            "backoff_max must be ≥ backoff_base": self.backoff_max >= self.backoff_base,
            "max_retry_after must be ≥ 0": self.max_retry_after >= 0,
            "timeout must be > 0": self.timeout > 0,
            "log_interval must be ≥ 0": self.log_interval >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    @property
    def http_timeout(self) -> httpx.Timeout:
        # A refused or black-holed connect should fail fast and go to backoff.
        return httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0))


def _endpoint(url: str) -> str:
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    return base if base.endswith(DECISIONS_PATH) else base + DECISIONS_PATH


def _headers(key: str) -> dict[str, str]:
    key = key.strip()  # keys read from files often end in a newline
    if not key or any(c.isspace() for c in key):
        raise ValueError("key must be a non-empty API key with the ingest scope")
    return {"Authorization": f"Bearer {key}", "User-Agent": f"shadoweval-client/{__version__}"}


# --- encoding ------------------------------------------------------------------------------


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    # Router scores often come out of numpy or torch as 0-d scalars.
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__.split(".")[0] in ("numpy", "torch"):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encode(decision: object) -> bytes:
    """One NDJSON line; raises for anything that is not a strict-JSON decision object."""
    if isinstance(decision, BaseModel):
        data: dict[str, Any] = decision.model_dump(mode="json", by_alias=True, exclude_unset=True)
    elif isinstance(decision, Mapping):
        data = dict(decision)
    else:
        raise TypeError(
            f"a decision must be a mapping or a pydantic model, not {type(decision).__name__}"
        )
    # The decision time is when the router decided, not when the batch happens to leave.
    if data.get("ts") is None:
        data["ts"] = _now_rfc3339()
    # allow_nan=False: a NaN would be refused by the server as a whole line anyway; refusing
    # it here names the caller. ensure_ascii=False keeps non-English prompts small.
    text = json.dumps(
        data, default=_json_default, allow_nan=False, ensure_ascii=False, separators=(",", ":")
    )
    return text.encode("utf-8")


def _encode_batch(lines: Sequence[bytes], gzip_min_bytes: int) -> tuple[bytes, dict[str, str]]:
    body = b"\n".join(lines) + b"\n"
    headers = {"Content-Type": _NDJSON}
    if len(body) >= gzip_min_bytes:
        # mtime=0 makes a resend byte-identical, which helps anyone diffing captures.
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return body, headers


# --- server answers ------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date.

    Returns None when absent or unreadable, 0 for dates in the past. Fractional seconds are
    tolerated although RFC 9110 only defines integers.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class _Answer:
    kind: Literal["delivered", "retry", "split", "rejected"]
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    retry_after: float | None = None
    error: str | None = None


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _count(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _snippet(content: bytes) -> str:
    text = content[:300].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""


def _describe_invalid(body: dict[str, Any], indexes: list[int]) -> str:
    detail = body.get("detail")
    first = detail[0] if isinstance(detail, list) and detail else None
    if not isinstance(first, dict):
        return ""
    results = body.get("results")
    index = first.get("index")
    request_id = None
    if isinstance(results, list) and isinstance(index, int) and 0 <= index < len(results):
        entry = results[index]
        request_id = entry.get("request_id") if isinstance(entry, dict) else None
    loc = ".".join(str(part) for part in first.get("loc") or []) or "(item)"
    return f"; first: item {index} request_id={request_id} {loc}: {first.get('msg')}"


def _interpret(status: int, headers: httpx.Headers, content: bytes, items: int) -> _Answer:
    if 200 <= status < 300 or status == 422:
        body = _json_object(content)
        stored = _count(body.get("stored"), items if status != 422 else 0)
        duplicates = _count(body.get("duplicates"))
        if status != 422:
            return _Answer("delivered", stored, duplicates, _count(body.get("invalid")))
        # The contract: a 422 still stored the valid items, so the batch is done; the invalid
        # ones would fail again, and resending the rest would only count duplicates.
        detail = body.get("detail")
        indexes = sorted(
            {
                d["index"]
                for d in (detail if isinstance(detail, list) else [])
                if isinstance(d, dict) and isinstance(d.get("index"), int)
            }
        )
        invalid = len(indexes) or _count(body.get("invalid"), max(0, items - stored - duplicates))
        error = (
            f"HTTP 422: {invalid} of {items} decisions invalid{_describe_invalid(body, indexes)}"
        )
        return _Answer("delivered", stored, duplicates, invalid, error=error)
    error = f"HTTP {status}{_snippet(content)}"
    if status in _RETRYABLE:
        return _Answer(
            "retry", retry_after=parse_retry_after(headers.get("retry-after")), error=error
        )
    if status == 413:
        return _Answer("split", error=error)
    return _Answer("rejected", error=error)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
        ceiling = min(cfg.backoff_max, cfg.backoff_base * 2.0 ** (attempt - 1))
        # Equal jitter: never less than half the step, so replicas spread without hammering.
        backoff = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto
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


# --- the thread logger ---------------------------------------------------------------------


class DecisionLogger:
    """Posts decisions to shadoweval from a background thread; `log()` never blocks or raises.

    Args:
        url: the shadoweval base URL (`https://host`) or the full `…/v1/decisions` URL.
        key: an API key with the `ingest` scope.
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
        url: str,
        key: str,
        *,
        max_batch_items: int = 500,
        max_batch_bytes: int = 2 * _MIB,
        max_batch_age: float = 1.0,
        max_queue_items: int = 10_000,
        max_queue_bytes: int = 64 * _MIB,
        drop: DropPolicy = "oldest",
        gzip_min_bytes: int = 16 * _KIB,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        timeout: float = 10.0,
        log_interval: float = 60.0,
        atexit_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = _Config(
            endpoint=_endpoint(url),
            headers=_headers(key),
            max_batch_items=max_batch_items,
            max_batch_bytes=max_batch_bytes,
            max_batch_age=max_batch_age,
            max_queue_items=max_queue_items,
            max_queue_bytes=max_queue_bytes,
            drop=drop,
            gzip_min_bytes=gzip_min_bytes,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            timeout=timeout,
            log_interval=log_interval,
        )
        self._transport = transport
        self._atexit_timeout = atexit_timeout
        self._buf = _Buffer(self._config)
        # Built here, on the caller's thread at startup: httpx imports httpcore, ssl and
        # certifi lazily when a client is built, and a fork while the worker thread holds an
        # import lock would leave the child hung on it for good.
        self._client = self._new_client()
        self._thread: threading.Thread | None = None
        _thread_loggers.add(self)

    def __repr__(self) -> str:
        return f"DecisionLogger({self._config.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return self._config.endpoint

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
        with buf.cond:
            first = not buf.closing
            buf.closing = True
        if not first:
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

    def stats(self) -> LoggerStats:
        return self._buf.snapshot()

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
                answer = _interpret(
                    response.status_code, response.headers, response.content, len(items)
                )
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


# --- the asyncio logger --------------------------------------------------------------------


class AsyncDecisionLogger:
    """`DecisionLogger` on an asyncio task with httpx.AsyncClient, for async routers.

    `log()` is a plain method (no await), safe to call from the event loop and from other
    threads. The task starts on the first `log()` made inside a running loop (or the first
    `await flush()`); call `await aclose()` before the loop ends, e.g. in the app's lifespan:
    there is no interpreter-exit hook for an event loop that is already gone.

    Takes the same arguments as `DecisionLogger`, with an `httpx.AsyncBaseTransport`.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        max_batch_items: int = 500,
        max_batch_bytes: int = 2 * _MIB,
        max_batch_age: float = 1.0,
        max_queue_items: int = 10_000,
        max_queue_bytes: int = 64 * _MIB,
        drop: DropPolicy = "oldest",
        gzip_min_bytes: int = 16 * _KIB,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        timeout: float = 10.0,
        log_interval: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = _Config(
            endpoint=_endpoint(url),
            headers=_headers(key),
            max_batch_items=max_batch_items,
            max_batch_bytes=max_batch_bytes,
            max_batch_age=max_batch_age,
            max_queue_items=max_queue_items,
            max_queue_bytes=max_queue_bytes,
            drop=drop,
            gzip_min_bytes=gzip_min_bytes,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            timeout=timeout,
            log_interval=log_interval,
        )
        self._transport = transport
        self._buf = _Buffer(self._config)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        _async_loggers.add(self)

    def __repr__(self) -> str:
        return f"AsyncDecisionLogger({self._config.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return self._config.endpoint

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
        with buf.cond:
            first = not buf.closing
            buf.closing = True
        if not first:
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

    def stats(self) -> LoggerStats:
        return self._buf.snapshot()

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
                answer = _interpret(
                    response.status_code, response.headers, response.content, len(items)
                )
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


# --- RouteLLM ------------------------------------------------------------------------------

SCORE_SEMANTICS = "p_strong_needed"


class StrongWinRateRouter(Protocol):
    """A RouteLLM router (`routellm.routers.routers.Router`), as far as this module uses it."""

    def calculate_strong_win_rate(self, prompt: str) -> float: ...


class RouteLLMController(Protocol):
    """A RouteLLM `Controller`: loaded routers by name (mf, bert, causal_llm, sw_ranking…).

    The controller's `model_pair` (strong, weak) is used when no models are passed.
    """

    @property
    def routers(self) -> Mapping[str, StrongWinRateRouter]: ...


class SupportsLog(Protocol):
    """`DecisionLogger` or `AsyncDecisionLogger`, or anything with the same `log()`."""

    def log(self, decision: DecisionLike) -> bool: ...


def parse_router_model(model: str) -> tuple[str, float]:
    """`"router-mf-0.11593"` → `("mf", 0.11593)`, as RouteLLM's Controller reads model names."""
    parts = model.split("-", 2)
    if len(parts) != 3 or parts[0] != "router":
        raise ValueError(f"{model!r} is not of the form router-<router>-<threshold>")
    return parts[1], _check_threshold(float(parts[2]))


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
    return value


def _last_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """What RouteLLM scores: the content of the last message (its routers saw first turns)."""
    if not messages:
        raise ValueError("prompt_messages is empty")
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: score their text, as RouteLLM cannot
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, Mapping) and block.get("type") == "text"
        )
    return "" if content is None else str(content)


@dataclass(eq=False)
class RoutedDecision:
    """One RouteLLM routing decision and the decision-log item describing it.

    `ts` was taken when routing happened. Call `log()` once the answer is in, so the item
    carries the response the judge compares against; logging is once per decision (the
    server keeps the first write of a request_id), so later calls do nothing.
    """

    model: str
    tier: str
    strong: bool
    score: float | None
    threshold: float
    request_id: str
    decision: dict[str, Any]
    logger: SupportsLog = field(repr=False)
    logged: bool = False

    def log(
        self,
        *,
        response_text: str | None = None,
        finish_reason: str | None = None,
        **fields: Any,
    ) -> bool:
        """Log the decision with what happened after routing (usage, cost_usd, latency_ms,
        served_model…). Never raises; False when already logged or not accepted."""
        if self.logged:
            return False
        self.logged = True
        try:
            item = dict(self.decision)
            if response_text is not None or finish_reason is not None:
                item["response"] = {"text": response_text, "finish_reason": finish_reason}
            item.update(fields)
            return self.logger.log(item)
        except Exception as exc:
            with contextlib.suppress(Exception):
                _log.warning("shadoweval decision log: RouteLLM decision not logged: %s", exc)
            return False


def _routellm_decide(
    controller: RouteLLMController,
    router_name: str,
    threshold: float,
    prompt_messages: Sequence[Mapping[str, Any]],
    strong_model: str | None,
    weak_model: str | None,
    logger: SupportsLog,
    *,
    name: str | None,
    router_version: str | None,
    request_id: str | None,
    segment: Mapping[str, str] | None,
    features: Mapping[str, float | int | str | bool] | None,
    include_request: bool,
    fallback: Literal["strong", "weak"] | None,
    strong_tier: str,
    weak_tier: str,
    fields: Mapping[str, Any],
) -> RoutedDecision:
    threshold = _check_threshold(threshold)
    strong_model, weak_model = _model_pair(controller, strong_model, weak_model)
    router = controller.routers.get(router_name)
    if router is None:
        raise ValueError(
            f"router {router_name!r} is not loaded; loaded: {sorted(controller.routers)}"
        )
    prompt = _last_prompt(prompt_messages)
    ts = _now_rfc3339()
    extra: dict[str, Any] = {"routellm_router": router_name}
    started = time.perf_counter()
    try:
        # Scored once: RouteLLM's route() would score again and return neither number.
        raw: float | None = float(router.calculate_strong_win_rate(prompt))
    except Exception as exc:
        if fallback is None:
            raise
        raw = None
        extra["router_error"] = _describe(exc)[:200]
    router_latency_ms = (time.perf_counter() - started) * 1000
    # RouteLLM's rule, score ≥ threshold; a NaN routes weak, as it does there.
    strong = fallback == "strong" if raw is None else raw >= threshold
    score: float | None = None
    if raw is not None and math.isfinite(raw):
        # Float error can put a 1 − p a hair below 0; the log field is bounded to [0, 1].
        score = min(1.0, max(0.0, raw))
        if abs(score - raw) > 1e-6:
            extra["router_score_raw"] = raw
    model = strong_model if strong else weak_model
    tier = strong_tier if strong else weak_tier
    rid = request_id or uuid.uuid4().hex
    decision: dict[str, Any] = {
        "request_id": rid,
        "router": name or f"routellm-{router_name}",
        "ts": ts,
        "tier": tier,
        "chosen_model": model,
        "router_score": score,
        "score_semantics": SCORE_SEMANTICS,
        "threshold": threshold,
        "candidates": [
            {"model": strong_model, "tier": strong_tier},
            {"model": weak_model, "tier": weak_tier},
        ],
        "router_latency_ms": router_latency_ms,
        "fallback": raw is None,
        **extra,
    }
    if router_version is not None:
        decision["router_version"] = router_version
    if segment:
        decision["segment"] = dict(segment)
    if features:
        decision["features"] = dict(features)
    if include_request:
        decision["request"] = {"messages": [dict(message) for message in prompt_messages]}
    decision.update(fields)
    return RoutedDecision(
        model=model,
        tier=tier,
        strong=strong,
        score=score,
        threshold=threshold,
        request_id=rid,
        decision=decision,
        logger=logger,
    )


def _model_pair(
    controller: RouteLLMController, strong_model: str | None, weak_model: str | None
) -> tuple[str, str]:
    pair = getattr(controller, "model_pair", None)
    strong = strong_model or getattr(pair, "strong", None)
    weak = weak_model or getattr(pair, "weak", None)
    if not isinstance(strong, str) or not isinstance(weak, str):
        raise ValueError("pass strong_model and weak_model (the controller has no model_pair)")
    return strong, weak


def route_and_log(
    controller: RouteLLMController,
    router_name: str,
    threshold: float,
    prompt_messages: Sequence[Mapping[str, Any]],
    strong_model: str | None,
    weak_model: str | None,
    logger: SupportsLog,
    *,
    name: str | None = None,
    router_version: str | None = None,
    request_id: str | None = None,
    segment: Mapping[str, str] | None = None,
    features: Mapping[str, float | int | str | bool] | None = None,
    include_request: bool = True,
    fallback: Literal["strong", "weak"] | None = None,
    strong_tier: str = "strong",
    weak_tier: str = "cheap",
    **fields: Any,
) -> RoutedDecision:
    """Route with a RouteLLM controller's router and log the decision now.

    Scores the last message once with `calculate_strong_win_rate`, routes strong when the
    score ≥ `threshold` (RouteLLM's rule) and logs router_score, threshold,
    score_semantics="p_strong_needed", the router name and the chosen model. `name` is the
    decision log's `router` (default `routellm-<router_name>`); `strong_model` /
    `weak_model` default to the controller's `model_pair`.

    Logging now means the item has no response, so shadoweval can watch the scores but
    cannot judge this request; to log after the answer, use `RouteLLMLogger.route()`.

    Raises ValueError for a bad threshold, an unloaded router or empty messages, and
    re-raises a scoring error unless `fallback` names the tier to route to instead (then
    logged with fallback=true and no score). Logging itself never raises.
    """
    routed = _routellm_decide(
        controller,
        router_name,
        threshold,
        prompt_messages,
        strong_model,
        weak_model,
        logger,
        name=name,
        router_version=router_version,
        request_id=request_id,
        segment=segment,
        features=features,
        include_request=include_request,
        fallback=fallback,
        strong_tier=strong_tier,
        weak_tier=weak_tier,
        fields=fields,
    )
    routed.log()
    return routed


class RouteLLMLogger:
    """A RouteLLM controller, one of its routers and a threshold, bound to a logger.

        controller = Controller(routers=["mf"], strong_model="gpt-4-1106-preview",
                                weak_model="mixtral-8x7b-instruct-v0.1")
        routellm = RouteLLMLogger(controller, logger, router_name="mf", threshold=0.11593,
                                  name="support-router")
        routed = routellm.route(messages)                 # score computed once, ts now
        answer = call_model(routed.model, messages)
        routed.log(response_text=answer.text, usage={...}, latency_ms=...)

    Misconfiguration (unknown router, threshold outside [0, 1], no model pair) raises
    ValueError here, at startup.
    """

    def __init__(
        self,
        controller: RouteLLMController,
        logger: SupportsLog,
        *,
        router_name: str,
        threshold: float,
        strong_model: str | None = None,
        weak_model: str | None = None,
        name: str | None = None,
        router_version: str | None = None,
        include_request: bool = True,
        fallback: Literal["strong", "weak"] | None = None,
        strong_tier: str = "strong",
        weak_tier: str = "cheap",
    ) -> None:
        if router_name not in controller.routers:
            raise ValueError(
                f"router {router_name!r} is not loaded; loaded: {sorted(controller.routers)}"
            )
        self.controller = controller
        self.logger = logger
        self.router_name = router_name
        self.threshold = _check_threshold(threshold)
        self.strong_model, self.weak_model = _model_pair(controller, strong_model, weak_model)
        self.name = name or f"routellm-{router_name}"
        self.router_version = router_version
        self.include_request = include_request
        self.fallback = fallback
        self.strong_tier = strong_tier
        self.weak_tier = weak_tier

    def route(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        request_id: str | None = None,
        segment: Mapping[str, str] | None = None,
        features: Mapping[str, float | int | str | bool] | None = None,
        **fields: Any,
    ) -> RoutedDecision:
        """Decide now; log later with `RoutedDecision.log(response_text=…)`."""
        return _routellm_decide(
            self.controller,
            self.router_name,
            self.threshold,
            messages,
            self.strong_model,
            self.weak_model,
            self.logger,
            name=self.name,
            router_version=self.router_version,
            request_id=request_id,
            segment=segment,
            features=features,
            include_request=self.include_request,
            fallback=self.fallback,
            strong_tier=self.strong_tier,
            weak_tier=self.weak_tier,
            fields=fields,
        )

    def route_and_log(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        request_id: str | None = None,
        segment: Mapping[str, str] | None = None,
        features: Mapping[str, float | int | str | bool] | None = None,
        **fields: Any,
    ) -> RoutedDecision:
        """Decide and log now, without the response (see `route_and_log`)."""
        routed = self.route(
            messages, request_id=request_id, segment=segment, features=features, **fields
        )
        routed.log()
        return routed
