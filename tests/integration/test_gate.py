"""The release gate end to end against the fake provider: CLI exit codes, the API with a
worker, and resuming a crashed run — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from shadoweval.cli import app as cli_app
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.gate import service as gate_service
from shadoweval.gate.models import GateCreate, GateItem, GateItemStatus, GateRun, GateStatus
from shadoweval.judge.prompts import build_judge_prompt
from shadoweval.providers.pricing import PricingTable
from shadoweval.providers.registry import build_provider_registry
from shadoweval.runtime.worker import WorkerRuntime, run_worker
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import Keys, LiveApi
from tests.integration.pipeline.conftest import CHEAP, ingest, pipeline_settings

CANDIDATE = "claude-opus-4-7"
ROUTER = "support-router"
SEGMENTS = ("billing", "math", "travel")
runner = CliRunner()


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
def settings(base_settings: Settings, fake: FakeProviderServer) -> Settings:
    # Nothing sampled for shadowing: the gate's calls are the only ones the fake sees.
    return pipeline_settings(
        base_settings,
        fake,
        sampling_rate_by_tier={"cheap": 0.0, "strong": 0.0},
        sampling_default_rate=0.0,
        circuit_failure_threshold=10_000,
        work_max_attempts=2,
    )


def prompt_for(segment: str, index: int) -> str:
    return f"{segment.upper()} question number {index} about {segment}"


def seed_decisions(
    engine: Engine,
    settings: Settings,
    *,
    per_segment: int = 12,
    with_response: bool = True,
    **changes: Any,
) -> None:
    items = []
    for segment in SEGMENTS:
        for index in range(per_segment):
            prompt = prompt_for(segment, index)
            item: dict[str, Any] = {
                "request_id": f"{segment}-{index}",
                "router": ROUTER,
                "tier": "cheap",
                "chosen_model": CHEAP,
                "ts": "2026-11-27T12:00:00Z",
                "segment": {"topic": segment},
                "request": {"messages": [{"role": "user", "content": prompt}]},
                "usage": {"input_tokens": 8, "output_tokens": 8},
                "cost_usd": 0.0001,
            }
            if with_response:
                # What the fake answers for this model: an equal candidate can match it.
                item["response"] = {"text": f"[{CHEAP}] answer: {prompt[:60]}"}
            item.update(changes)
            items.append(item)
    ingest(engine, settings, items)


def gate_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("shadoweval.cli_run.get_settings", lambda: settings)
    result = runner.invoke(cli_app, ["gate", *args])
    return result.exit_code, result.stdout, result.stderr


def base_args(**overrides: str) -> list[str]:
    values = {
        "--router": ROUTER,
        "--candidate": CANDIDATE,
        "--replace": CHEAP,
        "--sample": "36",
        "--max-drop": "0.25",
    }
    values.update(overrides)
    return [part for pair in values.items() for part in pair]


def calls_to(fake: FakeProviderServer, model: str) -> list[dict[str, Any]]:
    return [call for call in fake.calls()["calls"] if call["model"] == model]


def test_candidate_worse_in_one_segment_fails_and_names_it(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    seed_decisions(engine, settings)
    # The judge prefers the replaced model's answer to every math request.
    fake.configure(judge_prefers=f"[{CHEAP}] answer: MATH")
    report, junit = tmp_path / "gate.md", tmp_path / "gate.xml"
    code, out, err = gate_cli(
        settings, monkeypatch, *base_args(), "--report", str(report), "--junit", str(junit)
    )
    assert code == 100, (out, err)
    assert "failing segments: math" in out
    markdown = report.read_text()
    assert "Release gate FAILED" in markdown
    assert "- `math`: drop +1.000 is at or above the margin" in markdown
    assert "| `math` | 12 | 0 | 0 | 12 |" in markdown
    assert "MATH question number" in markdown  # the worst examples are math requests
    suite = ET.parse(junit).getroot()  # noqa: S314 (our own output).find("testsuite")
    assert suite is not None
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"segment billing", "segment math", "segment travel", "overall"}
    failure = cases["segment math"].find("failure")
    assert failure is not None
    assert "replaced_wins=12" in (failure.text or "")
    # The replaced model served every decision: its logged answers were reused, never re-bought.
    assert calls_to(fake, CHEAP) == []
    assert len(calls_to(fake, CANDIDATE)) == 36
    assert len(calls_to(fake, settings.judge_model)) == 72  # both orders of every pair


def test_equal_candidate_passes(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    seed_decisions(engine, settings)
    # The candidate answers exactly what the replaced model answered.
    fake.configure(model_aliases={CANDIDATE: CHEAP})
    junit = tmp_path / "gate.xml"
    code, out, err = gate_cli(settings, monkeypatch, *base_args(), "--junit", str(junit))
    assert code == 0, (out, err)
    assert out.startswith("gate PASSED")
    root = ET.parse(junit).getroot()  # noqa: S314 (our own output)
    assert root.get("failures") == "0"
    assert root.get("tests") == "4"
    with Session(engine) as session:
        run = session.exec(select(GateRun)).one()
    assert run.status == GateStatus.PASSED
    assert run.items_total == run.items_done == 36
    assert run.results is not None
    assert run.results["overall"]["drop"] == 0.0


def test_provider_outage_exits_1(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    seed_decisions(engine, settings, per_segment=2)
    fake.add_faults({"kind": "server_error", "count": None, "model": CANDIDATE})
    report = tmp_path / "gate.md"
    code, out, err = gate_cli(
        settings,
        monkeypatch,
        *base_args(**{"--sample": "6"}),
        "--allow-underpowered",
        "--report",
        str(report),
    )
    assert code == 1, (out, err)
    assert "6 of 6 replayed requests could not be judged (provider_failure)" in err
    assert "Release gate ERROR" in report.read_text()
    with Session(engine) as session:
        items = session.exec(select(GateItem)).all()
    assert {item.status for item in items} == {GateItemStatus.ERROR}
    # Each item was tried work_max_attempts times, each with the provider's own retries.
    assert {item.attempts for item in items} == {settings.work_max_attempts}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"--router": "nobody"}, "unknown router 'nobody'"),
        ({"--replace": "claude-sonnet-4-6"}, "never routed to 'claude-sonnet-4-6'"),
        ({"--candidate": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"--max-drop": "1.5"}, "--max-drop: Input should be less than 1"),
        ({"--segments": "math,cooking"}, "segment(s) cooking"),
    ],
)
def test_usage_errors_exit_2_before_anything_is_spent(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, str],
    message: str,
) -> None:
    seed_decisions(engine, settings, per_segment=1)
    code, out, err = gate_cli(settings, monkeypatch, *base_args(**overrides))
    assert code == 2, (out, err)
    assert message in err
    assert fake.calls()["count"] == 0
    with Session(engine) as session:
        assert session.exec(select(GateRun)).all() == []


def test_an_underpowered_sample_is_refused_before_anything_is_spent(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_decisions(engine, settings, per_segment=12)
    # 24 over 3 segments is 8 pairs each; all ties need 9 to pass a 0.25 margin at 0.05.
    code, out, err = gate_cli(settings, monkeypatch, *base_args(**{"--sample": "24"}))
    assert code == 2, (out, err)
    assert (
        "--sample 24 gives 8 pairs per segment over 3 segments; a pass at margin 0.25 needs "
        "at least 9 per segment: use --sample ≥ 27 or --allow-underpowered"
    ) in err
    assert fake.calls()["count"] == 0
    with Session(engine) as session:
        assert session.exec(select(GateRun)).all() == []


def test_the_gate_prints_what_a_pass_needs_and_its_cost_before_spending(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_decisions(engine, settings, per_segment=12)
    fake.configure(model_aliases={CANDIDATE: CHEAP})
    code, out, err = gate_cli(settings, monkeypatch, *base_args(**{"--sample": "27"}))
    assert code == 0, (out, err)
    assert "needs at least 9 pairs per segment even if every pair ties" in err
    # 27 pairs at the logged means (8 in, 8 out; every replaced answer reused): the
    # candidate's answer and two judge orders per pair, priced from the price table.
    assert "estimated cost $" in err
    assert "27 pairs ×" in err
    assert "100% of replaced answers reused" in err
    # The estimate precedes the first replay (the progress bar's label).
    assert err.index("estimated cost") < err.index("replaying and judging")
    with Session(engine) as session:
        run = session.exec(select(GateRun)).one()
    assert run.items_total == 27
    # Judge verdicts are counted at their max_tokens, so the estimate does not understate.
    estimate = float(err.split("estimated cost $", 1)[1].split(":", 1)[0])
    assert 0 < run.cost_usd <= estimate, (run.cost_usd, estimate)


def test_a_missing_option_is_a_usage_error(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = gate_cli(settings, monkeypatch, "--router", ROUTER, "--candidate", CANDIDATE)
    assert code == 2
    assert "Missing option" in err


def test_no_stored_requests_exits_1(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_decisions(engine, settings.model_copy(update={"store_payloads": "none"}), per_segment=2)
    code, out, err = gate_cli(settings, monkeypatch, *base_args(), "--allow-underpowered")
    assert code == 1, (out, err)
    assert "no replayable stored requests" in err
    assert fake.calls()["count"] == 0


def worker_passes(engine: Engine, settings: Settings, run_id: int, max_passes: int = 10) -> None:
    async def passes() -> None:
        registry = build_provider_registry(settings, strict_response_validation=True)
        pricing = PricingTable.from_settings(settings)
        runtime = WorkerRuntime(
            engine=engine,
            settings=settings,
            provider_for_model=registry.for_model,
            price_per_mtok=lambda model: None if pricing.lookup(model) is None else 1.0,
        )
        try:
            for _ in range(max_passes):
                await run_worker(runtime, once=True)
                with Session(engine) as session:
                    run = session.get(GateRun, run_id)
                    assert run is not None
                    if run.status not in (GateStatus.QUEUED, GateStatus.RUNNING):
                        return
        finally:
            await registry.aclose()

    asyncio.run(passes())


def test_post_gate_then_worker_runs_it_and_get_shows_the_report(
    live_api: LiveApi,
    keys: Keys,
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
) -> None:
    seed_decisions(engine, settings, per_segment=4)
    fake.configure(judge_prefers=f"[{CHEAP}] answer: MATH")
    body = {
        "router": ROUTER,
        "candidate": CANDIDATE,
        "replace": CHEAP,
        "sample": 12,
        "max_drop": 0.3,
        "segments": ["math", "billing"],
    }
    with live_api.client(keys.read) as reader:
        assert reader.post("/v1/gates", json=body).status_code == 403
    with live_api.client(keys.operate) as operator:
        refused = operator.post("/v1/gates", json={**body, "router": "nobody"})
        assert refused.status_code == 400
        assert refused.json()["field"] == "router"
        # Each segment holds 4 requests, where all ties need 7 to pass a 0.3 margin at 0.05:
        # no sample size can pass, and the refusal says which segments are short.
        underpowered = operator.post("/v1/gates", json=body)
        assert underpowered.status_code == 422, underpowered.text
        figures = underpowered.json()
        assert figures["code"] == "underpowered_gate"
        assert figures["field"] == "sample"
        assert (figures["pairs_per_segment"], figures["needed_per_segment"]) == (4, 7)
        assert figures["short_segments"] == ["billing", "math"]
        assert "allow_underpowered: true" in figures["detail"]
        accepted = operator.post("/v1/gates", json={**body, "allow_underpowered": True})
    assert accepted.status_code == 202, accepted.text
    gate_id = accepted.json()["id"]
    assert accepted.json()["status"] == "queued"

    worker_passes(engine, settings, gate_id)

    with live_api.client(keys.read) as reader:
        detail = reader.get(f"/v1/gates/{gate_id}")
        listing = reader.get("/v1/gates", params={"router": ROUTER})
    assert detail.status_code == 200
    gate = detail.json()
    assert gate["status"] == "failed"
    assert gate["items_total"] == 8  # both requested segments hold 4 requests each
    assert gate["requested_by"] is not None
    # Math fails on its drop; billing's 4 random verdicts may be too few to pass either.
    assert "math" in gate["results"]["failing_segments"]
    math = next(s for s in gate["results"]["segments"] if s["segment"] == "math")
    assert math["test"]["drop"] == 1.0
    assert "`math`" in gate["report_markdown"]
    assert "travel" not in gate["report_markdown"]
    assert gate["junit_xml"].startswith("<?xml")
    assert [item["id"] for item in listing.json()["items"]] == [gate_id]
    assert listing.json()["next_cursor"] is None


def test_items_are_judged_with_the_judge_and_prices_the_run_recorded(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    seed_decisions(engine, settings, per_segment=2)
    with Session(engine, expire_on_commit=False) as session:
        run = gate_service.create_gate(
            session=session,
            settings=settings,
            spec=GateCreate(
                router=ROUTER, candidate=CANDIDATE, replace=CHEAP, sample=6, max_drop=0.5
            ),
            knows_model=lambda model: True,
        )
    assert run.id is not None
    assert run.judge is not None
    assert run.judge["judge_model"] == settings.judge_model
    assert run.judge["prompt_hash"] == build_judge_prompt(settings.judge_rubric).prompt_hash
    assert set(run.judge["prices"]) == {CANDIDATE, CHEAP, settings.judge_model}
    # A worker configured with another judge (the candidate itself) and a rubric of its own.
    worker_settings = settings.model_copy(
        update={"judge_model": CANDIDATE, "judge_rubric": "Prefer the shorter answer."}
    )
    worker_passes(engine, worker_settings, run.id)
    with Session(engine) as session:
        finished = session.get(GateRun, run.id)
        assert finished is not None
        assert finished.items_done == 6
    # Six replays on the candidate and both orders of six pairs on the recorded judge;
    # the worker's judge would have sent those 12 judge calls to the candidate too.
    assert len(calls_to(fake, CANDIDATE)) == 6
    assert len(calls_to(fake, settings.judge_model)) == 12


def test_answers_are_charged_at_the_prices_the_run_recorded(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    # Logged answers are not reused: every item buys the candidate's and the replaced
    # model's answers, and both are charged at the run's prices, not the worker's.
    seed_decisions(engine, settings, per_segment=2, with_response=False)
    with Session(engine, expire_on_commit=False) as session:
        run = gate_service.create_gate(
            session=session,
            settings=settings,
            spec=GateCreate(
                router=ROUTER, candidate=CANDIDATE, replace=CHEAP, sample=6, max_drop=0.5
            ),
            knows_model=lambda model: True,
        )
    assert run.id is not None
    assert run.judge is not None
    recorded = run.judge["prices"]
    # A worker whose table prices both models at $1 a token.
    dear = {"input": 1e6, "output": 1e6}
    worker_settings = settings.model_copy(
        update={"pricing_overrides": {CANDIDATE: dear, CHEAP: dear}}
    )
    worker_passes(engine, worker_settings, run.id)
    with Session(engine) as session:
        items = session.exec(select(GateItem).where(GateItem.gate_run_id == run.id)).all()
    assert [i.status for i in items] == [GateItemStatus.DONE] * 6
    # An answer of n tokens costs n dollars at the worker's price and at most a few cents
    # at the recorded one (a fake answer is well under 10,000 tokens).
    most_per_answer = 10_000 * max(recorded[CANDIDATE]["output"], recorded[CHEAP]["output"]) / 1e6
    for item in items:
        assert 0 < item.candidate_cost_usd <= most_per_answer
        assert 0 < item.replaced_cost_usd <= most_per_answer


def test_a_crashed_run_resumes_without_repeating_finished_items(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    # No logged answers: each item needs a call to the replaced model as well.
    seed_decisions(engine, settings, per_segment=2, with_response=False)
    with Session(engine, expire_on_commit=False) as session:
        run = gate_service.create_gate(
            session=session,
            settings=settings,
            spec=GateCreate(
                router=ROUTER, candidate=CANDIDATE, replace=CHEAP, sample=6, max_drop=0.5
            ),
            knows_model=lambda model: True,
        )
    assert run.id is not None
    run_id = run.id

    async def partial() -> None:
        registry = build_provider_registry(settings)
        try:
            assert gate_service.plan_due_runs(engine, owner="w1", settings=settings) == 1
            # Four items finish; then a worker dies holding a fifth after its candidate call.
            await gate_service.process_due_items(
                engine=engine,
                provider_for_model=registry.for_model,
                settings=settings,
                owner="w1",
                limit=4,
            )
        finally:
            await registry.aclose()

    asyncio.run(partial())
    with Session(engine) as session:
        open_ids = [
            item.id
            for item in session.exec(
                select(GateItem).where(GateItem.status == GateItemStatus.QUEUED)
            )
        ]
    assert len(open_ids) == 2
    crashed = open_ids[0]
    with engine.begin() as connection:
        connection.execute(
            update(gate_service.ITEM_TABLE)
            .where(gate_service.ITEM_TABLE.c.id == crashed)
            .values(
                status=GateItemStatus.RUNNING,
                attempts=1,
                lease_owner="dead-worker",
                lease_until=utcnow() - timedelta(seconds=1),
                candidate_answer="answer bought before the crash",
                candidate_cost_usd=0.001,
            )
        )
    fake.reset()

    worker_passes(engine, settings, run_id)

    with Session(engine) as session:
        finished = session.get(GateRun, run_id)
        items = session.exec(select(GateItem)).all()
    assert finished is not None
    assert finished.status in (GateStatus.PASSED, GateStatus.FAILED)
    assert finished.items_done == 6
    assert {item.status for item in items} == {GateItemStatus.DONE}
    resumed = next(item for item in items if item.id == crashed)
    assert resumed.attempts == 2
    assert resumed.candidate_answer == "answer bought before the crash"
    # Only the two unfinished items cost anything again, and the crashed one kept its answer.
    assert len(calls_to(fake, CANDIDATE)) == 1
    assert len(calls_to(fake, CHEAP)) == 2
    assert len(calls_to(fake, settings.judge_model)) == 4


def test_a_run_never_starts_a_request_it_cannot_pay_for(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_decisions(engine, settings, per_segment=2)
    code, out, err = gate_cli(
        settings,
        monkeypatch,
        *base_args(**{"--sample": "6"}),
        "--allow-underpowered",
        "--max-cost-usd",
        "0.000000001",
    )
    assert code == 1, (out, err)
    assert "6 of 6 replayed requests could not be judged (budget_exhausted)" in err
    assert calls_to(fake, CANDIDATE) == []
    with Session(engine) as session:
        run = session.exec(select(GateRun)).one()
    assert run.max_cost_usd == pytest.approx(1e-9)
    assert (run.cost_usd, run.reserved_usd) == (0, 0)


def test_concurrent_items_reserve_their_cost_and_stay_within_the_cap(
    engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_decisions(engine, settings, per_segment=2)
    all_at_once = settings.model_copy(update={"worker_batch_size": 6})
    gate_cli(
        all_at_once,
        monkeypatch,
        *base_args(**{"--sample": "6"}),
        "--allow-underpowered",
        "--max-cost-usd",
        "1000",
    )
    with Session(engine) as session:
        first = session.exec(select(GateRun)).one()
        estimates = [i.reserved_usd for i in session.exec(select(GateItem))]
    assert all(e > 0 for e in estimates)
    # Room for two requests' worst case at a time: the others wait for theirs to settle.
    cap = 2.5 * max(estimates)
    fake.reset()
    _, out, err = gate_cli(
        all_at_once,
        monkeypatch,
        *base_args(**{"--sample": "6"}),
        "--allow-underpowered",
        "--max-cost-usd",
        str(cap),
    )
    with Session(engine) as session:
        run = session.exec(select(GateRun).where(GateRun.id != first.id)).one()
    assert (run.items_done, run.items_error) == (6, 0), (out, err)
    assert run.cost_usd <= cap
    assert run.reserved_usd == pytest.approx(0, abs=1e-12)
    assert len(calls_to(fake, CANDIDATE)) == 6


def planned_sample(engine: Engine, settings: Settings, seed: int) -> list[tuple[str, str]]:
    with Session(engine) as session:
        run = gate_service.create_gate(
            session=session,
            settings=settings,
            spec=GateCreate(
                router=ROUTER, candidate=CANDIDATE, replace=CHEAP, sample=7, max_drop=0.1, seed=seed
            ),
            knows_model=lambda model: True,
        )
        run_id = run.id
    assert gate_service.plan_due_runs(engine, owner="planner", settings=settings) == 1
    with Session(engine) as session:
        items = session.exec(select(GateItem).where(GateItem.gate_run_id == run_id)).all()
    return sorted((item.segment_value, item.request_id) for item in items)


def test_the_stratified_sample_is_drawn_in_the_database_and_seeded(
    engine: Engine, settings: Settings
) -> None:
    seed_decisions(engine, settings, per_segment=12)
    first = planned_sample(engine, settings, seed=4)
    # 7 over three segments of 12: 3, 2, 2 (the remainder goes to the first by name).
    counts = {s: sum(1 for seg, _ in first if seg == s) for s in SEGMENTS}
    assert sorted(counts.values()) == [2, 2, 3]
    assert planned_sample(engine, settings, seed=4) == first
    assert planned_sample(engine, settings, seed=5) != first
