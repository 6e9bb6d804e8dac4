"""ResilientProvider: retries, backoff, circuit breaker, limits.

Retries run the real SDK clients against the local fake; waiting is done on an
injected clock, so nothing sleeps for real unless the test is about concurrency.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from shadoweval.providers.anthropic import AnthropicProvider
from shadoweval.providers.base import Completion, OutputSchema, ProviderError
from shadoweval.providers.openai import OpenAIProvider
from shadoweval.providers.pricing import PricingTable
from shadoweval.providers.resilience import ResilientProvider
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider

T = TypeVar("T")
PRICING = PricingTable()
CLAUDE = "claude-haiku-4-5"
GPT = "gpt-4o"
HELLO = [{"role": "user", "content": "hello"}]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "OPENAI_", "SHADOWEVAL_")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeProviderServer) -> FakeProviderServer:
    fake_server.reset()
    return fake_server


def resilient(
    fake: FakeProviderServer,
    api: str = "anthropic",
    *,
    clock: FakeClock | None = None,
    timeout: float = 5.0,
    **options: Any,
) -> ResilientProvider:
    inner: AnthropicProvider | OpenAIProvider
    if api == "anthropic":
        inner = AnthropicProvider(
            api_key="k",
            base_url=fake.anthropic_url,
            pricing=PRICING,
            timeout=timeout,
            strict_response_validation=True,
        )
    else:
        inner = OpenAIProvider(
            api_key="k",
            base_url=fake.openai_url,
            pricing=PRICING,
            timeout=timeout,
            strict_response_validation=True,
        )
    clock = clock or FakeClock()
    defaults: dict[str, Any] = {
        "max_attempts": 4,
        "backoff_base_s": 0.5,
        "backoff_max_s": 10.0,
        "circuit_failure_threshold": 5,
        "circuit_reset_s": 30.0,
        "rng": random.Random(7),
    }
    defaults.update(options)
    return ResilientProvider(inner, clock=clock, sleep=clock.sleep, **defaults)


async def complete(provider: ResilientProvider, model: str = CLAUDE) -> Completion:
    return await provider.complete(model=model, messages=HELLO)


async def closing(provider: ResilientProvider, coro: Awaitable[T]) -> T:
    try:
        return await coro
    finally:
        await provider.aclose()


@pytest.mark.parametrize(("api", "model"), [("anthropic", CLAUDE), ("openai", GPT)])
def test_429_is_retried_after_retry_after_then_succeeds(
    fake: FakeProviderServer, api: str, model: str
) -> None:
    fake.add_faults({"kind": "rate_limit", "count": 2, "retry_after": 2.5})
    clock = FakeClock()
    provider = resilient(fake, api, clock=clock, backoff_base_s=0.01)
    completion = run(closing(provider, complete(provider, model)))
    assert completion.text.startswith(f"[{model}]")
    assert fake.calls()["count"] == 3
    # Never less than retry-after (the jitter alone would be at most 0.01, 0.02 s).
    assert len(clock.sleeps) == 2
    assert all(delay >= 2.5 for delay in clock.sleeps)
    stats = provider.stats()
    assert (stats["attempts"], stats["retries"], stats["successes"]) == (3, 2, 1)
    assert stats["attempt_failures"] == {"rate_limited": 2}
    assert stats["failures"] == {}


def test_500s_then_success(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "server_error", "count": 3})
    clock = FakeClock()
    provider = resilient(fake, clock=clock, max_attempts=4, backoff_base_s=1.0)
    completion = run(closing(provider, complete(provider)))
    assert completion.output_tokens > 0
    assert fake.calls()["count"] == 4
    # Full jitter: each wait within [0, base * 2**(attempt-1)].
    assert [delay <= 2**i for i, delay in enumerate(clock.sleeps)] == [True, True, True]
    assert provider.stats()["retries"] == 3


def test_500s_beyond_max_attempts_fail_with_the_last_reason(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "server_error", "count": 10})
    provider = resilient(fake, max_attempts=3)
    with pytest.raises(ProviderError) as caught:
        run(closing(provider, complete(provider)))
    assert caught.value.reason == "server_error"
    assert fake.calls()["count"] == 3
    assert provider.stats()["failures"] == {"server_error": 1}


def test_overloaded_is_retried(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "overloaded", "count": 1})
    provider = resilient(fake)
    assert run(closing(provider, complete(provider))).text
    assert provider.stats()["attempt_failures"] == {"overloaded": 1}


def test_timeout_is_retried_then_recorded_as_timeout(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "slow", "count": 2, "sleep_s": 1.0})
    provider = resilient(fake, "openai", timeout=0.25, max_attempts=2)
    with pytest.raises(ProviderError) as caught:
        run(closing(provider, complete(provider, GPT)))
    assert caught.value.reason == "timeout"
    assert fake.calls()["count"] == 2
    assert provider.stats()["attempt_failures"] == {"timeout": 2}
    assert provider.stats()["failures"] == {"timeout": 1}


def test_timeout_then_success(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "slow", "count": 1, "sleep_s": 1.0})
    provider = resilient(fake, timeout=0.25)
    assert run(closing(provider, complete(provider))).text
    assert fake.calls()["count"] == 2


def test_non_retryable_400_is_not_retried(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "status", "status": 400, "count": 5})
    clock = FakeClock()
    provider = resilient(fake, clock=clock, circuit_failure_threshold=1)
    with pytest.raises(ProviderError) as caught:
        run(closing(provider, complete(provider)))
    assert caught.value.reason == "bad_request"
    assert fake.calls()["count"] == 1
    assert clock.sleeps == []
    stats = provider.stats()
    assert (stats["retries"], stats["circuit_state"]) == (0, "closed")


def test_no_structured_output_is_not_retried(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "no_tool_call", "count": 5})
    provider = resilient(fake)
    schema = OutputSchema(name="verdict", schema={"type": "object", "properties": {}})
    with pytest.raises(ProviderError) as caught:
        run(
            closing(
                provider,
                provider.complete(model=CLAUDE, messages=HELLO, output_schema=schema),
            )
        )
    assert caught.value.reason == "no_structured_output"
    assert fake.calls()["count"] == 1


def test_retry_after_beyond_backoff_max_fails_at_once(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "rate_limit", "count": 3, "retry_after": 120})
    clock = FakeClock()
    provider = resilient(fake, clock=clock, backoff_max_s=10.0)
    with pytest.raises(ProviderError) as caught:
        run(closing(provider, complete(provider)))
    assert caught.value.reason == "rate_limited"
    assert caught.value.retry_after_s == 120
    assert fake.calls()["count"] == 1
    assert clock.sleeps == []


def test_circuit_opens_after_n_failures_and_half_opens_later(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "server_error", "count": None})
    clock = FakeClock()
    provider = resilient(
        fake, clock=clock, max_attempts=1, circuit_failure_threshold=3, circuit_reset_s=30.0
    )

    async def scenario() -> list[str]:
        outcomes: list[str] = []

        async def attempt() -> None:
            try:
                await complete(provider)
                outcomes.append("ok")
            except ProviderError as error:
                outcomes.append(error.reason)

        for _ in range(4):
            await attempt()
        assert provider.stats()["circuit_state"] == "open"
        clock.now += 29.0
        await attempt()  # still open
        clock.now += 1.0
        assert provider.stats()["circuit_state"] == "half_open"
        await attempt()  # the probe fails: open again
        assert provider.stats()["circuit_state"] == "open"
        clock.now += 30.0
        fake.reset()  # the provider recovers
        await attempt()  # the probe succeeds: closed
        await attempt()
        return outcomes

    outcomes = run(closing(provider, scenario()))
    assert outcomes == [
        "server_error",
        "server_error",
        "server_error",
        "circuit_open",
        "circuit_open",
        "server_error",
        "ok",
        "ok",
    ]
    stats = provider.stats()
    assert stats["circuit_state"] == "closed"
    assert stats["circuit_opened"] == 2
    assert stats["failures"] == {"server_error": 4, "circuit_open": 2}
    assert fake.calls()["count"] == 2  # after the reset: the successful probe and one more


def test_circuit_opening_mid_retries_reports_the_real_error(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "server_error", "count": None})
    provider = resilient(fake, max_attempts=5, circuit_failure_threshold=2)
    with pytest.raises(ProviderError) as caught:
        run(closing(provider, complete(provider)))
    assert caught.value.reason == "server_error"
    assert fake.calls()["count"] == 2


class ScriptedProvider:
    """An in-memory provider: waits on an event, fails or answers as told."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail_with: ProviderError | None = None

    async def complete(self, **kwargs: Any) -> Completion:
        self.calls += 1
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        model = kwargs["model"]
        return Completion(
            text="ok", served_model=model, provider=self.name, input_tokens=1, output_tokens=1
        )

    async def aclose(self) -> None:
        return None


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    inner = ScriptedProvider()
    provider = ResilientProvider(
        inner,
        max_attempts=1,
        circuit_failure_threshold=1,
        circuit_reset_s=10.0,
        clock=clock,
        sleep=clock.sleep,
    )

    async def scenario() -> list[str]:
        inner.fail_with = ProviderError("down", reason="connection", provider="scripted")
        inner.release.set()
        with pytest.raises(ProviderError):
            await provider.complete(model="m", messages=HELLO)
        assert provider.stats()["circuit_state"] == "open"
        clock.now += 10.0
        inner.release.clear()
        inner.fail_with = None
        probe = asyncio.create_task(provider.complete(model="m", messages=HELLO))
        await asyncio.sleep(0)
        refused: list[str] = []
        for _ in range(3):
            try:
                await provider.complete(model="m", messages=HELLO)
            except ProviderError as error:
                refused.append(error.reason)
        inner.release.set()
        await probe
        await provider.complete(model="m", messages=HELLO)
        return refused

    assert run(scenario()) == ["circuit_open"] * 3
    assert inner.calls == 3  # the failure, the probe, one call after closing
    assert provider.stats()["circuit_state"] == "closed"


def test_in_flight_cap_is_respected(fake: FakeProviderServer) -> None:
    fake.configure(latency_s=0.15)
    provider = ResilientProvider(
        AnthropicProvider(api_key="k", base_url=fake.anthropic_url, pricing=PRICING, timeout=5.0),
        max_in_flight=3,
    )

    async def many() -> list[Completion]:
        return await asyncio.gather(*(complete(provider) for _ in range(10)))

    results = run(closing(provider, many()))
    assert len(results) == 10
    calls = fake.calls()
    assert calls["count"] == 10
    assert calls["max_concurrent"] == 3
    assert provider.stats()["max_in_flight_seen"] == 3


def test_request_rate_limit_waits_on_the_clock() -> None:
    clock = FakeClock()
    inner = ScriptedProvider()
    inner.release.set()
    provider = ResilientProvider(
        inner, requests_per_minute=2, clock=clock, sleep=clock.sleep, max_in_flight=10
    )

    async def scenario() -> None:
        for _ in range(4):
            await provider.complete(model="m", messages=HELLO)

    run(scenario())
    # A bucket of 2 requests, refilled at one every 30 s.
    assert clock.sleeps == [pytest.approx(30.0), pytest.approx(30.0)]
    assert provider.stats()["rate_limit_wait_s"] == pytest.approx(60.0)


def test_token_rate_limit_uses_the_estimate() -> None:
    clock = FakeClock()
    inner = ScriptedProvider()
    inner.release.set()
    provider = ResilientProvider(inner, tokens_per_minute=3000, clock=clock, sleep=clock.sleep)

    async def scenario() -> None:
        for _ in range(3):
            # about 1000 prompt tokens + 1000 max_tokens each
            await provider.complete(
                model="m",
                messages=[{"role": "user", "content": "x" * 4000}],
                params={"max_tokens": 1000},
            )

    run(scenario())
    assert sum(clock.sleeps) == pytest.approx(60.0)  # 6000 tokens against 3000 / minute


def test_backoff_is_full_jitter_and_never_below_retry_after() -> None:
    provider = ResilientProvider(
        ScriptedProvider(), backoff_base_s=1.0, backoff_max_s=8.0, rng=random.Random(1)
    )
    for attempt in range(1, 8):
        ceiling = min(8.0, 2 ** (attempt - 1))
        for _ in range(50):
            delay = provider.backoff_s(attempt, None)
            assert delay is not None
            assert 0.0 <= delay <= ceiling
            honoured = provider.backoff_s(attempt, 3.0)
            assert honoured is not None
            assert honoured >= 3.0
    assert provider.backoff_s(1, 9.0) is None  # longer than backoff_max_s: give up
