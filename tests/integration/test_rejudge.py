"""`shadoweval rejudge`: a stored sample judged again by the real judge code against the fake
provider, reporting agreement with the stored verdicts and writing nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from shadoweval.cli import app
from shadoweval.config import Settings, get_settings
from shadoweval.feedback import rejudge
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.providers.registry import build_provider_registry
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import decision
from tests.integration.pipeline.conftest import STRONG, drain, ingest, pipeline_settings

ROUTER = "support-router"
MARK = "GOOD"  # the fake judge prefers whichever answer contains this text


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch) -> FakeProviderServer:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    fake_server.reset()
    return fake_server


@pytest.fixture
def judged(engine: Engine, base_settings: Settings, fake: FakeProviderServer) -> Settings:
    """Six judged pairs: on four the stronger answer wins (it echoes the question, which
    holds the mark), on two the cheaper one (its logged answer holds the mark)."""
    settings = pipeline_settings(base_settings, fake)
    fake.configure(judge_prefers=MARK)
    items = [
        decision(
            f"strong-wins-{i}",
            request={"messages": [{"role": "user", "content": f"question {MARK} {i}"}]},
            response={"text": f"plain answer {i}", "finish_reason": "stop"},
        )
        for i in range(4)
    ] + [
        decision(
            f"cheap-wins-{i}",
            request={"messages": [{"role": "user", "content": f"question {i}"}]},
            response={"text": f"{MARK} answer {i}", "finish_reason": "stop"},
        )
        for i in range(2)
    ]
    ingest(engine, settings, items)
    drain(engine, settings)
    stored = verdict_rows(engine)
    assert [row[1] for row in stored] == [VerdictStatus.DONE] * 6
    assert sorted(int(str(row[3])) for row in stored) == [0, 0, 1, 1, 1, 1]
    return settings


def verdict_rows(engine: Engine) -> list[tuple[object, ...]]:
    with Session(engine) as session:
        return [
            (v.id, v.status, v.outcome, v.strong_needed, v.judge_key, v.finished_at)
            for v in session.scalars(select(Verdict).order_by(Verdict.id))  # type: ignore[arg-type]
        ]


def run_rejudge(engine: Engine, settings: Settings, sample: int = 100) -> rejudge.RejudgeReport:
    async def run() -> rejudge.RejudgeReport:
        registry = build_provider_registry(settings)
        try:
            return await rejudge.rejudge(
                engine=engine,
                settings=settings,
                provider_for_model=registry.for_model,
                router=ROUTER,
                sample=sample,
                seed=1,
            )
        finally:
            await registry.aclose()

    return asyncio.run(run())


def test_the_configured_judge_is_never_compared_with_itself(
    engine: Engine, judged: Settings
) -> None:
    report = run_rejudge(engine, judged)
    assert report.pairs == []


def test_a_judge_that_labels_alike_agrees_with_the_stored_verdicts(
    engine: Engine, judged: Settings
) -> None:
    other = judged.model_copy(update={"judge_model": "claude-haiku-4-5"})
    report = run_rejudge(engine, other)
    figures = report.as_dict()
    assert (figures["sampled"], figures["compared"], figures["errors"]) == (6, 6, 0)
    assert figures["agreement_rate"] == 1.0
    assert figures["outcome_agreement_rate"] == 1.0
    # p_e = (4/6)² + (2/6)² = 5/9 < 1, so κ is defined: 1.
    assert figures["kappa"] == pytest.approx(1.0)
    assert figures["expected_agreement"] == pytest.approx(5 / 9)
    assert report.new_judge_key.startswith("claude-haiku-4-5#")
    assert all(key.startswith(f"{judged.judge_model}#") for key in report.stored_judge_keys)
    # One rubric for every segment here: the per-segment keys are the default one.
    assert set(report.new_judge_keys.values()) == {report.new_judge_key}


def test_the_sample_is_seeded_and_drawn_without_the_new_judges_pairs(
    engine: Engine, judged: Settings
) -> None:
    other = judged.model_copy(update={"judge_model": "claude-haiku-4-5"})
    first, _ = rejudge.sample_verdicts(engine, router=ROUTER, sample=3, seed=5, settings=other)
    again, _ = rejudge.sample_verdicts(engine, router=ROUTER, sample=3, seed=5, settings=other)
    assert [v.id for v in first] == [v.id for v in again]
    assert len(first) == 3
    everything, _ = rejudge.sample_verdicts(
        engine, router=ROUTER, sample=10, seed=5, settings=other
    )
    assert {v.id for v in first} < {v.id for v in everything}
    mine, _ = rejudge.sample_verdicts(engine, router=ROUTER, sample=10, seed=5, settings=judged)
    assert mine == []


def test_cli_reports_how_often_a_new_judge_agrees_and_writes_nothing(
    engine: Engine,
    judged: Settings,
    fake: FakeProviderServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = verdict_rows(engine)
    # The candidate judge prefers the stronger model's answer on every pair.
    fake.configure(judge_prefers=f"[{STRONG}]")
    env = {
        "SHADOWEVAL_DATABASE_URL": judged.resolved_database_url,
        "SHADOWEVAL_DATA_DIR": str(tmp_path),
        "SHADOWEVAL_ANTHROPIC_API_KEY": "test-anthropic-key",
        "SHADOWEVAL_ANTHROPIC_BASE_URL": fake.anthropic_url,
        "SHADOWEVAL_OPENAI_API_KEY": "test-openai-key",
        "SHADOWEVAL_OPENAI_BASE_URL": fake.openai_url,
        "SHADOWEVAL_JUDGE_MODEL": judged.judge_model,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            [
                "rejudge",
                "--router",
                ROUTER,
                "--sample",
                "6",
                "--judge-model",
                "claude-haiku-4-5",
                "--json",
            ],
        )
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["new_judge_key"].startswith("claude-haiku-4-5#")
    assert (figures["compared"], figures["errors"]) == (6, 0)
    # It agrees on the four pairs the stronger answer won, not on the two the cheaper won.
    assert figures["agreement_rate"] == pytest.approx(4 / 6)
    assert (figures["stored_strong_needed_rate"], figures["new_strong_needed_rate"]) == (
        pytest.approx(4 / 6),
        1.0,
    )
    # The new judge's labels are constant: p_e = p_o = 4/6, so κ = 0.
    assert figures["kappa"] == pytest.approx(0.0, abs=1e-12)
    assert "agreement on strong_needed: 66.7 %" in result.stdout
    assert "Cohen's kappa: 0.000" in result.stdout
    assert "re-judging" in result.stderr
    assert verdict_rows(engine) == before


def test_cli_fails_clearly_without_judged_pairs(
    engine: Engine, base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHADOWEVAL_DATABASE_URL", base_settings.resolved_database_url)
    monkeypatch.setenv("SHADOWEVAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHADOWEVAL_USE_SIMULATED_PROVIDER", "true")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["rejudge", "--router", "nobody", "--sample", "3"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "no judged pairs" in result.stderr
