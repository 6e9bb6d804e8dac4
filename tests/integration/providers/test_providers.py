"""The real Anthropic and OpenAI SDK clients (strict validation) against the local fake.

No test reaches the internet: every client points at the fake on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from shadoweval.config import Settings
from shadoweval.providers.anthropic import AnthropicProvider
from shadoweval.providers.base import Completion, OutputSchema, Provider, ProviderError
from shadoweval.providers.openai import OpenAIProvider
from shadoweval.providers.pricing import ModelPrice, PricingTable
from shadoweval.providers.registry import (
    ProviderNotConfigured,
    build_provider_registry,
    pricing_table,
)
from shadoweval.providers.resilience import ResilientProvider
from shadoweval.providers.simulated import (
    SimulatedProvider,
    read_answer_quality,
    sim_tag,
    simulate_answer_text,
)
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider

T = TypeVar("T")

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["winner", "score_a", "score_b", "reasoning"],
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        "score_a": {"type": "integer", "minimum": 1, "maximum": 10},
        "score_b": {"type": "integer", "minimum": 1, "maximum": 10},
        "reasoning": {"type": "string"},
    },
}
VERDICT = OutputSchema(name="verdict", schema=VERDICT_SCHEMA, description="Record the verdict.")
PRICING = PricingTable()
CLAUDE = "claude-haiku-4-5"
GPT = "gpt-4o"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDKs read ANTHROPIC_* / OPENAI_* from the environment: never in these tests."""
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


def anthropic(fake: FakeProviderServer, **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(
        api_key="test-key",
        base_url=fake.anthropic_url,
        pricing=kwargs.pop("pricing", PRICING),
        timeout=kwargs.pop("timeout", 5.0),
        strict_response_validation=True,
        **kwargs,
    )


def openai(fake: FakeProviderServer, **kwargs: Any) -> OpenAIProvider:
    return OpenAIProvider(
        api_key="test-key",
        base_url=fake.openai_url,
        pricing=kwargs.pop("pricing", PRICING),
        timeout=kwargs.pop("timeout", 5.0),
        strict_response_validation=True,
        **kwargs,
    )


async def call(provider: Provider, **kwargs: Any) -> Completion:
    try:
        return await provider.complete(**kwargs)
    finally:
        await provider.aclose()


def last_call(fake: FakeProviderServer) -> dict[str, Any]:
    calls: list[dict[str, Any]] = fake.calls()["calls"]
    return calls[-1]


# --- round trips


def test_anthropic_text_round_trip(fake: FakeProviderServer) -> None:
    completion = run(
        call(
            anthropic(fake),
            model=CLAUDE,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            system="Answer briefly.",
            params={"temperature": 0, "user": "dropped"},
        )
    )
    answer = f"[{CLAUDE}] answer: What is the capital of France?"
    assert completion.text == answer
    assert completion.provider == "anthropic"
    assert completion.served_model == CLAUDE
    assert completion.finish_reason == "end_turn"
    assert completion.input_tokens == words("Answer briefly.") + words(
        "What is the capital of France?"
    )
    assert completion.output_tokens == words(answer)
    assert completion.cache_read_tokens == completion.cache_write_tokens == 0
    assert completion.latency_ms > 0
    assert completion.simulated is False
    assert completion.raw["dropped_params"] == ["user"]

    sent = last_call(fake)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["authorization"] == "Bearer test-key"
    assert "anthropic-version" in sent["headers"]
    body = sent["body"]
    assert body["max_tokens"] == 1024
    assert body["temperature"] == 0  # through extra_body
    assert body["system"] == "Answer briefly."
    assert "user" not in body


def test_anthropic_moves_system_role_messages_into_system(fake: FakeProviderServer) -> None:
    run(
        call(
            anthropic(fake),
            model=CLAUDE,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hi"},
            ],
            params={"max_tokens": 50},
        )
    )
    body = last_call(fake)["body"]
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 50
    assert "temperature" not in body


def test_openai_text_round_trip(fake: FakeProviderServer) -> None:
    completion = run(
        call(
            openai(fake),
            model=GPT,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            system="Answer briefly.",
            params={"temperature": 0.2, "max_tokens": 300},
        )
    )
    answer = f"[{GPT}] answer: What is the capital of France?"
    assert completion.text == answer
    assert completion.provider == "openai"
    assert completion.served_model == GPT
    assert completion.finish_reason == "stop"
    assert completion.input_tokens == words("Answer briefly. What is the capital of France?")
    assert completion.output_tokens == words(answer)
    assert completion.latency_ms > 0

    sent = last_call(fake)
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer test-key"
    body = sent["body"]
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert body["max_completion_tokens"] == 300
    assert body["temperature"] == 0.2
    assert "max_tokens" not in body


def test_openai_base_url_without_v1_is_completed(fake: FakeProviderServer) -> None:
    provider = OpenAIProvider(
        api_key="k", base_url=fake.url, pricing=PRICING, strict_response_validation=True
    )
    completion = run(call(provider, model=GPT, messages=[{"role": "user", "content": "hi"}]))
    assert completion.text.startswith(f"[{GPT}]")


# --- structured output


def test_anthropic_structured_verdict_by_forced_tool_use(fake: FakeProviderServer) -> None:
    completion = run(
        call(
            anthropic(fake),
            model=CLAUDE,
            messages=[{"role": "user", "content": "Which answer is better?"}],
            system="You are a judge.",
            output_schema=VERDICT,
        )
    )
    assert completion.structured is not None
    assert completion.structured["winner"] in ("A", "B", "tie")
    assert 1 <= completion.structured["score_a"] <= 10
    assert completion.finish_reason == "tool_use"

    body = last_call(fake)["body"]
    assert body["tools"] == [
        {"name": "verdict", "description": "Record the verdict.", "input_schema": VERDICT_SCHEMA}
    ]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "verdict",
        "disable_parallel_tool_use": True,
    }


def test_openai_structured_verdict_by_json_schema(fake: FakeProviderServer) -> None:
    completion = run(
        call(
            openai(fake),
            model=GPT,
            messages=[{"role": "user", "content": "Which answer is better?"}],
            output_schema=VERDICT,
        )
    )
    assert completion.structured is not None
    assert set(completion.structured) == {"winner", "score_a", "score_b", "reasoning"}
    body = last_call(fake)["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "verdict"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"] == VERDICT_SCHEMA


def test_judge_always_prefers_a_fault(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "prefer_a", "count": None})
    for provider, model in ((anthropic(fake), CLAUDE), (openai(fake), GPT)):
        completion = run(
            call(
                provider,
                model=model,
                messages=[{"role": "user", "content": "judge"}],
                output_schema=VERDICT,
            )
        )
        assert completion.structured is not None
        assert completion.structured["winner"] == "A"


def test_out_of_range_scores_are_passed_through_for_the_judge_to_reject(
    fake: FakeProviderServer,
) -> None:
    fake.add_faults({"kind": "out_of_range_scores", "count": 2})
    for provider, model in ((anthropic(fake), CLAUDE), (openai(fake), GPT)):
        completion = run(
            call(
                provider,
                model=model,
                messages=[{"role": "user", "content": "judge"}],
                output_schema=VERDICT,
            )
        )
        assert completion.structured is not None
        assert completion.structured["score_a"] == 42


# --- caching and cost


def test_anthropic_cache_control_sent_and_cache_tokens_recorded(fake: FakeProviderServer) -> None:
    rubric = "Judge the two answers on correctness and helpfulness. " * 20
    provider = anthropic(fake)

    async def twice() -> tuple[Completion, Completion]:
        try:
            first = await provider.complete(
                model=CLAUDE,
                messages=[{"role": "user", "content": "pair one"}],
                system=rubric,
                cache_system=True,
            )
            second = await provider.complete(
                model=CLAUDE,
                messages=[{"role": "user", "content": "pair two here"}],
                system=rubric,
                cache_system=True,
            )
            return first, second
        finally:
            await provider.aclose()

    first, second = run(twice())
    body = last_call(fake)["body"]
    assert body["system"] == [
        {"type": "text", "text": rubric, "cache_control": {"type": "ephemeral"}}
    ]
    rubric_tokens = words(rubric)
    assert (first.cache_write_tokens, first.cache_read_tokens) == (rubric_tokens, 0)
    assert (second.cache_write_tokens, second.cache_read_tokens) == (0, rubric_tokens)
    assert second.input_tokens == words("pair two here")
    assert second.prompt_tokens == rubric_tokens + words("pair two here")

    price = PRICING.price_for(CLAUDE)
    assert price == ModelPrice(input=1.0, output=5.0, cache_read=0.1, cache_write=1.25)
    expected_first = (
        first.input_tokens * 1.0 + first.output_tokens * 5.0 + rubric_tokens * 1.25
    ) / 1e6
    expected_second = (
        second.input_tokens * 1.0 + second.output_tokens * 5.0 + rubric_tokens * 0.1
    ) / 1e6
    assert first.cost_usd == pytest.approx(expected_first, rel=1e-12)
    assert second.cost_usd == pytest.approx(expected_second, rel=1e-12)


def test_openai_cached_tokens_are_billed_at_the_cached_price(fake: FakeProviderServer) -> None:
    system = " ".join(f"rule{i}" for i in range(1300))
    provider = openai(fake)

    async def twice() -> tuple[Completion, Completion]:
        try:
            first = await provider.complete(
                model=GPT, messages=[{"role": "user", "content": "q one"}], system=system
            )
            second = await provider.complete(
                model=GPT, messages=[{"role": "user", "content": "q two"}], system=system
            )
            return first, second
        finally:
            await provider.aclose()

    first, second = run(twice())
    assert first.cache_read_tokens == 0
    assert first.input_tokens == 1302
    # prompt_tokens (1302) INCLUDES the 1280 cached ones (1300 common words, floored to 128s)
    assert second.cache_read_tokens == 1280
    assert second.input_tokens == 1302 - 1280
    assert second.prompt_tokens == 1302
    price = PRICING.price_for(GPT)
    assert (price.input, price.cache_read, price.output) == (2.5, 1.25, 10.0)
    expected = (22 * 2.5 + 1280 * 1.25 + second.output_tokens * 10.0) / 1e6
    assert second.cost_usd == pytest.approx(expected, rel=1e-12)


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("requested", "served", "api"),
    [
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001", "anthropic"),
        ("claude-opus-4-5", "claude-opus-4-5-20251101", "anthropic"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic"),
        ("gpt-4o", "gpt-4o-2024-08-06", "openai"),
        ("gpt-5-mini", "gpt-5-mini-2025-08-07", "openai"),
        ("o4-mini", "o4-mini-2025-04-16", "openai"),
    ],
)
def test_cost_is_the_price_table_applied_to_the_fake_token_counts(
    fake: FakeProviderServer, requested: str, served: str, api: str
) -> None:
    fake.configure(model_aliases={requested: served})
    provider = anthropic(fake) if api == "anthropic" else openai(fake)
    completion = run(
        call(
            provider,
            model=requested,
            messages=[{"role": "user", "content": "count these five words"}],
        )
    )
    assert completion.served_model == served
    price = PRICING.price_for(requested)
    assert PRICING.price_for(served) == price
    expected = (
        completion.input_tokens * price.input + completion.output_tokens * price.output
    ) / 1e6
    assert completion.cost_usd == pytest.approx(expected, rel=1e-12)
    assert completion.cost_usd == pytest.approx(
        PRICING.cost_usd(served, completion.input_tokens, completion.output_tokens), rel=1e-12
    )
    assert completion.input_tokens == 4
    assert completion.output_tokens == words(f"[{served}] answer: count these five words")


def test_unknown_model_fails_before_any_request(fake: FakeProviderServer) -> None:
    for provider in (anthropic(fake), openai(fake)):
        with pytest.raises(ProviderError) as caught:
            run(
                call(provider, model="mystery-model-1", messages=[{"role": "user", "content": "x"}])
            )
        assert caught.value.reason == "unknown_model"
        assert "SHADOWEVAL_PRICING_OVERRIDES" in caught.value.message
    assert fake.calls()["count"] == 0


# --- fault mapping

FAULTS = [
    # (magic string, expected reason, expected status)
    ("FAULT:rate_limit=0.25", "rate_limited", 429),
    ("FAIL_429", "rate_limited", 429),
    ("FAULT:server_error", "server_error", 500),
    ("FAIL_500", "server_error", 500),
    ("FAULT:server_error=502", "server_error", 502),
    ("FAULT:status=400", "bad_request", 400),
    ("FAIL_400", "bad_request", 400),
    ("FAULT:status=404", "bad_request", 404),
    ("FAULT:status=422", "bad_request", 422),
    ("FAULT:status=401", "authentication", 401),
    ("FAULT:status=403", "authentication", 403),
    ("FAULT:malformed_json", "malformed_response", None),
    ("FAULT:invalid_shape", "malformed_response", 200),
    ("FAULT:no_tool_call", "no_structured_output", None),
    ("BAD_JSON", "no_structured_output", None),
    ("FAULT:refusal", "refused", None),
    ("FAULT:truncated", "truncated", None),
]


@pytest.mark.parametrize("api", ["anthropic", "openai"])
@pytest.mark.parametrize(("magic", "reason", "status"), FAULTS)
def test_magic_string_faults_map_to_reasons(
    fake: FakeProviderServer, api: str, magic: str, reason: str, status: int | None
) -> None:
    provider, model = (anthropic(fake), CLAUDE) if api == "anthropic" else (openai(fake), GPT)
    with pytest.raises(ProviderError) as caught:
        run(
            call(
                provider,
                model=model,
                messages=[{"role": "user", "content": f"please judge {magic}"}],
                output_schema=VERDICT,
            )
        )
    error = caught.value
    assert error.reason == reason, error.message
    assert error.status_code == status
    assert error.provider == api
    assert error.retryable == (reason in ("rate_limited", "server_error"))
    if magic == "FAULT:rate_limit=0.25":
        assert error.retry_after_s == pytest.approx(0.25)


def test_overloaded_maps_per_provider(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "overloaded", "count": 2})
    with pytest.raises(ProviderError) as on_anthropic:
        run(call(anthropic(fake), model=CLAUDE, messages=[{"role": "user", "content": "x"}]))
    assert (on_anthropic.value.reason, on_anthropic.value.status_code) == ("overloaded", 529)
    with pytest.raises(ProviderError) as on_openai:
        run(call(openai(fake), model=GPT, messages=[{"role": "user", "content": "x"}]))
    assert (on_openai.value.reason, on_openai.value.status_code) == ("server_error", 503)


def test_retry_after_ms_header_wins(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "rate_limit", "retry_after": 3, "retry_after_ms": 150})
    with pytest.raises(ProviderError) as caught:
        run(call(anthropic(fake), model=CLAUDE, messages=[{"role": "user", "content": "x"}]))
    assert caught.value.retry_after_s == pytest.approx(0.15)


def test_queued_faults_match_model_and_api_and_run_out(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "server_error", "count": 1, "model": "gpt-4o", "api": "openai"})

    async def scenario() -> list[str]:
        outcomes: list[str] = []
        a, o = anthropic(fake), openai(fake)
        try:
            for provider, model in ((a, CLAUDE), (o, "gpt-4.1"), (o, GPT), (o, GPT)):
                try:
                    await provider.complete(
                        model=model, messages=[{"role": "user", "content": "x"}]
                    )
                    outcomes.append("ok")
                except ProviderError as error:
                    outcomes.append(error.reason)
        finally:
            await a.aclose()
            await o.aclose()
        return outcomes

    assert run(scenario()) == ["ok", "ok", "server_error", "ok"]
    calls = fake.calls()
    assert calls["count"] == 4
    assert [c["fault"]["kind"] if c["fault"] else None for c in calls["calls"]] == [
        None,
        None,
        "server_error",
        None,
    ]


def test_slow_answer_beyond_timeout_is_a_timeout(fake: FakeProviderServer) -> None:
    fake.add_faults({"kind": "slow", "sleep_s": 1.0, "count": 2})
    for provider, model in (
        (anthropic(fake, timeout=0.3), CLAUDE),
        (openai(fake, timeout=0.3), GPT),
    ):
        with pytest.raises(ProviderError) as caught:
            run(call(provider, model=model, messages=[{"role": "user", "content": "x"}]))
        assert caught.value.reason == "timeout"
        assert caught.value.retryable


def test_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` any more.
    for provider, model in (
        (
            AnthropicProvider(
                api_key="k", base_url=f"http://127.0.0.1:{port}", pricing=PRICING, timeout=2
            ),
            CLAUDE,
        ),
        (
            OpenAIProvider(
                api_key="k", base_url=f"http://127.0.0.1:{port}/v1", pricing=PRICING, timeout=2
            ),
            GPT,
        ),
    ):
        with pytest.raises(ProviderError) as caught:
            run(call(provider, model=model, messages=[{"role": "user", "content": "x"}]))
        assert caught.value.reason == "connection"


# --- pricing


def test_pricing_resolves_dated_ids_and_refuses_lookalikes() -> None:
    table = PricingTable()
    assert table.price_for("claude-haiku-4-5-20251001") == table.price_for("claude-haiku-4-5")
    assert table.price_for("claude-opus-4-20250514").input == 15.0
    assert table.price_for("claude-opus-4-5-20251101").input == 5.0
    assert table.price_for("gpt-4o-mini-2024-07-18").input == 0.15
    assert table.price_for("gpt-5-2025-08-07").output == 10.0
    assert table.price_for("gpt-4.1-nano-2025-04-14").cache_read == 0.025
    for lookalike in ("o3-pro", "claude-opus-4-9", "gpt-5-pro", "claude-sonnet-5-5", "gpt-4o-x"):
        assert table.lookup(lookalike) is None, lookalike
        with pytest.raises(ProviderError) as caught:
            table.cost_usd(lookalike, 10, 10)
        assert caught.value.reason == "unknown_model"
    with pytest.raises(ProviderError):
        table.estimate_cost_usd("o3-pro", 1000, 500)


def test_pricing_overrides_from_settings() -> None:
    settings = Settings(
        pricing_overrides={
            "gpt-4o": {"input": 1.0, "output": 2.0, "cache_read": 0.5},
            "my-vllm-*": {"input": 0.1, "output": 0.2},
        }
    )
    table = pricing_table(settings)
    assert table.price_for("gpt-4o") == ModelPrice(1.0, 2.0, 0.5, 1.25)
    assert table.price_for("gpt-4o-2024-08-06").input == 1.0
    vllm = table.price_for("my-vllm-llama-3-70b")
    assert (vllm.input, vllm.cache_read, vllm.cache_write) == (0.1, 0.1, 0.125)
    assert table.cost_usd("my-vllm-x", 1_000_000, 1_000_000) == pytest.approx(0.3)
    assert table.cost_usd("my-vllm-x", 1_000_000, 1_000_000, batch=True) == pytest.approx(0.15)
    assert table.estimate_cost_usd("gpt-4o", 2_000_000, 1_000_000) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown field"):
        pricing_table(Settings(pricing_overrides={"m": {"input": 1, "output": 1, "inptu": 2}}))
    with pytest.raises(ValueError, match="needs"):
        pricing_table(Settings(pricing_overrides={"m": {"input": 1}}))


# --- simulated provider


def test_simulated_provider_is_deterministic_and_labelled() -> None:
    tag = sim_tag(difficulty=0.4, qualities={"claude-haiku-4-5": 0.35, "claude-sonnet-4-5": 0.9})
    messages = [{"role": "user", "content": f"Explain TCP slow start. {tag}"}]

    async def scenario() -> list[Completion]:
        provider = SimulatedProvider(pricing=PRICING)
        other = SimulatedProvider(pricing=PRICING)
        return [
            await provider.complete(model="claude-haiku-4-5", messages=messages),
            await other.complete(model="claude-haiku-4-5", messages=messages),
            await provider.complete(model="claude-sonnet-4-5", messages=messages),
        ]

    cheap, cheap_again, strong = run(scenario())
    assert cheap == cheap_again
    assert cheap.text == simulate_answer_text("claude-haiku-4-5", messages)
    for completion, model in ((cheap, "claude-haiku-4-5"), (strong, "claude-sonnet-4-5")):
        assert completion.simulated is True
        assert completion.provider == "simulated"
        assert completion.served_model == model
        assert completion.text.startswith(f"[simulated {model}]")
        assert "shadoweval-sim difficulty" not in completion.text  # the request tag is not echoed
        assert completion.input_tokens > 0
        assert completion.output_tokens > 0
        assert completion.cost_usd == pytest.approx(
            PRICING.cost_usd(model, completion.input_tokens, completion.output_tokens)
        )
    cheap_quality = read_answer_quality(cheap.text)
    strong_quality = read_answer_quality(strong.text)
    assert cheap_quality is not None
    assert abs(cheap_quality - 0.35) <= 0.03
    assert strong_quality is not None
    assert abs(strong_quality - 0.9) <= 0.03


def test_simulated_judge_is_consistent_with_the_answer_qualities() -> None:
    tag = sim_tag(qualities={"claude-haiku-4-5": 0.3, "gpt-5": 0.9})
    messages = [{"role": "user", "content": f"Prove that sqrt(2) is irrational. {tag}"}]
    cheap = simulate_answer_text("claude-haiku-4-5", messages)
    strong = simulate_answer_text("gpt-5", messages)

    def judge_turn(answer_a: str, answer_b: str) -> list[dict[str, Any]]:
        content = (
            f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n"
            f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
        )
        return [{"role": "user", "content": content}]

    async def scenario() -> tuple[Completion, Completion, Completion]:
        judge = SimulatedProvider(pricing=PRICING)
        forward = await judge.complete(
            model="claude-sonnet-4-5",
            messages=judge_turn(cheap, strong),
            system="You are a judge.",
            output_schema=VERDICT,
            cache_system=True,
        )
        backward = await judge.complete(
            model="claude-sonnet-4-5",
            messages=judge_turn(strong, cheap),
            system="You are a judge.",
            output_schema=VERDICT,
            cache_system=True,
        )
        same = await judge.complete(
            model="claude-sonnet-4-5",
            messages=judge_turn(cheap, cheap),
            output_schema=VERDICT,
        )
        return forward, backward, same

    forward, backward, same = run(scenario())
    assert forward.structured is not None
    assert backward.structured is not None
    assert forward.structured["winner"] == "B"
    assert backward.structured["winner"] == "A"
    assert forward.structured["score_b"] == backward.structured["score_a"]
    assert forward.structured["score_a"] < forward.structured["score_b"]
    assert same.structured is not None
    assert same.structured["winner"] == "tie"
    assert forward.simulated
    assert forward.text.startswith("[simulated claude-sonnet-4-5]")
    assert forward.cache_write_tokens > 0
    assert forward.cache_read_tokens == 0
    assert backward.cache_read_tokens == forward.cache_write_tokens


def test_simulated_quality_without_tag_follows_model_strength() -> None:
    hard = [{"role": "user", "content": f"hard one {sim_tag(difficulty=0.9)}"}]
    strong = read_answer_quality(simulate_answer_text("claude-opus-4-5", hard))
    weak = read_answer_quality(simulate_answer_text("gpt-5-nano", hard))
    assert strong is not None
    assert weak is not None
    assert strong > weak
    with pytest.raises(ProviderError) as caught:
        run(SimulatedProvider(pricing=PRICING).complete(model="mystery", messages=hard))
    assert caught.value.reason == "unknown_model"


# --- registry


def test_registry_routes_models_by_longest_prefix(fake: FakeProviderServer) -> None:
    settings = Settings(
        anthropic_api_key="a-key",
        anthropic_base_url=fake.anthropic_url,
        openai_api_key="o-key",
        openai_base_url=fake.openai_url,
        provider_for_model_prefix={"claude": "anthropic", "gpt": "openai", "gpt-oss": "anthropic"},
        default_provider="openai",
    )
    registry = build_provider_registry(settings, strict_response_validation=True)
    assert registry.provider_name_for("claude-haiku-4-5") == "anthropic"
    assert registry.provider_name_for("gpt-4o") == "openai"
    assert registry.provider_name_for("gpt-oss-120b") == "anthropic"
    assert registry.provider_name_for("o3") == "openai"  # the default
    provider = registry.for_model(CLAUDE)
    assert isinstance(provider, ResilientProvider)
    assert registry.for_model("claude-opus-4-5") is provider  # one per provider

    async def scenario() -> tuple[Completion, Completion]:
        try:
            first = await registry.for_model(CLAUDE).complete(
                model=CLAUDE, messages=[{"role": "user", "content": "hello"}]
            )
            second = await registry.for_model(GPT).complete(
                model=GPT, messages=[{"role": "user", "content": "hello"}]
            )
            return first, second
        finally:
            await registry.aclose()

    first, second = run(scenario())
    assert (first.provider, second.provider) == ("anthropic", "openai")
    calls = fake.calls()["calls"]
    assert calls[0]["headers"]["authorization"] == "Bearer a-key"
    assert calls[1]["headers"]["authorization"] == "Bearer o-key"
    assert registry.stats() == {}  # closed registries forget their providers


def test_registry_names_the_missing_key() -> None:
    registry = build_provider_registry(Settings())
    with pytest.raises(ProviderNotConfigured) as caught:
        registry.for_model("claude-haiku-4-5")
    assert "SHADOWEVAL_ANTHROPIC_API_KEY" in caught.value.message
    assert caught.value.reason == "authentication"
    with pytest.raises(ProviderError, match="SHADOWEVAL_OPENAI_API_KEY"):
        registry.for_model("gpt-4o")


def test_registry_serves_everything_simulated_when_asked() -> None:
    registry = build_provider_registry(Settings(use_simulated_provider=True))
    provider = registry.for_model("gpt-4o")
    assert registry.for_model("claude-haiku-4-5") is provider
    completion = run(provider.complete(model="gpt-4o", messages=[{"role": "user", "content": "q"}]))
    assert completion.simulated
    assert completion.provider == "simulated"
    assert registry.stats()["simulated"]["successes"] == 1
    run(registry.aclose())
