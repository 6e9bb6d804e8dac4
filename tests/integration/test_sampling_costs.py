"""What the planner learns a sample costs does not depend on how the worker ran (issue 13,
replay equivalence): the judge prompt's cache write falls on whichever judge call comes first,
which worker concurrency decides, so the learned cost and the budget's reconciliation price
every judge order as if its prompt were read from the cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import OrderResult, Verdict, VerdictStatus
from shadoweval.providers.pricing import ModelPrice, PricingTable
from shadoweval.sampling import planning
from shadoweval.sampling.service import SamplingPlan
from tests.conftest import decision

JUDGE = "claude-opus-4-6"
SYSTEM_TOKENS = 171  # the judge prompt, cached
PRICE = ModelPrice(input=5.0, output=25.0, cache_read=0.5, cache_write=6.25)
TS = datetime(2026, 11, 17, 0, 30, tzinfo=UTC)


def _order(price: ModelPrice, *, writes: bool, batch: bool = False) -> OrderResult:
    """One order's tokens as the provider reports them, charged as the judge charges them."""
    cached = {"cache_read_tokens": 0 if writes else SYSTEM_TOKENS}
    cached["cache_write_tokens"] = SYSTEM_TOKENS if writes else 0
    cost = price.cost_usd(1261, 45, batch=batch, **cached)
    return OrderResult(winner="tie", input_tokens=1261, output_tokens=45, cost_usd=cost, **cached)


def test_an_order_costs_the_same_whether_it_wrote_the_judge_cache_or_read_it() -> None:
    wrote, read = _order(PRICE, writes=True), _order(PRICE, writes=False)
    assert wrote.cost_usd > read.cost_usd  # billed: the write costs more
    assert planning.steady_order_cost_usd(wrote, PRICE) == planning.steady_order_cost_usd(
        read, PRICE
    )
    assert planning.steady_order_cost_usd(read, PRICE) == pytest.approx(read.cost_usd)
    # A batch order keeps the batch price; an order stored before cache writes were
    # recorded keeps what it was charged.
    batch = _order(PRICE, writes=True, batch=True)
    assert planning.steady_order_cost_usd(batch, PRICE) == pytest.approx(read.cost_usd / 2)
    legacy = read.model_copy(update={"cache_write_tokens": None, "cost_usd": 0.123})
    assert planning.steady_order_cost_usd(legacy, PRICE) == 0.123


def _judged(session: Session, settings: Settings, wrote_cache: str) -> None:
    """A finished verdict for every decision; `wrote_cache`'s first order paid the write."""
    price = PricingTable.from_settings(settings).lookup(JUDGE)
    assert price is not None
    session.execute(delete(Verdict))
    for d in session.query(Decision).all():
        assert d.id is not None
        first = _order(price, writes=d.request_id == wrote_cache)
        second = _order(price, writes=False)
        session.add(
            Verdict(
                decision_id=d.id,
                router=d.router,
                request_id=d.request_id,
                ts=d.ts,
                segment_value=d.segment_value,
                routed_tier=d.tier,
                direction="forward",
                inclusion_probability=1.0,
                cheaper_tier="cheap",
                stronger_tier="strong",
                cheaper_model="cheap-model",
                stronger_model="strong-model",
                judge_key=f"{JUDGE}#p",
                judge_model=JUDGE,
                prompt_hash="p",
                status=VerdictStatus.DONE,
                next_attempt_at=TS,
                created_at=TS,
                finished_at=TS,
                strong_needed=0,
                judge_cost_usd=first.cost_usd + second.cost_usd,
                order_cheaper_first={**first.model_dump(mode="json"), "judge_model": JUDGE},
                order_stronger_first={**second.model_dump(mode="json"), "judge_model": JUDGE},
            )
        )
    session.commit()


def test_learned_costs_do_not_depend_on_which_sample_wrote_the_judge_cache(
    engine: Engine, base_settings: Settings
) -> None:
    settings = base_settings.model_copy(update={"judge_model": JUDGE})
    # Two segments: the write lands in one stratum's mean or the other's.
    items = [
        decision(f"c-{i}", ts=(TS + timedelta(minutes=i)).isoformat(), segment={"topic": topic})
        for i, topic in enumerate(("billing", "billing", "legal", "legal"))
    ]
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items), plan=SamplingPlan()
        )
        assert not outcome.errors
        seen = []
        for wrote_cache in ("c-0", "c-3"):
            _judged(session, settings, wrote_cache)
            before = TS + timedelta(hours=1)
            seen.append(
                (
                    planning.learned_costs(session, settings, before),
                    sorted(planning.sample_costs(session, settings, TS, before).values()),
                )
            )
    assert seen[0] == seen[1]  # exactly: a float's last bit can move a π across a hash
    price = PricingTable.from_settings(settings).lookup(JUDGE)
    assert price is not None
    steady = 2 * _order(price, writes=False).cost_usd
    assert [(pytest.approx(mean), n) for mean, n in seen[0][0].values()] == [(steady, 2)] * 2
