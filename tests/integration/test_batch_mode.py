"""Batch mode end to end against the fake provider's batch APIs, on both providers and both
databases: shadow runs and judge calls go through batches at the batch price, items that
error or expire are retried in the next batch (or recorded as failed), and a submission
interrupted after the provider created the batch is adopted, never created twice."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.providers.base import as_batch_provider
from shadoweval.providers.pricing import PricingTable
from shadoweval.providers.registry import build_provider_registry
from shadoweval.shadow import batch as batch_service
from shadoweval.shadow import service as shadow_service
from shadoweval.shadow.models import (
    BATCH_HOLD,
    BatchState,
    ProviderBatch,
    ShadowMode,
    ShadowRun,
    WorkStatus,
)
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import decision
from tests.integration.pipeline.conftest import drain, ingest, pipeline_settings

# (cheap, strong, judge) per provider; every model is served by that provider's batch API.
MODELS = {
    "anthropic": ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"),
    "openai": ("gpt-4o-mini", "gpt-4o", "gpt-5"),
}
BATCH_ROUTER = "support-router"


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


def batch_settings(base: Settings, fake: FakeProviderServer, api: str, **changes: Any) -> Settings:
    cheap, strong, judge = MODELS[api]
    values: dict[str, Any] = {
        "tier_models": {"*": {"cheap": cheap, "strong": strong}},
        "judge_model": judge,
        # Batch for one router through the override; the global default stays realtime.
        "shadow_mode": "realtime",
        "shadow_mode_by_router": {BATCH_ROUTER: "batch"},
        "batch_max_age_seconds": 0.0,
        "batch_poll_interval_seconds": 0.01,
    }
    values.update(changes)
    return pipeline_settings(base, fake, **values)


def items(api: str, ids: list[str], router: str = BATCH_ROUTER) -> list[dict[str, Any]]:
    cheap = MODELS[api][0]
    return [decision(i, router=router, chosen_model=cheap) for i in ids]


def realtime_calls(fake: FakeProviderServer) -> list[dict[str, Any]]:
    return [c for c in fake.calls()["calls"] if c["path"] != "batch"]


def rows(engine: Engine, model: type[Any]) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model)).all())


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_batch_mode_runs_shadows_and_judge_calls_through_batches_at_batch_price(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api)
    ingest(engine, settings, items(api, [f"b-{i}" for i in range(5)]))
    ingest(engine, settings, items(api, ["rt-0"], router="other-router"))

    drain(engine, settings)

    verdicts = {v.request_id: v for v in rows(engine, Verdict)}
    expected = [*(f"b-{i}" for i in range(5)), "rt-0"]
    assert {rid: v.status for rid, v in verdicts.items()} == dict.fromkeys(
        expected, VerdictStatus.DONE
    )
    runs = {r.decision_id: r for r in rows(engine, ShadowRun)}
    by_request = {v.request_id: runs[v.decision_id] for v in verdicts.values()}
    assert all(run.status == WorkStatus.SUCCEEDED for run in runs.values())
    assert by_request["rt-0"].mode == ShadowMode.REALTIME
    assert {by_request[f"b-{i}"].mode for i in range(5)} == {ShadowMode.BATCH}

    # One shadow batch and one judge batch, each created exactly once at the provider.
    batches = rows(engine, ProviderBatch)
    assert sorted((b.kind, b.item_count, b.state) for b in batches) == [
        ("judge", 10, BatchState.COLLECTED),
        ("shadow", 5, BatchState.COLLECTED),
    ]
    assert fake.batches()["creates"] == len(batches) == 2
    assert {b.provider for b in batches} == {api}
    # Only the realtime router's shadow call and its two judge orders went realtime.
    assert len(realtime_calls(fake)) == 3

    judge_batch = next(b for b in batches if b.kind == "judge")
    pricing = PricingTable.from_settings(settings)
    strong, judge = MODELS[api][1], MODELS[api][2]
    for i in range(5):
        run = by_request[f"b-{i}"]
        assert run.latency_ms is None
        assert run.batch_id == next(b.id for b in batches if b.kind == "shadow")
        assert run.input_tokens is not None
        assert run.output_tokens is not None
        full = pricing.cost_usd(strong, run.input_tokens, run.output_tokens)
        assert run.cost_usd == pytest.approx(full * 0.5)
        verdict = verdicts[f"b-{i}"]
        orders = [verdict.order_cheaper_first, verdict.order_stronger_first]
        assert all(o is not None and o["winner"] in ("A", "B", "tie") for o in orders)
        assert {o["batch"] for o in orders if o is not None} == {judge_batch.tag}
        judge_full = sum(
            pricing.cost_usd(judge, o["input_tokens"], o["output_tokens"], o["cache_read_tokens"])
            for o in orders
            if o is not None
        )
        assert verdict.judge_cost_usd == pytest.approx(judge_full * 0.5)
        assert verdict.outcome is not None
    shadow_batch = next(b for b in batches if b.kind == "shadow")
    assert shadow_batch.cost_usd == pytest.approx(
        sum(by_request[f"b-{i}"].cost_usd for i in range(5))
    )
    assert shadow_batch.provider_batch_id
    assert shadow_batch.counts == {"succeeded": 5}


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_errored_and_expired_items_are_retried_in_the_next_batch_then_recorded(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api, work_max_attempts=3)
    fake.configure(
        batch_item_faults=[
            {"result": "errored", "prompt_contains": "question e-1", "count": 1},
            {"result": "expired", "prompt_contains": "question e-2", "count": 1},
            {"result": "canceled", "prompt_contains": "question e-3", "count": 1},
            # Only judge prompts carry the routed answer: one judge order expires once.
            {"result": "expired", "prompt_contains": "answer e-4", "count": 1},
            # Always errors: recorded as failed after work_max_attempts batches.
            {"result": "errored", "prompt_contains": "question e-5", "count": None},
        ]
    )
    ingest(engine, settings, items(api, [f"e-{i}" for i in range(6)]))

    drain(engine, settings, max_passes=15)

    verdicts = {v.request_id: v for v in rows(engine, Verdict)}
    runs = {r.decision_id: r for r in rows(engine, ShadowRun)}
    run_of = {rid: runs[v.decision_id] for rid, v in verdicts.items()}
    for rid in ("e-0", "e-1", "e-2", "e-3", "e-4"):
        assert verdicts[rid].status == VerdictStatus.DONE, (rid, verdicts[rid].error_detail)
    for rid in ("e-1", "e-2", "e-3"):
        assert run_of[rid].attempts == 2
        assert run_of[rid].status == WorkStatus.SUCCEEDED
    assert run_of["e-0"].attempts == 1
    assert verdicts["e-0"].attempts == 1
    assert verdicts["e-4"].attempts == 2  # the expired order went into a second judge batch
    failed = run_of["e-5"]
    assert (failed.status, failed.attempts, failed.failure_reason) == (
        WorkStatus.FAILED,
        3,
        "server_error",
    )
    assert (verdicts["e-5"].status, verdicts["e-5"].skip_reason) == (
        VerdictStatus.SKIPPED,
        "provider_failure",
    )
    batches = rows(engine, ProviderBatch)
    assert all(b.state == BatchState.COLLECTED for b in batches)
    assert fake.batches()["creates"] == len(batches)
    assert realtime_calls(fake) == []
    # Every custom_id the provider saw was answered once per batch it was in.
    answered = [c["custom_id"] for c in fake.calls()["calls"] if c["path"] == "batch"]
    assert len(answered) == len(set(answered)) == sum(b.item_count for b in batches)


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_submission_interrupted_after_the_create_call_is_adopted_not_resubmitted(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api)
    ingest(engine, settings, items(api, [f"c-{i}" for i in range(3)]))
    with Session(engine) as session:
        shadow_service.enqueue_sampled_decisions(
            session=session, settings=settings, price_per_mtok=lambda model: 1.0
        )
    held = rows(engine, ShadowRun)
    assert {(r.status, r.next_attempt_at) for r in held} == {(WorkStatus.QUEUED, BATCH_HOLD)}

    async def crash_after_create() -> None:
        registry = build_provider_registry(settings, strict_response_validation=True)
        try:
            provider = as_batch_provider(registry.for_model(MODELS[api][1]))
            assert provider is not None
            batch_id = batch_service.form_batch(
                engine,
                kind="shadow",
                provider=provider.name,
                model=MODELS[api][1],
                limit=100,
                owner="doomed-worker",
                lease_seconds=600,
                now=utcnow(),
            )
            assert batch_id is not None
            batch = batch_service._load_batch(engine, batch_id)
            requests, _ = batch_service.prepare_requests(engine, batch, settings)
            # The provider created the batch; the worker died before storing its id.
            await provider.submit_batch(requests=requests, tag=batch.tag)
        finally:
            await registry.aclose()

    asyncio.run(crash_after_create())
    assert fake.batches()["creates"] == 1
    # Its lease runs out; the next worker reconciles instead of submitting again.
    with engine.begin() as connection:
        connection.execute(
            update(batch_service.BATCH_TABLE).values(lease_until=utcnow() - timedelta(seconds=1))
        )

    drain(engine, settings)

    assert {v.status for v in rows(engine, Verdict)} == {VerdictStatus.DONE}
    batches = rows(engine, ProviderBatch)
    assert sorted(b.kind for b in batches) == ["judge", "shadow"]
    assert fake.batches()["creates"] == 2  # the shadow batch once, the judge batch once
    shadow_calls = [c for c in fake.calls()["calls"] if c["model"] == MODELS[api][1]]
    assert len(shadow_calls) == 3


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_an_unusable_judge_answer_gets_one_more_batch_then_the_verdict_is_an_error(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api)
    # Only the judge sees the routed answer, so only judge calls are refused.
    refused = decision("u-0", router=BATCH_ROUTER, chosen_model=MODELS[api][0])
    refused["response"] = {"text": "answer FAULT:refusal", "finish_reason": "stop"}
    ingest(engine, settings, [refused, *items(api, ["u-1"])])

    drain(engine, settings)

    verdicts = {v.request_id: v for v in rows(engine, Verdict)}
    assert verdicts["u-1"].status == VerdictStatus.DONE
    error = verdicts["u-0"]
    assert error.status == VerdictStatus.ERROR
    assert error.attempts == 2
    assert error.error_detail is not None
    assert "refused" in error.error_detail
    orders = [error.order_cheaper_first, error.order_stronger_first]
    assert [o["attempts"] if o else None for o in orders] == [2, 2]
    judge_batches = [b for b in rows(engine, ProviderBatch) if b.kind == "judge"]
    assert sorted(b.item_count for b in judge_batches) == [2, 4]
    assert fake.batches()["creates"] == len(rows(engine, ProviderBatch))


def test_batch_mode_without_a_provider_key_fails_the_items_like_realtime_would(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    settings = batch_settings(base_settings, fake, "openai", openai_api_key=None)
    ingest(engine, settings, items("openai", ["k-0", "k-1"]))

    drain(engine, settings)

    runs = rows(engine, ShadowRun)
    assert {(r.status, r.failure_reason, r.attempts) for r in runs} == {
        (WorkStatus.FAILED, "authentication", 1)
    }
    verdicts = rows(engine, Verdict)
    assert {(v.status, v.skip_reason) for v in verdicts} == {
        (VerdictStatus.SKIPPED, "provider_failure")
    }
    [failed] = rows(engine, ProviderBatch)
    assert failed.state == BatchState.FAILED
    assert failed.error_detail is not None
    assert "SHADOWEVAL_OPENAI_API_KEY" in failed.error_detail
    assert fake.batches()["creates"] == 0


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_batch_the_provider_lost_is_failed_and_its_items_go_into_a_new_batch(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api)
    ingest(engine, settings, items(api, ["l-0", "l-1"]))
    with Session(engine) as session:
        shadow_service.enqueue_sampled_decisions(
            session=session, settings=settings, price_per_mtok=lambda model: 1.0
        )

    async def submit_once() -> None:
        registry = build_provider_registry(settings, strict_response_validation=True)
        try:
            await batch_service.submit_due_batches(
                engine=engine, settings=settings, provider_for_model=registry.for_model, owner="w"
            )
        finally:
            await registry.aclose()

    asyncio.run(submit_once())
    [lost] = rows(engine, ProviderBatch)
    assert lost.state == BatchState.SUBMITTED
    fake.state.batches.clear()  # the provider no longer knows it: 404 on the next poll

    drain(engine, settings)

    assert {v.status for v in rows(engine, Verdict)} == {VerdictStatus.DONE}
    with Session(engine) as session:
        failed = session.get(ProviderBatch, lost.id)
    assert failed is not None
    assert failed.state == BatchState.FAILED
    assert {(r.status, r.attempts) for r in rows(engine, ShadowRun)} == {(WorkStatus.SUCCEEDED, 2)}
    states = sorted((b.kind, b.state) for b in rows(engine, ProviderBatch))
    assert states == [
        ("judge", BatchState.COLLECTED),
        ("shadow", BatchState.COLLECTED),
        ("shadow", BatchState.FAILED),
    ]


# --- review fixes: wrong adoption, lost lease, judge labels -----------------------------------


async def with_registry(settings: Settings, step: Any) -> Any:
    """Run `step(provider_for_model)` with a provider registry over the fake."""
    registry = build_provider_registry(settings, strict_response_validation=True)
    try:
        return await step(registry.for_model)
    finally:
        await registry.aclose()


def held_runs(engine: Engine, settings: Settings, api: str, ids: list[str]) -> None:
    ingest(engine, settings, items(api, ids))
    with Session(engine) as session:
        shadow_service.enqueue_sampled_decisions(
            session=session, settings=settings, price_per_mtok=lambda model: 1.0
        )


def form_doomed_batch(engine: Engine, api: str) -> int:
    """A shadow batch row formed by a worker that died before its create call, lease expired."""
    batch_id = batch_service.form_batch(
        engine,
        kind="shadow",
        provider=api,
        model=MODELS[api][1],
        limit=100,
        owner="doomed-worker",
        lease_seconds=600,
        now=utcnow() - timedelta(seconds=601),
    )
    assert batch_id is not None
    return batch_id


@pytest.mark.parametrize("foreign_ended", [False, True])
def test_a_stuck_anthropic_batch_never_keeps_another_deployments_batch_of_its_size(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, foreign_ended: bool
) -> None:
    api = "anthropic"
    settings = batch_settings(base_settings, fake, api)
    held_runs(engine, settings, api, [f"f-{i}" for i in range(3)])
    row_id = form_doomed_batch(engine, api)
    ours = batch_service._load_batch(engine, row_id)
    requests, _ = batch_service.prepare_requests(engine, ours, settings)
    # Another deployment's batch: same size, same minute, its own custom_ids.
    foreign_requests = [replace(r, custom_id=f"other-{n}") for n, r in enumerate(requests)]
    fake.configure(batch_delay_s=0 if foreign_ended else 3600)

    async def create_foreign(provider_for_model: Any) -> str:
        provider = as_batch_provider(provider_for_model(MODELS[api][1]))
        assert provider is not None
        created = await provider.submit_batch(requests=foreign_requests, tag="other-deployment")
        assert (await provider.batch_state(created)).ended is foreign_ended
        return created

    foreign_id = asyncio.run(with_registry(settings, create_foreign))

    async def reconcile(provider_for_model: Any) -> dict[str, int]:
        return await batch_service.submit_due_batches(
            engine=engine, settings=settings, provider_for_model=provider_for_model, owner="w"
        )

    asyncio.run(with_registry(settings, reconcile))
    fake.configure(batch_delay_s=0)  # everything in progress ends now

    drain(engine, settings)

    assert {v.status for v in rows(engine, Verdict)} == {VerdictStatus.DONE}
    with Session(engine) as session:
        row = session.get(ProviderBatch, row_id)
    assert row is not None
    assert (row.state, row.counts) == (BatchState.COLLECTED, {"succeeded": 3})
    assert row.provider_batch_id != foreign_id
    assert all(b.provider_batch_id != foreign_id for b in rows(engine, ProviderBatch))
    # In progress it could only be recognised by its custom_ids once ended.
    assert row.rejected_provider_ids == (None if foreign_ended else [foreign_id])
    assert {r.attempts for r in rows(engine, ShadowRun)} == {1}


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_submission_whose_lease_was_taken_over_still_records_its_batch(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api)
    held_runs(engine, settings, api, ["t-0", "t-1"])
    row_id = form_doomed_batch(engine, api)
    # A slow submitter: another worker claimed the row as stuck before the create returned.
    assert batch_service.claim_batches(
        engine, state="submitting", owner="other", lease_seconds=600, now=utcnow(), limit=5
    ) == [row_id]

    async def submit(provider_for_model: Any) -> str:
        return await batch_service.submit_batch(
            engine=engine,
            settings=settings,
            provider_for_model=provider_for_model,
            batch_id=row_id,
            owner="doomed-worker",
            reconcile=False,
        )

    assert asyncio.run(with_registry(settings, submit)) == BatchState.SUBMITTED
    [created] = fake.batches()["batches"]
    row = batch_service._load_batch(engine, row_id)
    assert (row.state, row.provider_batch_id) == (BatchState.SUBMITTED, created["id"])

    # The other worker, resuming, finds the row settled and sends nothing.
    drain(engine, settings)
    assert {v.status for v in rows(engine, Verdict)} == {VerdictStatus.DONE}
    assert fake.batches()["creates"] == 2  # the shadow batch once, the judge batch once


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_duplicate_created_after_the_row_recorded_another_batch_is_cancelled(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api)
    fake.configure(batch_delay_s=3600)
    held_runs(engine, settings, api, ["d-0", "d-1"])
    row_id = form_doomed_batch(engine, api)

    async def submit(owner: str, provider_for_model: Any) -> str:
        return await batch_service.submit_batch(
            engine=engine,
            settings=settings,
            provider_for_model=provider_for_model,
            batch_id=row_id,
            owner=owner,
            reconcile=False,
        )

    # Worker "other" took the row over and submitted it; the slow worker's create returns last.
    batch_service.claim_batches(
        engine, state="submitting", owner="other", lease_seconds=600, now=utcnow(), limit=5
    )
    asyncio.run(with_registry(settings, functools.partial(submit, "other")))
    recorded = batch_service._load_batch(engine, row_id).provider_batch_id
    asyncio.run(with_registry(settings, functools.partial(submit, "doomed-worker")))

    assert batch_service._load_batch(engine, row_id).provider_batch_id == recorded
    duplicate = next(b for b in fake.batches()["batches"] if b["id"] != recorded)
    assert duplicate["ended"]  # cancelled: nothing more is processed or billed
    assert not next(b for b in fake.batches()["batches"] if b["id"] == recorded)["ended"]


def test_per_batch_leases_are_taken_when_each_batch_is_formed(
    engine: Engine,
    base_settings: Settings,
    fake: FakeProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = "openai"
    settings = batch_settings(base_settings, fake, api, batch_max_items=1)
    held_runs(engine, settings, api, ["p-0", "p-1", "p-2"])
    start = utcnow()
    ticks = iter(range(1000))
    # Every clock reading is an hour later: a long pass, without waiting for one.
    monkeypatch.setattr(batch_service, "utcnow", lambda: start + timedelta(hours=next(ticks)))

    async def submit(provider_for_model: Any) -> dict[str, int]:
        return await batch_service.submit_due_batches(
            engine=engine, settings=settings, provider_for_model=provider_for_model, owner="w"
        )

    assert asyncio.run(with_registry(settings, submit)) == {"shadow_submitted": 3}
    formed = sorted(b.created_at for b in rows(engine, ProviderBatch))
    assert len(set(formed)) == 3  # each lease starts when its batch is formed


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_batch_verdict_is_labelled_with_the_judge_its_requests_went_to(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api)
    held_runs(engine, settings, api, ["j-0"])

    async def until_judge_batch_submitted(provider_for_model: Any) -> None:
        submit, poll = batch_service.submit_due_batches, batch_service.poll_batches
        for job in (submit, poll, submit):  # the shadow batch, then the judge batch
            await job(
                engine=engine, settings=settings, provider_for_model=provider_for_model, owner="w"
            )

    asyncio.run(with_registry(settings, until_judge_batch_submitted))
    judge_batch = next(b for b in rows(engine, ProviderBatch) if b.kind == "judge")
    assert judge_batch.state == BatchState.SUBMITTED
    # The judge is changed while the batch is out; its answers are still the old judge's.
    changed = settings.model_copy(update={"judge_model": MODELS[api][0]})

    drain(engine, changed)

    [verdict] = rows(engine, Verdict)
    assert verdict.status == VerdictStatus.DONE
    assert verdict.judge_model == MODELS[api][2]
    assert verdict.judge_key is not None
    assert verdict.judge_key.startswith(f"{MODELS[api][2]}#")
    orders = [verdict.order_cheaper_first, verdict.order_stronger_first]
    assert {o["judge_model"] for o in orders if o} == {MODELS[api][2]}


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_orders_answered_by_two_judges_are_never_combined_into_one_verdict(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer, api: str
) -> None:
    settings = batch_settings(base_settings, fake, api, work_max_attempts=5)
    # One order of the pair expires in the first judge batch; the other is answered.
    fake.configure(batch_item_faults=[{"result": "expired", "prompt_contains": "answer m-0"}])
    held_runs(engine, settings, api, ["m-0"])

    async def first_judge_batch(provider_for_model: Any) -> None:
        for job in (batch_service.submit_due_batches, batch_service.poll_batches) * 2:
            await job(
                engine=engine, settings=settings, provider_for_model=provider_for_model, owner="w"
            )

    asyncio.run(with_registry(settings, first_judge_batch))
    [half] = rows(engine, Verdict)
    answered = [o for o in (half.order_cheaper_first, half.order_stronger_first) if o]
    assert [o["judge_model"] for o in answered if o.get("winner")] == [MODELS[api][2]]
    new_judge = MODELS[api][0]

    drain(engine, settings.model_copy(update={"judge_model": new_judge}))

    [verdict] = rows(engine, Verdict)
    assert verdict.status == VerdictStatus.DONE
    assert verdict.judge_model == new_judge
    orders = [verdict.order_cheaper_first, verdict.order_stronger_first]
    assert [o["judge_model"] if o else None for o in orders] == [new_judge, new_judge]
    # The old judge's order was asked again of the new judge, in a later batch.
    judge_calls = [c for c in fake.calls()["calls"] if c["model"] == new_judge]
    assert len(judge_calls) == 2


def test_realtime_judging_also_asks_again_an_order_another_judge_answered(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    api = "anthropic"
    settings = batch_settings(base_settings, fake, api)
    ingest(engine, settings, items(api, ["rt-j"], router="other-router"))
    drain(engine, settings)
    [done] = rows(engine, Verdict)
    assert done.order_cheaper_first is not None
    assert done.order_cheaper_first["judge_model"] == MODELS[api][2]
    # As after a crash with one order answered: the other is still to be asked.
    with engine.begin() as connection:
        connection.execute(
            update(batch_service.VERDICT_TABLE).values(
                status=VerdictStatus.QUEUED, order_stronger_first=None, next_attempt_at=utcnow()
            )
        )
    new_judge = MODELS[api][0]

    drain(engine, settings.model_copy(update={"judge_model": new_judge}))

    [verdict] = rows(engine, Verdict)
    assert (verdict.status, verdict.judge_model) == (VerdictStatus.DONE, new_judge)
    orders = [verdict.order_cheaper_first, verdict.order_stronger_first]
    assert [o["judge_model"] if o else None for o in orders] == [new_judge, new_judge]
    assert len([c for c in fake.calls()["calls"] if c["model"] == new_judge]) == 2
