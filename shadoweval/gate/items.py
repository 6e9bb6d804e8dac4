"""Gate step 2: claim an item, reserve its cost on the run (`reservations.py`), replay the
request on the candidate (and the logged model when its answer is gone), judge both
orders; partial results are stored as soon as they exist."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.gate import budget, reservations
from shadoweval.gate.create import settings_for_run
from shadoweval.gate.models import (
    GateItem,
    GateItemStatus,
    GateRun,
)
from shadoweval.gate.rows import (
    ITEM_TABLE,
    LABELS,
    OUTCOME_NAMES,
    RUN_TABLE,
    ProviderForModel,
)
from shadoweval.gate.verdict import finalize_run
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge import pricing as judge_pricing
from shadoweval.judge import service as judge_service
from shadoweval.judge.models import OrderResult
from shadoweval.judge.parsing import combine_orders
from shadoweval.judge.prompts import build_judge_prompt
from shadoweval.providers.base import Completion, ProviderError
from shadoweval.providers.pricing import PricingTable
from shadoweval.runtime import leases
from shadoweval.shadow.service import replay_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ItemContext:
    item: GateItem
    run: GateRun
    served_model: str
    request: dict[str, Any] | None
    logged_answer: str | None


def _load_item(engine: Engine, item_id: int) -> _ItemContext:
    with Session(engine) as session:
        item = session.get(GateItem, item_id)
        assert item is not None
        run = session.get(GateRun, item.gate_run_id)
        decision = session.get(Decision, item.decision_id)
        payload = session.get(DecisionPayload, item.decision_id)
    assert run is not None
    request = payload.request if payload else None
    response = (payload.response if payload else None) or {}
    text = response.get("text")
    return _ItemContext(
        item=item,
        run=run,
        served_model=decision.served_model if decision else "",
        request=request if request and request.get("messages") else None,
        logged_answer=text if isinstance(text, str) and text.strip() else None,
    )


def _store(engine: Engine, item_id: int, owner: str, values: dict[str, Any]) -> bool:
    return leases.finish(engine, ITEM_TABLE, item_id=item_id, owner=owner, values=values)


def _finish_item(
    engine: Engine, item: GateItem, owner: str, values: dict[str, Any], settings: Settings
) -> bool:
    """Record a terminal item and count it on its run, in one transaction; then, if it was
    the run's last open item, write the run's verdict."""
    assert item.id is not None
    error = values["status"] == GateItemStatus.ERROR
    cost = (
        float(values.get("candidate_cost_usd", item.candidate_cost_usd))
        + float(values.get("replaced_cost_usd", item.replaced_cost_usd))
        + float(values.get("judge_cost_usd", item.judge_cost_usd))
    )
    with engine.begin() as connection:
        # The reservation as stored: another attempt of this item may have made it.
        reserved = float(
            connection.execute(
                select(ITEM_TABLE.c.reserved_usd).where(ITEM_TABLE.c.id == item.id)
            ).scalar_one()
        )
        if not leases._finish(connection, ITEM_TABLE, item_id=item.id, owner=owner, values=values):
            return False
        columns = RUN_TABLE.c
        # Settle: the actual cost replaces the reservation, in the transaction that ends
        # the item, so spent + reserved never counts an item twice or not at all.
        connection.execute(
            update(RUN_TABLE)
            .where(columns.id == item.gate_run_id)
            .values(
                items_done=columns.items_done + (0 if error else 1),
                items_error=columns.items_error + (1 if error else 0),
                cost_usd=columns.cost_usd + cost,
                reserved_usd=columns.reserved_usd - reserved,
            )
        )
    finalize_run(engine, run_id=item.gate_run_id, settings=settings)
    return True


def _estimate(settings: Settings, context: _ItemContext, request: dict[str, Any]) -> float:
    """The most this item's remaining calls can cost (gate.budget); never 0 for a priced call,
    so an item always holds a reservation while it spends."""
    item, run = context.item, context.run
    pricing = PricingTable.from_settings(settings)

    def price_of(model: str) -> tuple[float, float] | None:
        price = pricing.lookup(model)
        return None if price is None else (price.input, price.output)

    reuse = context.served_model == run.replaced_model and context.logged_answer is not None
    stored_orders = sum(
        bool(order and order.get("winner"))
        for order in (item.order_candidate_first, item.order_replaced_first)
    )
    rubric = settings.judge_rubric_by_segment.get(item.segment_value, settings.judge_rubric)
    params = replay_params(request.get("params"), settings.shadow_default_max_tokens)
    return budget.estimate_item_cost(
        calls=budget.Calls(
            candidate=item.candidate_answer is None,
            replaced=item.replaced_answer is None and not reuse,
            judge_orders=2 - stored_orders,
        ),
        request_tokens=budget.tokens(
            {"messages": request.get("messages"), "system": request.get("system")}
        ),
        answer_max_tokens=int(params["max_tokens"]),
        judge_system_tokens=budget.tokens(build_judge_prompt(rubric).system),
        judge_max_tokens=settings.judge_max_tokens,
        candidate_price=price_of(run.candidate_model),
        replaced_price=price_of(run.replaced_model),
        judge_price=price_of(settings.judge_model),
    )


# How soon an item that waits for the run's reservations to settle is due again.
BUDGET_WAIT = timedelta(seconds=1)


def _terminal(status: str, now: datetime, **values: Any) -> dict[str, Any]:
    return {
        "status": status,
        "lease_owner": None,
        "lease_until": None,
        "finished_at": now,
        **values,
    }


async def _answer(
    provider_for_model: ProviderForModel, model: str, request: dict[str, Any], settings: Settings
) -> Completion:
    """The model's answer, its cost at the run's recorded price (`settings` is the run's,
    see settings_for_run): the provider prices with the worker's own table, and a run
    must spend, and be capped, at the prices it was created and estimated with."""
    provider = provider_for_model(model)
    completion = await provider.complete(
        model=model,
        messages=list(request.get("messages") or []),
        system=request.get("system"),
        params=replay_params(request.get("params"), settings.shadow_default_max_tokens),
    )
    price = PricingTable.from_settings(settings).lookup(model)
    if price is None:
        return completion
    cost = price.cost_usd(
        completion.input_tokens,
        completion.output_tokens,
        completion.cache_read_tokens,
        completion.cache_write_tokens,
    )
    return dataclasses.replace(completion, cost_usd=cost)


async def process_item(
    *,
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    owner: str,
    item_id: int,
) -> str:
    """Replay one claimed item on both models, judge it in both orders; its resulting status."""
    context = await asyncio.to_thread(_load_item, engine, item_id)
    # The run's judge and prices, recorded when it was created, not this worker's settings.
    settings = settings_for_run(settings, context.run)
    item = context.item
    if context.request is None:
        values = _terminal(
            GateItemStatus.ERROR, utcnow(), error="no_payload: the stored request is gone"
        )
        await asyncio.to_thread(_finish_item, engine, item, owner, values, settings)
        return GateItemStatus.ERROR
    request = context.request
    run = context.run
    if run.max_cost_usd is not None and item.reserved_usd <= 0:
        estimate = _estimate(settings, context, request)
        reserved = await asyncio.to_thread(reservations.reserve, engine, item, owner, estimate)
        if reserved is reservations.Reservation.LEASE_LOST:
            return GateItemStatus.RUNNING  # the lease was taken over; its new holder goes on
        if reserved is reservations.Reservation.WAIT:
            # It would fit once the items in flight settle (their reservations are upper
            # bounds): back to the queue shortly, and waiting is not a failed attempt.
            await asyncio.to_thread(
                leases.release_for_retry,
                engine,
                ITEM_TABLE,
                item_id=item_id,
                owner=owner,
                retry_at=utcnow() + BUDGET_WAIT,
                values={"attempts": item.attempts - 1},
            )
            return GateItemStatus.QUEUED
        if reserved is reservations.Reservation.REFUSED:
            values = _terminal(
                GateItemStatus.ERROR,
                utcnow(),
                error=(
                    f"budget_exhausted: this request may cost up to {estimate:.6f} USD, more "
                    f"than is left of the run's {run.max_cost_usd:.4f} USD cap after what is "
                    "spent and reserved by the requests in flight"
                ),
            )
            await asyncio.to_thread(_finish_item, engine, item, owner, values, settings)
            return GateItemStatus.ERROR
    try:
        await _ensure_answers(engine, provider_for_model, settings, owner, context, request)
        results = await _judge(engine, provider_for_model, settings, owner, context, request)
    except ProviderError as error:
        return await _provider_failure(engine, item, owner, error, settings)
    candidate_first, replaced_first = results
    now = utcnow()
    # From the stored tokens at the run's recorded prices, whichever worker answered an order.
    judge_price = judge_pricing.judge_price(settings)
    judge_cost = sum(judge_pricing.order_cost_usd(order, judge_price) for order in results)
    errors = [r.error or "no verdict" for r in results if r.winner is None]
    if errors:
        values = _terminal(
            GateItemStatus.ERROR,
            now,
            error=f"judge_error: {'; '.join(errors)}"[:2000],
            judge_cost_usd=judge_cost,
        )
        await asyncio.to_thread(_finish_item, engine, item, owner, values, settings)
        return GateItemStatus.ERROR
    labels = combine_orders(candidate_first, replaced_first)
    outcome = OUTCOME_NAMES[labels.outcome]
    values = _terminal(
        GateItemStatus.DONE,
        now,
        outcome=outcome,
        label=LABELS[outcome],
        score_candidate=labels.score_cheaper,
        score_replaced=labels.score_stronger,
        judge_cost_usd=judge_cost,
        error=None,
    )
    if not await asyncio.to_thread(_finish_item, engine, item, owner, values, settings):
        log.warning("gate item %s finished after its lease was taken over; dropped", item_id)
    return GateItemStatus.DONE


async def _ensure_answers(
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    owner: str,
    context: _ItemContext,
    request: dict[str, Any],
) -> None:
    """Both answers on the item, each stored as soon as it exists (a crash never re-buys it)."""
    item, run = context.item, context.run
    assert item.id is not None
    item_id = item.id

    async def candidate() -> None:
        completion = await _answer(provider_for_model, run.candidate_model, request, settings)
        values = {"candidate_answer": completion.text, "candidate_cost_usd": completion.cost_usd}
        await asyncio.to_thread(_store, engine, item_id, owner, values)
        item.candidate_answer, item.candidate_cost_usd = completion.text, completion.cost_usd

    async def replaced() -> None:
        if context.served_model == run.replaced_model and context.logged_answer is not None:
            values: dict[str, Any] = {
                "replaced_answer": context.logged_answer,
                "replaced_reused": True,
            }
            item.replaced_answer, item.replaced_reused = context.logged_answer, True
        else:
            completion = await _answer(provider_for_model, run.replaced_model, request, settings)
            values = {"replaced_answer": completion.text, "replaced_cost_usd": completion.cost_usd}
            item.replaced_answer, item.replaced_cost_usd = completion.text, completion.cost_usd
        await asyncio.to_thread(_store, engine, item_id, owner, values)

    steps = []
    if item.candidate_answer is None:
        steps.append(candidate())
    if item.replaced_answer is None:
        steps.append(replaced())
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _judge(
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    owner: str,
    context: _ItemContext,
    request: dict[str, Any],
) -> tuple[OrderResult, OrderResult]:
    """Both judge orders through the shadow judge's own prompt and parsing; stored orders kept.

    The candidate takes the judge's "cheaper" slot, so `combine_orders` reads as: cheaper
    wins = candidate wins, stronger wins = the replaced model wins.
    """
    item = context.item
    assert item.id is not None
    assert item.candidate_answer is not None
    assert item.replaced_answer is not None
    item_id = item.id
    system, turns = judge_service.order_turns(
        judge_service.JudgeTexts(
            segment_value=item.segment_value,
            messages=list(request.get("messages") or []),
            system=request.get("system"),
            cheaper_answer=item.candidate_answer,
            stronger_answer=item.replaced_answer,
        ),
        settings,
        names=("order_candidate_first", "order_replaced_first"),
    )
    stored = {
        name: OrderResult.model_validate(getattr(item, name))
        for name in turns
        if getattr(item, name) and getattr(item, name).get("winner")
    }
    provider = provider_for_model(settings.judge_model)

    async def run_order(name: str) -> tuple[str, OrderResult]:
        result = await judge_service.judge_order(
            provider=provider, settings=settings, system=system, user_turn=turns[name]
        )
        if result.winner is not None:
            await asyncio.to_thread(
                _store, engine, item_id, owner, {name: result.model_dump(mode="json")}
            )
        return name, result

    outcomes = await asyncio.gather(
        *(run_order(name) for name in turns if name not in stored), return_exceptions=True
    )
    results = dict(stored)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results[outcome[0]] = outcome[1]
    return results["order_candidate_first"], results["order_replaced_first"]


async def _provider_failure(
    engine: Engine, item: GateItem, owner: str, error: ProviderError, settings: Settings
) -> str:
    assert item.id is not None
    now = utcnow()
    log.warning(
        "gate item %s failed: %s (%s), attempt %s of %s",
        item.id,
        error.reason,
        error.message,
        item.attempts,
        settings.work_max_attempts,
    )
    detail = f"{error.reason}: {error.message}"[:2000]
    retry_at = leases.next_retry(error, attempts=item.attempts, settings=settings, now=now)
    if retry_at is not None:
        await asyncio.to_thread(
            leases.release_for_retry,
            engine,
            ITEM_TABLE,
            item_id=item.id,
            owner=owner,
            retry_at=retry_at,
            values={"error": detail},
        )
        return GateItemStatus.QUEUED
    values = _terminal(GateItemStatus.ERROR, now, error=f"provider_failure: {detail}"[:2000])
    await asyncio.to_thread(_finish_item, engine, item, owner, values, settings)
    return GateItemStatus.ERROR


def _claim_items(
    engine: Engine,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    run_id: int | None,
) -> list[int]:
    """leases.claim, optionally restricted to one run's items (the CLI works its own run)."""
    return leases.claim(
        engine,
        ITEM_TABLE,
        owner=owner,
        limit=limit,
        lease_seconds=lease_seconds,
        now=utcnow(),
        where=None if run_id is None else ITEM_TABLE.c.gate_run_id == run_id,
    )


def fail_exhausted_items(engine: Engine, *, settings: Settings, run_id: int | None = None) -> int:
    """Items whose worker died on their last allowed attempt become `error` (and are counted)."""
    now = utcnow()
    columns = ITEM_TABLE.c
    query = select(GateItem).where(
        columns.status == GateItemStatus.RUNNING,
        columns.lease_until < now,
        columns.attempts >= settings.work_max_attempts,
    )
    if run_id is not None:
        query = query.where(columns.gate_run_id == run_id)
    with Session(engine) as session:
        items = list(session.scalars(query))
    failed = 0
    for item in items:
        assert item.lease_owner is not None
        values = _terminal(
            GateItemStatus.ERROR,
            now,
            error=f"lease_expired: worker lost {settings.work_max_attempts} times (crash?)",
        )
        failed += _finish_item(engine, item, item.lease_owner, values, settings)
    return failed


async def process_due_items(
    *,
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    owner: str,
    limit: int,
    run_id: int | None = None,
) -> dict[str, int]:
    """Claim up to `limit` due items (of one run, or any) and process them concurrently."""
    await asyncio.to_thread(fail_exhausted_items, engine, settings=settings, run_id=run_id)
    ids = await asyncio.to_thread(
        _claim_items,
        engine,
        owner=owner,
        limit=limit,
        lease_seconds=settings.work_lease_seconds,
        run_id=run_id,
    )
    counts: dict[str, int] = {}
    statuses = await asyncio.gather(
        *(
            process_item(
                engine=engine,
                provider_for_model=provider_for_model,
                settings=settings,
                owner=owner,
                item_id=item_id,
            )
            for item_id in ids
        )
    )
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts
