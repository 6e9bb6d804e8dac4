"""Fixtures for the shadow → judge pipeline: the fake provider, settings, a worker pass."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import OPEN_VERDICT_STATUSES, Verdict
from shadoweval.providers.pricing import PricingTable
from shadoweval.providers.registry import build_provider_registry
from shadoweval.runtime.worker import WorkerRuntime, run_worker
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider

CHEAP, STRONG, JUDGE = "claude-haiku-4-5", "claude-sonnet-4-6", "gpt-5"


@pytest.fixture(scope="session")
def fake_provider_server() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as fake:
        yield fake


@pytest.fixture
def fake(
    fake_provider_server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> FakeProviderServer:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    fake_provider_server.reset()
    return fake_provider_server


def pipeline_settings(base: Settings, fake: FakeProviderServer, **changes: Any) -> Settings:
    """Every cheap and strong decision sampled, shadows on the fake, fast retries."""
    values: dict[str, Any] = {
        "anthropic_api_key": "test-anthropic-key",
        "anthropic_base_url": fake.anthropic_url,
        "openai_api_key": "test-openai-key",
        "openai_base_url": fake.openai_url,
        "tier_models": {"*": {"cheap": CHEAP, "strong": STRONG}},
        "judge_model": JUDGE,
        "store_payloads": "all",
        "sampling_rate_by_tier": {"cheap": 1.0, "strong": 1.0},
        "provider_backoff_base_s": 0.01,
        "provider_backoff_max_s": 1.0,
        "provider_timeout_s": 5.0,
        "work_retry_base_s": 0.0,
        "work_max_attempts": 3,
    }
    values.update(changes)
    return base.model_copy(update=values)


@pytest.fixture
def settings(base_settings: Settings, fake: FakeProviderServer) -> Settings:
    return pipeline_settings(base_settings, fake)


def ingest(engine: Engine, settings: Settings, items: list[dict[str, Any]]) -> list[int]:
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items)
        )
    assert not outcome.errors, outcome.errors
    return [r.id for r in outcome.results if r.id is not None]


def open_verdicts(engine: Engine) -> int:
    with Session(engine) as session:
        return len(
            session.exec(select(Verdict).where(Verdict.status.in_(OPEN_VERDICT_STATUSES))).all()  # type: ignore[attr-defined]
        )


def drain(engine: Engine, settings: Settings, max_passes: int = 10) -> WorkerRuntime:
    """Run worker passes (every job once) until no verdict is open."""

    async def passes() -> WorkerRuntime:
        registry = build_provider_registry(settings, strict_response_validation=True)
        pricing = PricingTable.from_settings(settings)

        def price(model: str) -> float | None:
            found = pricing.lookup(model)
            return None if found is None else found.input + found.output

        runtime = WorkerRuntime(
            engine=engine,
            settings=settings,
            provider_for_model=registry.for_model,
            price_per_mtok=price,
        )
        try:
            for _ in range(max_passes):
                await run_worker(runtime, once=True)
                if open_verdicts(engine) == 0:
                    break
        finally:
            await registry.aclose()
        return runtime

    return asyncio.run(passes())
