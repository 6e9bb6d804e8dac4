"""The RouteLLM integration against the real `routellm` package (0.2.0).

Its weight-free `random` router routes; its model calls (LiteLLM) go to the local fake
provider; decisions go to the live API. Skipped where routellm is not installed
(`pip install -e '.[routellm]'`); the stand-in tests in test_client.py cover the rest.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.client import DecisionLogger, LoggingController, served_model_name
from shadoweval.ingest.models import Decision
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import Keys, LiveApi

DOCS = Path(__file__).resolve().parents[2] / "docs" / "client.md"
STRONG, WEAK = "openai/gpt-4o", "openai/gpt-4o-mini"


def _import_routellm() -> ModuleType | None:
    """routellm.controller, imported without touching the network or the environment.

    Importing it builds an OpenAI client (needs a key) and LiteLLM fetches its price map
    from GitHub unless told to use the copy it ships; both only at import time.
    """
    needed = {"OPENAI_API_KEY": "sk-import-only", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    saved = {name: os.environ.get(name) for name in needed}
    os.environ.update({name: saved[name] or value for name, value in needed.items()})
    try:
        with warnings.catch_warnings():  # their own pydantic v1-style validators
            warnings.simplefilter("ignore")
            return importlib.import_module("routellm.controller")
    except ImportError:
        return None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


routellm_controller = _import_routellm()
pytestmark = [
    # CI installs the extra (.ci/run): there a missing routellm fails instead of skipping.
    pytest.mark.skipif(
        routellm_controller is None and os.environ.get("CI") != "true",
        reason="routellm not installed (pip install -e '.[routellm]')",
    ),
    # LiteLLM's and RouteLLM's own pydantic warnings, raised when they build their models.
    pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:routellm.*"),
]


@pytest.fixture(autouse=True)
def _routellm_installed() -> None:
    if routellm_controller is None:
        pytest.fail("CI=true but routellm is not installed: pip install -e '.[routellm]'")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as server:
        yield server


@pytest.fixture
def provider(fake: FakeProviderServer) -> Iterator[FakeProviderServer]:
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def loggers(live_api: LiveApi, keys: Keys) -> Iterator[Callable[[], DecisionLogger]]:
    made: list[DecisionLogger] = []

    def make() -> DecisionLogger:
        made.append(DecisionLogger(live_api.url, keys.ingest, max_batch_age=0.05))
        return made[-1]

    yield make
    for logger in made:
        logger.close(timeout=5)


def controller(provider: FakeProviderServer) -> Any:
    assert routellm_controller is not None
    return routellm_controller.Controller(
        routers=["random"],
        strong_model=STRONG,
        weak_model=WEAK,
        api_base=provider.openai_url,
        api_key="sk-fake",
    )


def rows(engine: Engine) -> dict[str, Decision]:
    with Session(engine) as session:
        return {row.request_id: row for row in session.scalars(select(Decision))}


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_served_model_name_puts_the_called_provider_prefix_back() -> None:
    assert served_model_name("openai/gpt-4o-mini", "gpt-4o-mini") == "openai/gpt-4o-mini"
    assert (
        served_model_name("openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18")
        == "openai/gpt-4o-mini-2024-07-18"
    )
    assert served_model_name("gpt-4o-mini", "gpt-4o-mini") == "gpt-4o-mini"
    assert served_model_name("openai/gpt-4o", None) == "openai/gpt-4o"
    assert served_model_name("openai/x", "azure/x") == "azure/x"  # already qualified


def test_the_controllers_own_call_is_logged_once_with_the_score_it_routed_on(
    provider: FakeProviderServer,
    engine: Engine,
    loggers: Callable[[], DecisionLogger],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routers = importlib.import_module("routellm.routers.routers")
    scored: list[float] = []
    original = routers.RandomRouter.calculate_strong_win_rate

    def spy(self: Any, prompt: str) -> float:
        score = float(original(self, prompt))
        scored.append(score)
        return score

    monkeypatch.setattr(routers.RandomRouter, "calculate_strong_win_rate", spy)
    rc = controller(provider)
    logger = loggers()
    client = LoggingController(rc, logger, name="support-router")
    random.seed(20261207)  # the random router draws from the module generator

    answers = [
        client.chat.completions.create(
            model="router-random-0.5",
            messages=ask(f"question {i}"),
            request_id=f"q{i}",
            segment={"topic": "billing"},
        )
        for i in range(24)
    ]
    assert logger.flush(timeout=10)

    stored = rows(engine)
    called = [call["model"] for call in provider.calls()["calls"]]
    assert len(scored) == len(called) == len(stored) == 24  # one score, one call, one log each
    tiers = {row.tier for row in stored.values()}
    assert tiers == {"strong", "cheap"}  # the seed routes both ways
    for i, (score, model, answer) in enumerate(zip(scored, called, answers, strict=True)):
        row = stored[f"q{i}"]
        # The score RouteLLM routed on, and the model it called, are the ones logged.
        assert row.router_score == pytest.approx(score, abs=1e-12)
        assert row.chosen_model == (STRONG if score >= 0.5 else WEAK)
        assert row.chosen_model == f"openai/{model}"
        assert row.served_model == row.chosen_model  # normalized: they compare
        assert row.tier == ("strong" if score >= 0.5 else "cheap")
        assert (row.router, row.threshold, row.score_semantics) == (
            "support-router",
            0.5,
            "p_strong_needed",
        )
        assert row.extra["routellm_router"] == "random"
        assert row.segment == {"topic": "billing"}
        assert row.has_request
        assert row.has_response
        assert row.output_tokens == answer.usage.completion_tokens
        # LiteLLM prices gpt-4o / gpt-4o-mini from the price map it ships.
        litellm = importlib.import_module("litellm")
        assert row.cost_usd is not None
        assert row.cost_usd > 0
        assert row.cost_usd == pytest.approx(litellm.completion_cost(completion_response=answer))
    # RouteLLM's own bookkeeping saw the same requests: its path was the one taken.
    assert sum(rc.model_counts["random"].values()) == 24
    strong_cost = [r.cost_usd for r in stored.values() if r.tier == "strong"]
    cheap_cost = [r.cost_usd for r in stored.values() if r.tier == "cheap"]
    assert min(strong_cost) > max(cheap_cost)  # gpt-4o costs more than mini per answer


def test_a_snapshot_served_model_keeps_its_id_with_the_provider_prefix(
    provider: FakeProviderServer, engine: Engine, loggers: Callable[[], DecisionLogger]
) -> None:
    provider.configure(model_aliases={"gpt-4o-mini": "gpt-4o-mini-2024-07-18"})
    logger = loggers()
    client = LoggingController(controller(provider), logger)
    client.completion(router="random", threshold=1.0, messages=ask("hi"), request_id="snap")
    assert logger.flush(timeout=10)

    row = rows(engine)["snap"]
    assert (row.router, row.chosen_model, row.served_model) == (
        "routellm-random",
        WEAK,
        "openai/gpt-4o-mini-2024-07-18",
    )


def test_async_calls_errors_after_routing_and_refusals(
    provider: FakeProviderServer, engine: Engine, loggers: Callable[[], DecisionLogger]
) -> None:
    logger = loggers()
    rc = controller(provider)
    client = LoggingController(rc, logger)

    answer = asyncio.run(
        client.chat.completions.acreate(
            model="router-random-0.0", messages=ask("async"), request_id="async"
        )
    )
    assert answer.model == "gpt-4o"  # threshold 0: every score routes strong

    # The provider fails after routing: logged without an answer, the error raised.
    provider.add_faults({"kind": "status", "status": 400, "count": 1})
    with pytest.raises(Exception, match=r"400|BadRequest"):
        client.chat.completions.create(
            model="router-random-1.0", messages=ask("fails"), request_id="failed"
        )
    # Refused before routing: RouteLLM's error, nothing logged.
    with pytest.raises(routellm_controller.RoutingError):  # type: ignore[union-attr]
        client.chat.completions.create(model="router-random-1.5", messages=ask("no"))
    with pytest.raises(routellm_controller.RoutingError):  # type: ignore[union-attr]
        client.chat.completions.create(model="router-mf-0.5", messages=ask("not loaded"))
    assert logger.flush(timeout=10)

    stored = rows(engine)
    assert set(stored) == {"async", "failed"}
    assert (stored["async"].tier, stored["async"].served_model) == ("strong", STRONG)
    assert stored["async"].has_response
    failed = stored["failed"]
    assert (failed.tier, failed.chosen_model, failed.has_response) == ("cheap", WEAK, False)
    assert failed.cost_usd is None
    # The controller is still RouteLLM's: its own call works and is not logged.
    rc.chat.completions.create(model="router-random-0.5", messages=ask("unwrapped"))
    assert logger.flush(timeout=10)
    assert len(rows(engine)) == 2


def docs_block(marker: str) -> str:
    """The ```python block right after `<!-- marker -->` in docs/client.md."""
    found = re.search(rf"<!-- {marker} -->\n```python\n(.*?)\n```", DOCS.read_text(), re.S)
    assert found, marker
    return found.group(1)


def as_random_router(code: str) -> str:
    """The docs use `mf` (downloaded weights, an embedding call); the test uses `random`."""
    assert code.count('routers=["mf"]') == 1
    assert code.count("router-mf-0.11593") == 1
    return code.replace('routers=["mf"]', 'routers=["random"]').replace(
        "router-mf-0.11593", "router-random-0.11593"
    )


@pytest.mark.parametrize("marker", ["routellm-example", "routellm-route-example"])
def test_the_docs_examples_run_as_written(
    marker: str,
    provider: FakeProviderServer,
    live_api: LiveApi,
    keys: Keys,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", provider.openai_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.setenv("SHADOWEVAL_URL", live_api.url)
    monkeypatch.setenv("SHADOWEVAL_INGEST_KEY", keys.ingest)
    namespace: dict[str, Any] = {}
    exec(compile(as_random_router(docs_block(marker)), str(DOCS), "exec"), namespace)  # noqa: S102
    logger: DecisionLogger = namespace["logger"]
    try:
        answers = [namespace["handle"](ask(f"docs {i}"), f"docs-{i}") for i in range(6)]
        assert logger.flush(timeout=10)
    finally:
        logger.close(timeout=5)

    stored = rows(engine)
    assert len(provider.calls()["calls"]) == 6  # every call reached the configured endpoint
    assert set(stored) == {f"docs-{i}" for i in range(6)}
    for i, answer in enumerate(answers):
        row = stored[f"docs-{i}"]
        assert row.router == "support-router"
        assert row.chosen_model == row.served_model == f"openai/{answer.model}"
        assert row.router_score is not None
        assert (row.router_score >= 0.11593) == (row.tier == "strong")
        assert row.segment == {"topic": "billing"}
        assert row.has_response
        assert row.cost_usd is not None
        assert row.cost_usd > 0
