"""The shadow → judge pipeline over the real SDKs against the fake provider, on both databases."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shadoweval.config import Settings
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.providers.pricing import PricingTable
from shadoweval.runtime.models import WorkerHeartbeat
from shadoweval.shadow.models import RunKind, ShadowRun, WorkStatus
from shadoweval.testing.fake_provider import FakeProviderServer
from tests.conftest import decision
from tests.integration.pipeline.conftest import (
    CHEAP,
    JUDGE,
    STRONG,
    drain,
    ingest,
    pipeline_settings,
)


def verdicts(engine: Engine) -> list[Verdict]:
    with Session(engine) as session:
        return list(session.exec(select(Verdict).order_by(Verdict.request_id)))  # type: ignore[arg-type]


def runs(engine: Engine) -> list[ShadowRun]:
    with Session(engine) as session:
        return list(session.exec(select(ShadowRun).order_by(ShadowRun.id)))  # type: ignore[arg-type]


def judge_calls(fake: FakeProviderServer) -> list[dict[str, Any]]:
    return [c for c in fake.calls()["calls"] if c["model"] == JUDGE]


def test_cheap_routed_pairs_are_shadowed_and_judged_in_both_orders(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    fake.configure(judge_prefers=f"[{STRONG}]")  # the stronger answer wins wherever it stands
    ingest(engine, settings, [decision(f"fw-{i}") for i in range(3)])

    runtime = drain(engine, settings)

    done = verdicts(engine)
    assert [v.status for v in done] == [VerdictStatus.DONE] * 3
    for verdict in done:
        assert verdict.direction == "forward"
        assert (verdict.cheaper_model, verdict.stronger_model) == (CHEAP, STRONG)
        assert verdict.outcome == Outcome.STRONGER_WINS
        assert (verdict.strong_needed, verdict.cheap_acceptable, verdict.consistent) == (1, 0, True)
        assert verdict.order_cheaper_first is not None
        assert verdict.order_stronger_first is not None
        assert verdict.order_cheaper_first["winner"] == "B"
        assert verdict.order_stronger_first["winner"] == "A"
        assert verdict.score_delta == 5.0
        assert verdict.judge_model == JUDGE
        assert len(verdict.prompt_hash) == 16
    # One shadow call per decision (routed answers were logged), on the strong model.
    shadow_runs = runs(engine)
    assert [(r.kind, r.target_model, r.status) for r in shadow_runs] == [
        (RunKind.SHADOW, STRONG, WorkStatus.SUCCEEDED)
    ] * 3
    # Two judge calls per pair, with the answers swapped between them.
    calls = judge_calls(fake)
    assert len(calls) == 6
    prompts = [c["body"]["messages"][-1]["content"] for c in calls]
    for request_id in ("fw-0", "fw-1", "fw-2"):
        mine = [p for p in prompts if f"answer {request_id}" in p]
        assert len(mine) == 2
        a_first = [p.index(f"answer {request_id}") < p.index(f"[{STRONG}]") for p in mine]
        assert sorted(a_first) == [False, True]
    # Worker bookkeeping.
    with Session(engine) as session:
        beat = session.get(WorkerHeartbeat, runtime.worker_id)
    assert beat is not None
    assert beat.is_leader
    assert beat.jobs["judge_pairs"]["failures"] == 0


def test_costs_are_the_pricing_table_applied_to_the_token_counts(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    ingest(engine, settings, [decision("cost-1")])
    drain(engine, settings)
    pricing = PricingTable.from_settings(settings)
    (run,) = runs(engine)
    assert run.input_tokens
    assert run.output_tokens
    assert run.cost_usd == pytest.approx(
        pricing.cost_usd(STRONG, run.input_tokens, run.output_tokens, run.cache_read_tokens or 0),
        rel=1e-12,
    )
    (verdict,) = verdicts(engine)
    orders = [verdict.order_cheaper_first, verdict.order_stronger_first]
    for order in orders:
        assert order is not None
        assert order["cost_usd"] == pytest.approx(
            pricing.cost_usd(
                JUDGE, order["input_tokens"], order["output_tokens"], order["cache_read_tokens"]
            ),
            rel=1e-12,
        )
    assert verdict.judge_cost_usd == pytest.approx(sum(o["cost_usd"] for o in orders))  # type: ignore[index]


def test_missing_routed_answer_is_rerun_on_the_routed_model(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    fake.configure(judge_prefers=f"[{CHEAP}]")
    item = decision("rerun-1")
    item.pop("response")
    ingest(engine, settings, [item])

    drain(engine, settings)

    kinds = {(r.kind, r.target_model, r.status) for r in runs(engine)}
    assert kinds == {
        (RunKind.SHADOW, STRONG, WorkStatus.SUCCEEDED),
        (RunKind.ROUTED_RERUN, CHEAP, WorkStatus.SUCCEEDED),
    }
    (verdict,) = verdicts(engine)
    assert verdict.outcome == Outcome.CHEAPER_WINS
    assert (verdict.strong_needed, verdict.cheap_acceptable) == (0, 1)


def test_strong_routed_decisions_are_reverse_shadowed_on_the_cheap_tier(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    fake.configure(judge_prefers=f"[{CHEAP}]")
    ingest(engine, settings, [decision("rev-1", tier="strong", chosen_model=STRONG)])

    drain(engine, settings)

    (run,) = runs(engine)
    assert (run.direction, run.target_tier, run.target_model) == ("reverse", "cheap", CHEAP)
    (verdict,) = verdicts(engine)
    assert (verdict.cheaper_tier, verdict.stronger_tier) == ("cheap", "strong")
    # The cheap answer was as good: a missed saving.
    assert verdict.outcome == Outcome.CHEAPER_WINS
    assert verdict.cheap_acceptable == 1


def test_a_judge_biased_to_position_a_yields_inconsistent_pairs(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    fake.add_faults({"kind": "prefer_a", "count": None, "model": JUDGE})
    ingest(engine, settings, [decision(f"bias-{i}") for i in range(4)])

    drain(engine, settings)

    for verdict in verdicts(engine):
        assert verdict.status == VerdictStatus.DONE
        assert verdict.outcome == Outcome.INCONSISTENT
        assert verdict.consistent is False
        # An inconsistent pair counts as the cheaper answer being acceptable.
        assert (verdict.strong_needed, verdict.cheap_acceptable) == (0, 1)


def test_rate_limits_are_retried_honouring_retry_after(
    engine: Engine, settings: Settings, fake: FakeProviderServer
) -> None:
    fake.add_faults({"kind": "rate_limit", "count": 2, "model": STRONG, "retry_after": 0.2})
    ingest(engine, settings, [decision("rl-1")])

    drain(engine, settings)

    strong_calls = [c for c in fake.calls()["calls"] if c["model"] == STRONG]
    assert len(strong_calls) == 3
    # The retries waited at least the advertised retry-after.
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(strong_calls)]
    assert min(gaps) >= 0.2
    (run,) = runs(engine)
    assert run.status == WorkStatus.SUCCEEDED
    assert verdicts(engine)[0].status == VerdictStatus.DONE


def test_a_provider_that_keeps_failing_is_recorded_never_judged(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    settings = pipeline_settings(
        base_settings,
        fake,
        provider_max_attempts=2,
        work_max_attempts=2,
        circuit_failure_threshold=50,
    )
    fake.add_faults({"kind": "server_error", "count": None, "model": STRONG})
    ingest(engine, settings, [decision("down-1")])

    drain(engine, settings)

    (run,) = runs(engine)
    assert run.status == WorkStatus.FAILED
    assert run.failure_reason == "server_error"
    assert run.attempts == 2
    (verdict,) = verdicts(engine)
    assert verdict.status == VerdictStatus.SKIPPED
    assert verdict.skip_reason == "provider_failure"
    assert verdict.outcome is None
    assert verdict.strong_needed is None
    assert judge_calls(fake) == []


def test_a_timeout_is_retried(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    settings = pipeline_settings(base_settings, fake, provider_timeout_s=0.5)
    fake.add_faults({"kind": "slow", "count": 1, "model": STRONG, "sleep_s": 2.0})
    ingest(engine, settings, [decision("slow-1")])

    drain(engine, settings)

    (run,) = runs(engine)
    assert run.status == WorkStatus.SUCCEEDED
    assert len([c for c in fake.calls()["calls"] if c["model"] == STRONG]) == 2


@pytest.mark.parametrize("fault", ["no_tool_call", "out_of_range_scores", "refusal", "truncated"])
def test_an_unusable_verdict_is_retried_once(
    engine: Engine, settings: Settings, fake: FakeProviderServer, fault: str
) -> None:
    fake.add_faults({"kind": fault, "count": 1, "model": JUDGE})
    ingest(engine, settings, [decision("retry-once")])

    drain(engine, settings)

    (verdict,) = verdicts(engine)
    assert verdict.status == VerdictStatus.DONE
    assert len(judge_calls(fake)) == 3
    attempts = [verdict.order_cheaper_first["attempts"], verdict.order_stronger_first["attempts"]]  # type: ignore[index]
    assert sorted(attempts) == [1, 2]


@pytest.mark.parametrize("fault", ["no_tool_call", "out_of_range_scores", "refusal", "truncated"])
def test_an_unusable_verdict_twice_is_an_error_excluded_from_labels(
    engine: Engine, settings: Settings, fake: FakeProviderServer, fault: str
) -> None:
    fake.add_faults({"kind": fault, "count": None, "model": JUDGE})
    ingest(engine, settings, [decision("bad-judge")])

    drain(engine, settings)

    (verdict,) = verdicts(engine)
    assert verdict.status == VerdictStatus.ERROR
    assert verdict.outcome is None
    assert verdict.strong_needed is None
    assert verdict.cheap_acceptable is None
    assert verdict.error_detail
    assert len(judge_calls(fake)) == 4  # two orders × (first try + one retry)
    assert verdict.judge_cost_usd >= 0


def test_decisions_without_payload_are_counted_as_skipped(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    settings = pipeline_settings(base_settings, fake, store_payloads="none")
    ingest(engine, settings, [decision("nopayload-1")])

    drain(engine, settings)

    (verdict,) = verdicts(engine)
    assert (verdict.status, verdict.skip_reason) == (VerdictStatus.SKIPPED, "no_payload")
    assert runs(engine) == []
    assert fake.calls()["count"] == 0


def test_anthropic_judge_caches_its_instructions(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    settings = pipeline_settings(base_settings, fake, judge_model=STRONG)
    ingest(engine, settings, [decision(f"cache-{i}") for i in range(2)])

    drain(engine, settings)

    judge_requests = [
        c for c in fake.calls()["calls"] if c["model"] == STRONG and "tools" in c["body"]
    ]
    assert len(judge_requests) == 4
    for call in judge_requests:
        system = call["body"]["system"]
        assert system[0]["cache_control"] == {"type": "ephemeral"}
        assert call["body"]["tool_choice"]["type"] == "tool"
    cache_reads = [
        order["cache_read_tokens"]
        for v in verdicts(engine)
        for order in (v.order_cheaper_first, v.order_stronger_first)
        if order
    ]
    assert all(v.status == VerdictStatus.DONE for v in verdicts(engine))
    assert max(cache_reads) > 0
