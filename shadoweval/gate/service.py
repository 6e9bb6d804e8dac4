"""Gate service: create a run, sample its requests, replay and judge each item, reach a verdict.

Every step is a leased row (runtime.leases): a queued `gate_run` is claimed to
draw its sample (the items are inserted in the same transaction that marks it
planned), each `gate_item` is claimed to replay and judge one request, and
partial results (each answer, each judge order) are stored as soon as they
exist. A worker that dies loses only the call in flight; whoever takes the
lease over continues from what was stored. The run's verdict is written once,
by a conditional update, when its last item finishes.

Spending: before its first call an item reserves an upper estimate of its cost on
the run (gate.budget) by a conditional update against the cap, and the transaction
that ends the item swaps the reservation for the actual cost, so items in flight on
any number of workers cannot together overshoot `max_cost_usd`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from shadoweval import paging
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.gate import budget, evaluation, report
from shadoweval.gate.models import (
    FINISHED_GATE_STATUSES,
    GateCreate,
    GateItem,
    GateItemStatus,
    GateRun,
    GateStatus,
)
from shadoweval.gate.sample import allocate, seeded_order
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge import service as judge_service
from shadoweval.judge.models import OrderResult, Outcome
from shadoweval.judge.parsing import combine_orders
from shadoweval.judge.prompts import build_judge_prompt, render_conversation
from shadoweval.providers.base import Completion, Provider, ProviderError
from shadoweval.providers.pricing import PricingTable
from shadoweval.runtime import leases
from shadoweval.shadow.service import replay_params

log = logging.getLogger(__name__)

RUN_TABLE = cast(Table, GateRun.__table__)  # type: ignore[attr-defined]
ITEM_TABLE = cast(Table, GateItem.__table__)  # type: ignore[attr-defined]
DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
PAYLOAD_TABLE = cast(Table, DecisionPayload.__table__)  # type: ignore[attr-defined]

ProviderForModel = Callable[[str], Provider]
KnowsModel = Callable[[str], bool]
OPEN_ITEM_STATUSES = (GateItemStatus.QUEUED, GateItemStatus.RUNNING)
# Item outcomes from the candidate's side (the candidate sits in the judge's "cheaper" slot).
OUTCOME_NAMES = {
    Outcome.CHEAPER_WINS: "candidate_wins",
    Outcome.STRONGER_WINS: "replaced_wins",
    Outcome.TIE: "tie",
    Outcome.INCONSISTENT: "inconsistent",
}
LABELS = {"candidate_wins": 1, "replaced_wins": -1, "tie": 0, "inconsistent": 0}


# --- creating --------------------------------------------------------------------------------


def validate_request(session: Session, spec: GateCreate, knows_model: KnowsModel) -> None:
    """Refuse a gate whose arguments name nothing that exists (InvalidRequest, with `field`)."""
    if spec.candidate == spec.replace:
        raise InvalidRequest(
            "candidate and replace are the same model; a gate compares two models",
            field="candidate",
        )
    decisions = DECISION_TABLE.c
    routers = session.execute(
        select(func.count()).select_from(DECISION_TABLE).where(decisions.router == spec.router)
    ).scalar_one()
    if not routers:
        raise InvalidRequest(f"unknown router {spec.router!r}: no decisions logged", field="router")
    per_segment = _traffic(session, spec.router, spec.replace, [])
    if not per_segment:
        raise InvalidRequest(
            f"router {spec.router!r} never routed to {spec.replace!r}; "
            "--replace must be a model the router chooses",
            field="replace",
        )
    unknown = [s for s in spec.segments if s not in per_segment]
    if unknown:
        raise InvalidRequest(
            f"no decisions of router {spec.router!r} to {spec.replace!r} in segment(s) "
            f"{', '.join(unknown)}; known: {', '.join(sorted(per_segment))}",
            field="segments",
        )
    for field, model in (("candidate", spec.candidate), ("replace", spec.replace)):
        if not knows_model(model):
            raise InvalidRequest(
                f"unknown model {model!r}: no price for it (add it to "
                "SHADOWEVAL_PRICING_OVERRIDES if the id is right)",
                field=field,
            )


def create_gate(
    *,
    session: Session,
    settings: Settings,
    spec: GateCreate,
    knows_model: KnowsModel,
    requested_by: str | None = None,
    now: datetime | None = None,
    commit: bool = True,
) -> GateRun:
    """Validate and store a queued gate run (committed); a worker or the CLI runs it.

    `commit=False` only flushes (the run has its id), so a caller can store the run in
    its own transaction, e.g. with the model_change event that starts it."""
    validate_request(session, spec, knows_model)
    now = now or utcnow()
    run = GateRun(
        router=spec.router,
        candidate_model=spec.candidate,
        replaced_model=spec.replace,
        sample_size=spec.sample,
        max_drop=spec.max_drop,
        alpha=spec.alpha if spec.alpha is not None else settings.gate_alpha,
        segments=list(spec.segments),
        seed=spec.seed,
        max_cost_usd=spec.max_cost_usd or settings.gate_max_cost_usd,
        requested_by=requested_by,
        status=GateStatus.QUEUED,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(run)
    if not commit:
        session.flush()
        return run
    session.commit()
    session.refresh(run)
    return run


def _traffic(
    session: Session | Connection, router: str, model: str, segments: list[str]
) -> dict[str, int]:
    """Decisions per segment that the router sent to `model` (the weights of the overall test)."""
    columns = DECISION_TABLE.c
    query = (
        select(columns.segment_value, func.count())
        .where(columns.router == router, columns.chosen_model == model)
        .group_by(columns.segment_value)
    )
    if segments:
        query = query.where(columns.segment_value.in_(segments))
    return {str(segment): int(count) for segment, count in session.execute(query)}


# --- planning: draw the sample ---------------------------------------------------------------


def _eligible(run: GateRun) -> Any:
    """Replayable requests: routed to the replaced model, request payload kept, not
    redacted (a redacted prompt against the logged answer is not a fair comparison)."""
    d, p = DECISION_TABLE.c, PAYLOAD_TABLE.c
    conditions = [
        d.router == run.router,
        d.chosen_model == run.replaced_model,
        d.has_request.is_(True),
        d.payload_redacted.is_(False),
        p.request.is_not(None),
    ]
    if run.segments:
        conditions.append(d.segment_value.in_(run.segments))
    return and_(*conditions)


def _draw_sample(connection: Connection, run: GateRun) -> dict[str, list[tuple[int, str]]]:
    """The stratified sample per segment, drawn by the database: a count per segment, the
    even allocation (gate.sample.allocate), then per segment the first n decisions in a
    seeded order (gate.sample.seeded_order). Nothing but the sample is loaded, however
    many decisions the router has, and the same seed over the same log draws the same
    sample on SQLite and PostgreSQL."""
    d, p = DECISION_TABLE.c, PAYLOAD_TABLE.c
    eligible = _eligible(run)
    joined = DECISION_TABLE.join(PAYLOAD_TABLE, p.decision_id == d.id)
    available = {
        str(segment): int(count)
        for segment, count in connection.execute(
            select(d.segment_value, func.count())
            .select_from(joined)
            .where(eligible)
            .group_by(d.segment_value)
        )
    }
    allocation = allocate(available, run.sample_size)
    chosen: dict[str, list[tuple[int, str]]] = {}
    for segment in sorted(available):
        if allocation[segment] <= 0:
            continue
        rows = connection.execute(
            select(d.id, d.request_id)
            .select_from(joined)
            .where(eligible, d.segment_value == segment)
            .order_by(seeded_order(d.id, run.seed), d.id)
            .limit(allocation[segment])
        )
        chosen[segment] = [(int(decision_id), str(request_id)) for decision_id, request_id in rows]
    return chosen


def plan_run(engine: Engine, *, run_id: int, owner: str, now: datetime | None = None) -> str:
    """Draw a claimed run's stratified sample and insert its items, atomically; its status."""
    now = now or utcnow()
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        assert run is not None
    with engine.begin() as connection:
        sample = _draw_sample(connection, run)
        if not sample:
            message = (
                f"no replayable stored requests: router {run.router!r} has no decision routed "
                f"to {run.replaced_model!r} with a stored, unredacted request"
                + (f" in segment(s) {', '.join(run.segments)}" if run.segments else "")
                + " (payloads kept per SHADOWEVAL_STORE_PAYLOADS and purged after retention)"
            )
            if not leases._finish(
                connection,
                RUN_TABLE,
                item_id=run_id,
                owner=owner,
                values=_error_values(run, message, now),
            ):
                raise _LeaseLost(run_id)
            return GateStatus.ERROR
        rows: list[dict[str, Any]] = []
        for segment, drawn in sorted(sample.items()):
            for decision_id, request_id in drawn:
                rows.append(
                    {
                        "gate_run_id": run_id,
                        "decision_id": decision_id,
                        "request_id": request_id,
                        "segment_value": segment,
                        "status": GateItemStatus.QUEUED,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "replaced_reused": False,
                        "candidate_cost_usd": 0.0,
                        "replaced_cost_usd": 0.0,
                        "judge_cost_usd": 0.0,
                        "reserved_usd": 0.0,
                    }
                )
        traffic = _traffic(connection, run.router, run.replaced_model, run.segments)
        values = {
            "status": GateStatus.RUNNING,
            "lease_owner": None,
            "lease_until": None,
            "planned_at": now,
            "items_total": len(rows),
            "segment_traffic": {s: traffic.get(s, 0) for s in sample},
        }
        if not leases._finish(connection, RUN_TABLE, item_id=run_id, owner=owner, values=values):
            raise _LeaseLost(run_id)  # rolls the items back: the new lease holder plans it
        connection.execute(insert(ITEM_TABLE), rows)
    return GateStatus.RUNNING


class _LeaseLost(Exception):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"gate run {run_id}: lease lost while planning")


def _error_values(run: GateRun, message: str, now: datetime) -> dict[str, Any]:
    names = {
        "router": run.router,
        "candidate_model": run.candidate_model,
        "replaced_model": run.replaced_model,
        "error": message,
    }
    return {
        "status": GateStatus.ERROR,
        "lease_owner": None,
        "lease_until": None,
        "finished_at": now,
        "error": message[:2000],
        "report_markdown": report.render_error_markdown(**names),
        "junit_xml": report.render_error_junit(**names),
    }


def plan_due_runs(engine: Engine, *, owner: str, settings: Settings, limit: int = 4) -> int:
    """Claim queued (or abandoned mid-planning) runs and plan them; how many were planned."""
    ids = leases.claim(
        engine,
        RUN_TABLE,
        owner=owner,
        limit=limit,
        lease_seconds=settings.work_lease_seconds,
        now=utcnow(),
    )
    for run_id in ids:
        try:
            plan_run(engine, run_id=run_id, owner=owner)
        except _LeaseLost:
            log.warning("gate run %s was taken over while planning", run_id)
    return len(ids)


def _claim_run(engine: Engine, run_id: int, *, owner: str, lease_seconds: float) -> bool:
    """leases.claim for one given run (the CLI runs its own gate, not whichever is due)."""
    now = utcnow()
    columns = RUN_TABLE.c
    due = or_(
        columns.status == GateStatus.QUEUED,
        and_(columns.status == GateStatus.RUNNING, columns.lease_until < now),
    )
    # Unlike leases.claim, a queued run is taken before its next_attempt_at: the CLI
    # asked for this run now, and run_gate does not come back to claim it later.
    claimed = leases.claim_rows(
        engine,
        RUN_TABLE,
        where=and_(columns.id == run_id, due),
        order_by=(columns.id,),
        limit=1,
        values={
            "status": GateStatus.RUNNING,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "attempts": columns.attempts + 1,
        },
    )
    return claimed == [run_id]


# --- items: replay and judge -----------------------------------------------------------------


@dataclass
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


class _Reservation(Enum):
    MADE = "made"
    WAIT = "wait"  # does not fit now, would once the reservations in flight settle
    REFUSED = "refused"  # cannot fit even then: the cap is reached
    LEASE_LOST = "lease_lost"  # nothing stays reserved


# How soon an item that waits for the run's reservations to settle is due again.
BUDGET_WAIT = timedelta(seconds=1)


def _reserve(engine: Engine, item: GateItem, owner: str, estimate: float) -> _Reservation:
    """Reserve `estimate` on the item's run if spent + reserved + estimate stays within the
    cap, by one conditional UPDATE (of concurrent items, only those that fit get through),
    and note it on the item in the same transaction."""
    assert item.id is not None
    try:
        with engine.begin() as connection:
            if not _reserve_in(connection, item, owner, estimate):
                runs, items = RUN_TABLE.c, ITEM_TABLE.c
                spent, cap = connection.execute(
                    select(runs.cost_usd, runs.max_cost_usd).where(runs.id == item.gate_run_id)
                ).one()
                # Counted from the items, not the run's float sum, so rounding residue can
                # never make an item wait for reservations that are not there.
                in_flight = connection.execute(
                    select(func.count()).where(
                        items.gate_run_id == item.gate_run_id,
                        items.id != item.id,
                        items.status.in_(OPEN_ITEM_STATUSES),
                        items.reserved_usd > 0,
                    )
                ).scalar_one()
                if in_flight and spent + estimate <= cap:
                    return _Reservation.WAIT
                return _Reservation.REFUSED
    except _ReservationLeaseLost:
        return _Reservation.LEASE_LOST
    item.reserved_usd = estimate
    return _Reservation.MADE


class _ReservationLeaseLost(Exception):
    """Raised inside the reservation's transaction so that it rolls back."""


def _reserve_in(connection: Connection, item: GateItem, owner: str, estimate: float) -> bool:
    runs, items = RUN_TABLE.c, ITEM_TABLE.c
    fits = connection.execute(
        update(RUN_TABLE)
        .where(
            runs.id == item.gate_run_id,
            runs.cost_usd + runs.reserved_usd + estimate <= runs.max_cost_usd,
        )
        .values(reserved_usd=runs.reserved_usd + estimate)
    ).rowcount
    if fits != 1:
        return False
    held = connection.execute(
        update(ITEM_TABLE)
        .where(
            items.id == item.id,
            items.lease_owner == owner,
            items.status == GateItemStatus.RUNNING,
        )
        .values(reserved_usd=estimate)
    ).rowcount
    if held != 1:
        raise _ReservationLeaseLost
    return True


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
    provider = provider_for_model(model)
    return await provider.complete(
        model=model,
        messages=list(request.get("messages") or []),
        system=request.get("system"),
        params=replay_params(request.get("params"), settings.shadow_default_max_tokens),
    )


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
        reserved = await asyncio.to_thread(_reserve, engine, item, owner, estimate)
        if reserved is _Reservation.LEASE_LOST:
            return GateItemStatus.RUNNING  # the lease was taken over; its new holder goes on
        if reserved is _Reservation.WAIT:
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
        if reserved is _Reservation.REFUSED:
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
    judge_cost = candidate_first.cost_usd + replaced_first.cost_usd
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


# --- the verdict -----------------------------------------------------------------------------


def _judged_pairs(session: Session, run_id: int) -> list[evaluation.JudgedPair]:
    rows = session.execute(
        select(GateItem, DecisionPayload.request)  # type: ignore[call-overload]
        .join(DecisionPayload, DecisionPayload.decision_id == GateItem.decision_id, isouter=True)
        .where(GateItem.gate_run_id == run_id)
        .order_by(GateItem.id)
    ).all()
    pairs = []
    for item, request in rows:
        order = item.order_replaced_first or {}
        pairs.append(
            evaluation.JudgedPair(
                segment=item.segment_value,
                request_id=item.request_id,
                label=item.label if item.status == GateItemStatus.DONE else None,
                score_candidate=item.score_candidate,
                score_replaced=item.score_replaced,
                request_text=render_conversation(
                    list((request or {}).get("messages") or []), (request or {}).get("system")
                ),
                candidate_answer=item.candidate_answer or "",
                replaced_answer=item.replaced_answer or "",
                rationale=str(order.get("rationale") or ""),
                error=item.error if item.status == GateItemStatus.ERROR else None,
            )
        )
    return pairs


def finalize_run(engine: Engine, *, run_id: int, settings: Settings) -> str | None:
    """Write the verdict of a planned run whose items are all finished; its status, or None
    while items are open. Idempotent: the update only applies to a run still `running`."""
    now = utcnow()
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        if run is None or run.planned_at is None or run.status != GateStatus.RUNNING:
            return run.status if run is not None else None
        open_items = session.execute(
            select(func.count())
            .select_from(ITEM_TABLE)
            .where(ITEM_TABLE.c.gate_run_id == run_id, ITEM_TABLE.c.status.in_(OPEN_ITEM_STATUSES))
        ).scalar_one()
        if open_items:
            return None
        pairs = _judged_pairs(session, run_id)
        cost = session.execute(
            select(
                func.coalesce(
                    func.sum(
                        ITEM_TABLE.c.candidate_cost_usd
                        + ITEM_TABLE.c.replaced_cost_usd
                        + ITEM_TABLE.c.judge_cost_usd
                    ),
                    0.0,
                )
            ).where(ITEM_TABLE.c.gate_run_id == run_id)
        ).scalar_one()
    errors = sum(1 for p in pairs if p.label is None)
    counts = {"items_done": len(pairs) - errors, "items_error": errors, "cost_usd": float(cost)}
    if evaluation.error_share_exceeded(len(pairs), errors, settings.gate_max_error_share):
        reasons = sorted({(p.error or "").split(":")[0] for p in pairs if p.label is None})
        message = (
            f"{errors} of {len(pairs)} replayed requests could not be judged "
            f"({', '.join(r for r in reasons if r) or 'errors'}); more than "
            f"{settings.gate_max_error_share:.0%} failing means the judged sample is no longer "
            "the sample drawn, so there is no verdict. First error: "
            + next((p.error or "" for p in pairs if p.label is None), "")
        )
        values = {**_error_values(run, message, now), **counts}
    else:
        result = evaluation.evaluate(
            router=run.router,
            candidate_model=run.candidate_model,
            replaced_model=run.replaced_model,
            max_drop=run.max_drop,
            alpha=run.alpha,
            pairs=pairs,
            segment_traffic=run.segment_traffic,
            cost_usd=float(cost),
        )
        values = {
            "status": GateStatus.PASSED if result.passed else GateStatus.FAILED,
            "finished_at": now,
            "results": result.to_json(),
            "report_markdown": report.render_markdown(result),
            "junit_xml": report.render_junit(result),
            **counts,
        }
    with engine.begin() as connection:
        connection.execute(
            update(RUN_TABLE)
            .where(RUN_TABLE.c.id == run_id, RUN_TABLE.c.status == GateStatus.RUNNING)
            .values(**values)
        )
    with Session(engine) as session:
        final = session.get(GateRun, run_id)
        assert final is not None
        return final.status


def finalize_ready_runs(engine: Engine, *, settings: Settings) -> int:
    """Safety net: verdicts for planned runs whose last item finished without writing one."""
    with Session(engine) as session:
        ids = list(
            session.scalars(
                select(RUN_TABLE.c.id).where(
                    RUN_TABLE.c.status == GateStatus.RUNNING,
                    RUN_TABLE.c.planned_at.is_not(None),
                )
            )
        )
    return sum(
        1
        for run_id in ids
        if finalize_run(engine, run_id=run_id, settings=settings) in FINISHED_GATE_STATUSES
    )


# --- running one gate to its end (the CLI) ---------------------------------------------------


async def run_gate(
    *,
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    run_id: int,
    owner: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> GateRun:
    """Plan (if needed) and work one run's items in this process until it has a verdict.

    Items held by another worker are waited for, not taken; queued retries are
    waited for until due. `on_progress(finished, total)` is called as items finish.
    """
    if await asyncio.to_thread(
        _claim_run, engine, run_id, owner=owner, lease_seconds=settings.work_lease_seconds
    ):
        with Session(engine) as session:
            planned = session.get(GateRun, run_id)
            assert planned is not None
        if planned.planned_at is None:
            await asyncio.to_thread(plan_run, engine, run_id=run_id, owner=owner)
    while True:
        status = await asyncio.to_thread(finalize_run, engine, run_id=run_id, settings=settings)
        progress = await asyncio.to_thread(_progress, engine, run_id)
        if on_progress is not None:
            on_progress(*progress)
        if status in FINISHED_GATE_STATUSES:
            break
        counts = await process_due_items(
            engine=engine,
            provider_for_model=provider_for_model,
            settings=settings,
            owner=owner,
            limit=settings.worker_batch_size,
            run_id=run_id,
        )
        if not counts:
            await asyncio.sleep(await asyncio.to_thread(_seconds_until_due, engine, run_id))
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        assert run is not None
        return run


def _progress(engine: Engine, run_id: int) -> tuple[int, int]:
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        assert run is not None
        return run.items_done + run.items_error, run.items_total


def _seconds_until_due(engine: Engine, run_id: int) -> float:
    """How long until one of the run's open items can be claimed (capped: new work may come)."""
    columns = ITEM_TABLE.c
    with Session(engine) as session:
        due = session.execute(
            select(
                func.min(columns.next_attempt_at).filter(columns.status == GateItemStatus.QUEUED),
                func.min(columns.lease_until).filter(columns.status == GateItemStatus.RUNNING),
            ).where(columns.gate_run_id == run_id)
        ).one()
    times = [t for t in due if t is not None]
    if not times:
        return 0.05
    earliest = min(t if t.tzinfo else t.replace(tzinfo=utcnow().tzinfo) for t in times)
    return float(min(max((earliest - utcnow()).total_seconds(), 0.05), 5.0))


# --- reading ---------------------------------------------------------------------------------


def get_gate(session: Session, gate_id: int) -> GateRun:
    run = session.get(GateRun, gate_id)
    if run is None:
        raise NotFound(f"gate run {gate_id} not found", gate_id=gate_id)
    return run


def list_gates(
    session: Session,
    *,
    router: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[GateRun], str | None]:
    """Newest first; `cursor` is the id to continue below."""
    query = select(GateRun).order_by(RUN_TABLE.c.id.desc()).limit(limit + 1)
    if router:
        query = query.where(RUN_TABLE.c.router == router)
    if status:
        query = query.where(RUN_TABLE.c.status == status)
    if cursor:
        query = query.where(RUN_TABLE.c.id < paging.decode_id(cursor))
    runs = list(session.scalars(query))
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, (paging.encode_id(cast(int, runs[-1].id)) if more and runs else None)
