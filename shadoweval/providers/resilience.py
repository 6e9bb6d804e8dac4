"""Retries, rate limits, a concurrency cap and a circuit breaker around a Provider.

`ResilientProvider(inner, ...)` is itself a `Provider`. Per call:

1. The circuit breaker admits the call or raises
   `ProviderError(reason="circuit_open")` (no request is sent). States: closed
   -> open after `circuit_failure_threshold` consecutive retryable failures ->
   half-open once `circuit_reset_s` have passed, which lets ONE probe call
   through (others still get circuit_open) -> closed when the probe gets any
   answer from the provider (a success or a non-retryable error), open again
   when it fails retryably.
2. A token bucket per minute on requests and on estimated tokens (prompt
   characters / 4 plus max_tokens) waits until the call fits. A 429 with a
   retry-after also holds every later call until then.
3. An `asyncio.Semaphore` caps calls in flight.
4. Retryable ProviderErrors (`rate_limited`, `server_error`, `timeout`,
   `connection`, `overloaded`) are retried up to `max_attempts` attempts in all,
   after a full-jitter exponential backoff: uniform(0, min(backoff_max_s,
   backoff_base_s * 2**(attempt-1))), but never less than the error's
   `retry_after_s`. When the provider asks to wait longer than `backoff_max_s`
   the call fails at once with that error rather than hold a worker.
   Non-retryable errors pass through at once and do not count against the
   breaker. The error raised is always the last real one (not circuit_open)
   when the breaker opens in the middle of a call's retries.

One instance per provider (the registry makes them), so the breaker and the
limits are per provider. Create and use it inside one event loop.
`stats()` returns counters for /metrics.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from shadoweval.providers.base import (
    Completion,
    OutputSchema,
    Provider,
    ProviderError,
    content_text,
)
from shadoweval.retry import full_jitter

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def estimate_tokens(
    messages: list[dict[str, Any]],
    system: str | list[dict[str, Any]] | None,
    params: dict[str, Any] | None,
    default_max_tokens: int = 1024,
) -> int:
    """Rough tokens a call uses: prompt characters / 4 plus its max_tokens."""
    chars = len(content_text(system)) if system else 0
    chars += sum(len(content_text(m.get("content"))) for m in messages)
    params = params or {}
    max_tokens = (
        params.get("max_tokens")
        or params.get("max_completion_tokens")
        or params.get("max_output_tokens")
        or default_max_tokens
    )
    return chars // 4 + int(max_tokens)


class TokenBucket:
    """Holds up to `per_minute` units, refilled continuously at per_minute / 60 a second."""

    def __init__(self, per_minute: float, clock: Clock) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` (capped at the capacity) is available; 0 when it is now."""
        self._refill()
        amount = min(amount, self.capacity)
        return 0.0 if self._level >= amount else (amount - self._level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self._level -= min(amount, self.capacity)


class RateLimiter:
    """Requests and tokens per minute, served first come first served."""

    def __init__(
        self, requests_per_minute: float, tokens_per_minute: float, clock: Clock, sleep: Sleep
    ) -> None:
        self.requests = TokenBucket(requests_per_minute, clock)
        self.tokens = TokenBucket(tokens_per_minute, clock)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self.waited_s = 0.0

    def pause_until(self, when: float) -> None:
        """Hold every acquisition until the clock reaches `when` (after a 429)."""
        self._paused_until = max(self._paused_until, when)

    async def acquire(self, tokens: int) -> None:
        async with self._lock:
            while True:
                wait = max(
                    self._paused_until - self._clock(),
                    self.requests.wait_s(1),
                    self.tokens.wait_s(tokens),
                )
                if wait <= 0:
                    self.requests.take(1)
                    self.tokens.take(tokens)
                    return
                self.waited_s += wait
                await self._sleep(wait)


class CircuitBreaker:
    """closed -> open -> half-open (one probe) -> closed; see the module docstring."""

    def __init__(self, failure_threshold: int, reset_s: float, clock: Clock) -> None:
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.times_opened = 0
        self._probe_in_flight = False

    def current_state(self) -> str:
        if self.state == OPEN and self._clock() - self.opened_at >= self.reset_s:
            return HALF_OPEN
        return self.state

    def admit(self) -> bool:
        """True when the call is the half-open probe; raises LookupError when refused."""
        if self.state == OPEN:
            if self._clock() - self.opened_at < self.reset_s:
                raise LookupError("open")
            self.state = HALF_OPEN
        if self.state == HALF_OPEN:
            if self._probe_in_flight:
                raise LookupError("half-open, probe in flight")
            self._probe_in_flight = True
            return True
        return False

    def retry_in_s(self) -> float:
        return max(0.0, self.opened_at + self.reset_s - self._clock())

    def _open(self) -> None:
        self.state = OPEN
        self.opened_at = self._clock()
        self.times_opened += 1

    def on_success(self, probe: bool) -> None:
        """The provider answered (a success or a non-retryable error)."""
        if probe:
            self._probe_in_flight = False
        self.state = CLOSED
        self.consecutive_failures = 0

    def on_failure(self, probe: bool) -> None:
        """A retryable failure."""
        self.consecutive_failures += 1
        if probe:
            self._probe_in_flight = False
            self._open()
        elif self.state == CLOSED and self.consecutive_failures >= self.failure_threshold:
            self._open()

    def on_abandoned(self, probe: bool) -> None:
        """The call ended without an answer either way (cancelled, a bug)."""
        if probe:
            self._probe_in_flight = False


class ResilientProvider:
    """A `Provider` that adds limits, retries and a circuit breaker to `inner`."""

    def __init__(
        self,
        inner: Provider,
        *,
        max_in_flight: int = 16,
        requests_per_minute: float = 1000.0,
        tokens_per_minute: float = 2_000_000.0,
        max_attempts: int = 4,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        circuit_failure_threshold: int = 5,
        circuit_reset_s: float = 30.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_in_flight < 1 or max_attempts < 1:
            raise ValueError("max_in_flight and max_attempts must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self.max_in_flight = max_in_flight
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute, clock, sleep)
        self.breaker = CircuitBreaker(circuit_failure_threshold, circuit_reset_s, clock)
        self._calls = 0
        self._attempts = 0
        self._retries = 0
        self._successes = 0
        self._failures: Counter[str] = Counter()
        self._attempt_failures: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight_seen = 0

    async def aclose(self) -> None:
        await self.inner.aclose()

    def backoff_s(self, attempt: int, retry_after_s: float | None) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based); None: give up."""
        if retry_after_s is not None and retry_after_s > self.backoff_max_s:
            return None
        delay = full_jitter(
            attempt, base_seconds=self.backoff_base_s, max_seconds=self.backoff_max_s, rng=self._rng
        )
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay

    def _fail(self, error: ProviderError) -> ProviderError:
        self._failures[error.reason] += 1
        return error

    def _circuit_open_error(self) -> ProviderError:
        return ProviderError(
            f"circuit breaker for provider {self.name!r} is open "
            f"({self.breaker.consecutive_failures} consecutive failures); "
            f"next probe in {self.breaker.retry_in_s():.1f}s",
            reason="circuit_open",
            provider=self.name,
            retry_after_s=self.breaker.retry_in_s(),
        )

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        system: str | list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
        output_schema: OutputSchema | None = None,
        cache_system: bool = False,
    ) -> Completion:
        self._calls += 1
        tokens = estimate_tokens(messages, system, params)
        last_error: ProviderError | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                probe = self.breaker.admit()
            except LookupError:
                raise self._fail(last_error or self._circuit_open_error()) from None
            try:
                await self.limiter.acquire(tokens)
                self._attempts += 1
                async with self._semaphore:
                    self._in_flight += 1
                    self._max_in_flight_seen = max(self._max_in_flight_seen, self._in_flight)
                    try:
                        completion = await self.inner.complete(
                            model=model,
                            messages=messages,
                            system=system,
                            params=params,
                            output_schema=output_schema,
                            cache_system=cache_system,
                        )
                    finally:
                        self._in_flight -= 1
            except ProviderError as error:
                self._attempt_failures[error.reason] += 1
                if not error.retryable:
                    self.breaker.on_success(probe)  # the provider answered
                    raise self._fail(error) from None
                self.breaker.on_failure(probe)
                last_error = error
                if error.reason == "rate_limited" and error.retry_after_s:
                    self.limiter.pause_until(self._clock() + error.retry_after_s)
                if attempt == self.max_attempts:
                    raise self._fail(error) from None
                delay = self.backoff_s(attempt, error.retry_after_s)
                if delay is None:
                    raise self._fail(error) from None
                self._retries += 1
                await self._sleep(delay)
                continue
            except BaseException:
                self.breaker.on_abandoned(probe)
                raise
            self.breaker.on_success(probe)
            self._successes += 1
            return completion
        raise AssertionError("unreachable")  # pragma: no cover

    def stats(self) -> dict[str, Any]:
        """Counters since start: calls, attempts, retries, successes, failures by reason
        (calls that failed, by their final reason), attempt failures by reason, the
        circuit state, how often it opened, calls in flight, seconds spent waiting
        for the rate limiter."""
        return {
            "provider": self.name,
            "calls": self._calls,
            "attempts": self._attempts,
            "retries": self._retries,
            "successes": self._successes,
            "failures": dict(self._failures),
            "attempt_failures": dict(self._attempt_failures),
            "circuit_state": self.breaker.current_state(),
            "circuit_opened": self.breaker.times_opened,
            "in_flight": self._in_flight,
            "max_in_flight": self.max_in_flight,
            "max_in_flight_seen": self._max_in_flight_seen,
            "rate_limit_wait_s": round(self.limiter.waited_s, 3),
        }
