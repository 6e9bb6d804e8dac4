"""Judge service: claim queued verdicts, judge each pair in both orders, store the labels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.ingest.models import DecisionPayload
from shadoweval.judge import answers as judge_answers
from shadoweval.judge import pricing as judge_pricing
from shadoweval.judge.models import OrderResult, Verdict, VerdictStatus
from shadoweval.judge.parsing import (
    VERDICT_SCHEMA,
    VERDICT_SCHEMA_NAME,
    VerdictParseError,
    combine_orders,
    parse_verdict,
)
from shadoweval.judge.prompts import build_judge_prompt, build_user_turn
from shadoweval.providers.base import OutputSchema, Provider, ProviderError
from shadoweval.runtime import leases
from shadoweval.shadow.models import ShadowRun
from shadoweval.sql import table_of

log = logging.getLogger(__name__)

VERDICT_TABLE = table_of(Verdict)
OUTPUT_SCHEMA = OutputSchema(
    name=VERDICT_SCHEMA_NAME,
    schema=VERDICT_SCHEMA,
    description="Record your verdict on the two answers.",
)
# Failures of the judge's output (not of the transport): retried once, then `error`.
OUTPUT_FAILURES = frozenset({"refused", "truncated", "no_structured_output", "malformed_response"})
ORDERS = ("order_cheaper_first", "order_stronger_first")


@dataclass
class PairInput:
    verdict: Verdict
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None
    cheaper_answer: str | None
    stronger_answer: str | None
    simulated: bool

    @property
    def segment_value(self) -> str:
        return self.verdict.segment_value


def _load_pair(engine: Engine, verdict_id: int) -> PairInput:
    return load_pairs(engine, [verdict_id])[verdict_id]


def load_pairs(engine: Engine, verdict_ids: list[int]) -> dict[int, PairInput]:
    """Each verdict with its conversation and both answers (the routed one and the
    shadow's), in three queries whatever the count."""
    with Session(engine) as session:
        verdicts = session.scalars(select(Verdict).where(col(Verdict.id).in_(verdict_ids))).all()
        decision_ids = [v.decision_id for v in verdicts]
        payloads = {
            p.decision_id: p
            for p in session.scalars(
                select(DecisionPayload).where(col(DecisionPayload.decision_id).in_(decision_ids))
            )
        }
        runs: dict[int, dict[str, ShadowRun]] = {}
        for run in session.scalars(
            select(ShadowRun).where(col(ShadowRun.decision_id).in_(decision_ids))
        ):
            runs.setdefault(run.decision_id, {})[run.kind] = run
    pairs: dict[int, PairInput] = {}
    for verdict in verdicts:
        assert verdict.id is not None
        pairs[verdict.id] = _pair(
            verdict, payloads.get(verdict.decision_id), runs.get(verdict.decision_id, {})
        )
    return pairs


def _pair(
    verdict: Verdict, payload: DecisionPayload | None, runs: dict[str, ShadowRun]
) -> PairInput:
    request = (payload.request if payload else None) or {}
    answers = judge_answers.assemble(
        verdict,
        logged_response=payload.response if payload else None,
        runs={kind: judge_answers.RunAnswer(run.response_text) for kind, run in runs.items()},
    )
    return PairInput(
        verdict=verdict,
        messages=list(request.get("messages") or []),
        system=request.get("system"),
        cheaper_answer=answers.cheaper_answer,
        stronger_answer=answers.stronger_answer,
        simulated=any(run.simulated for run in runs.values()),
    )


async def judge_order(
    *,
    provider: Provider,
    settings: Settings,
    system: str,
    user_turn: str,
) -> OrderResult:
    """One order of a pair: up to two calls when the output is unusable, then `error`.

    Transport failures that survived the provider's own retries propagate as
    ProviderError, so the whole verdict is retried later rather than guessed. Each call is
    priced from its tokens at `settings`' prices (a gate run's recorded ones), not the
    worker provider's.
    """
    price = judge_pricing.judge_price(settings)
    result = OrderResult()
    for attempt in (1, 2):
        result.attempts = attempt
        try:
            completion = await provider.complete(
                model=settings.judge_model,
                messages=[{"role": "user", "content": user_turn}],
                system=system,
                params=_judge_params(settings),
                output_schema=OUTPUT_SCHEMA,
                cache_system=True,
            )
        except ProviderError as error:
            if error.reason not in OUTPUT_FAILURES:
                raise
            result.error = f"{error.reason}: {error.message}"
            continue
        result.input_tokens += completion.input_tokens
        result.output_tokens += completion.output_tokens
        result.cache_read_tokens += completion.cache_read_tokens
        result.cache_write_tokens = (result.cache_write_tokens or 0) + completion.cache_write_tokens
        result.cost_usd += judge_pricing.call_cost_usd(completion, price)
        result.latency_ms += completion.latency_ms
        try:
            parsed = parse_verdict(completion.structured)
        except VerdictParseError as error:
            result.error = f"{error.reason}: {error.detail}"
            continue
        result.winner, result.score_a, result.score_b = (
            parsed.winner,
            parsed.score_a,
            parsed.score_b,
        )
        result.rationale = parsed.rationale
        result.error = None
        return result
    return result


def _judge_params(settings: Settings) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": settings.judge_max_tokens}
    if settings.judge_temperature is not None:
        params["temperature"] = settings.judge_temperature
    return params


def _store(engine: Engine, verdict_id: int, owner: str, values: dict[str, Any]) -> bool:
    return leases.finish(engine, VERDICT_TABLE, item_id=verdict_id, owner=owner, values=values)


async def judge_one(
    *,
    engine: Engine,
    provider_for_model: Callable[[str], Provider],
    settings: Settings,
    owner: str,
    verdict_id: int,
) -> str:
    """Judge one claimed verdict in both orders; returns its resulting status."""
    pair = await asyncio.to_thread(_load_pair, engine, verdict_id)
    verdict = pair.verdict
    now = utcnow()
    if not pair.cheaper_answer or not pair.stronger_answer or not pair.messages:
        await asyncio.to_thread(
            _store,
            engine,
            verdict_id,
            owner,
            _terminal(VerdictStatus.SKIPPED, now, skip_reason="missing_answer"),
        )
        return VerdictStatus.SKIPPED

    system, turns = order_turns(pair, settings)
    judge = judge_identity(verdict.segment_value, settings)
    existing = finished_orders(verdict, judge)
    try:
        provider = provider_for_model(settings.judge_model)
    except ProviderError as error:
        return await _provider_failure(engine, verdict, owner, error, settings)

    async def run_order(name: str) -> tuple[str, OrderResult]:
        result = await judge_order(
            provider=provider, settings=settings, system=system, user_turn=turns[name]
        )
        # Stored at once: a crash after one order never pays for that order again.
        await asyncio.to_thread(
            _store,
            engine,
            verdict_id,
            owner,
            {name: judge.stamp(result.model_dump(mode="json")), "status": VerdictStatus.RUNNING},
        )
        return name, result

    outcomes = await asyncio.gather(
        *(run_order(name) for name in ORDERS if name not in existing), return_exceptions=True
    )
    results = dict(existing)
    for outcome in outcomes:
        if isinstance(outcome, ProviderError):
            return await _provider_failure(engine, verdict, owner, outcome, settings)
        if isinstance(outcome, BaseException):
            raise outcome
        results[outcome[0]] = outcome[1]

    status, values = final_values(
        pair, results[ORDERS[0]], results[ORDERS[1]], settings, judge=judge
    )
    if not await asyncio.to_thread(_store, engine, verdict_id, owner, values):
        log.warning("verdict %s finished after its lease was taken over; dropped", verdict_id)
    return status


class JudgedTexts(Protocol):
    """What the judge reads of a pair (a PairInput, or a JudgeTexts built elsewhere)."""

    @property
    def segment_value(self) -> str: ...
    @property
    def messages(self) -> list[dict[str, Any]]: ...
    @property
    def system(self) -> str | list[dict[str, Any]] | None: ...
    @property
    def cheaper_answer(self) -> str | None: ...
    @property
    def stronger_answer(self) -> str | None: ...


@dataclass(frozen=True)
class JudgeTexts:
    segment_value: str
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None
    cheaper_answer: str | None
    stronger_answer: str | None


def order_turns(
    pair: JudgedTexts, settings: Settings, names: tuple[str, str] = ORDERS
) -> tuple[str, dict[str, str]]:
    """The judge's system prompt and the user turn of each order (cheaper answer as A, then
    as B), keyed by `names`; the realtime, batch, rejudge and gate paths send exactly these."""
    assert pair.cheaper_answer is not None
    assert pair.stronger_answer is not None
    rubric = settings.judge_rubric_by_segment.get(pair.segment_value, settings.judge_rubric)
    prompt = build_judge_prompt(rubric)
    cheaper_first, stronger_first = names
    answers = {
        cheaper_first: (pair.cheaper_answer, pair.stronger_answer),
        stronger_first: (pair.stronger_answer, pair.cheaper_answer),
    }
    turns = {
        name: build_user_turn(
            messages=pair.messages,
            system=pair.system,
            answer_a=answer_a,
            answer_b=answer_b,
            char_budget=settings.judge_char_budget,
        )
        for name, (answer_a, answer_b) in answers.items()
    }
    return prompt.system, turns


@dataclass(frozen=True)
class JudgeIdentity:
    """Which judge answered an order: its model and the hash of its prompt (rubric)."""

    model: str
    prompt_hash: str

    @property
    def key(self) -> str:
        return f"{self.model}#{self.prompt_hash}"

    def stamp(self, order: dict[str, Any]) -> dict[str, Any]:
        """A stored order, labelled with this judge."""
        return {**order, "judge_model": self.model, "prompt_hash": self.prompt_hash}


def judge_identity(
    segment_value: str, settings: Settings, model: str | None = None
) -> JudgeIdentity:
    """The judge configured now for a verdict of `segment_value` (`model` overrides the
    configured judge model, e.g. the one a batch was formed with)."""
    rubric = settings.judge_rubric_by_segment.get(segment_value, settings.judge_rubric)
    return JudgeIdentity(model or settings.judge_model, build_judge_prompt(rubric).prompt_hash)


def order_judge(stored: dict[str, Any] | None) -> JudgeIdentity | None:
    """The judge a stored order names; None for orders stored before orders were labelled."""
    if not stored or not stored.get("judge_model") or not stored.get("prompt_hash"):
        return None
    return JudgeIdentity(str(stored["judge_model"]), str(stored["prompt_hash"]))


def finished_orders(verdict: Verdict, judge: JudgeIdentity | None = None) -> dict[str, OrderResult]:
    """The orders of a verdict that already have the judge's answer (kept across retries).
    With `judge`, an order another judge answered is not kept: it is asked again, so both
    orders of a verdict always come from one judge."""
    kept: dict[str, OrderResult] = {}
    for name in ORDERS:
        stored = getattr(verdict, name)
        if not stored or not stored.get("winner"):
            continue
        answered_by = order_judge(stored)
        if judge is not None and answered_by is not None and answered_by != judge:
            continue
        kept[name] = OrderResult.model_validate(stored)
    return kept


def final_values(
    pair: PairInput,
    cheaper_first: OrderResult,
    stronger_first: OrderResult,
    settings: Settings,
    *,
    now: datetime | None = None,
    judge: JudgeIdentity | None = None,
) -> tuple[str, dict[str, Any]]:
    """The terminal status and column values of a verdict whose two orders are settled:
    `done` with its labels, or `error` when either order has no usable answer.

    `judge` is the judge that answered both orders (the caller makes sure they agree); by
    default the one configured now, which is right only for orders just answered."""
    now = now or utcnow()
    assert pair.cheaper_answer is not None
    assert pair.stronger_answer is not None
    judge = judge or judge_identity(pair.verdict.segment_value, settings)
    common: dict[str, Any] = {
        "judge_model": judge.model,
        "prompt_hash": judge.prompt_hash,
        "judge_key": judge.key,
        "judge_cost_usd": cheaper_first.cost_usd + stronger_first.cost_usd,
        "judge_latency_ms": cheaper_first.latency_ms + stronger_first.latency_ms,
        "cheaper_chars": len(pair.cheaper_answer),
        "stronger_chars": len(pair.stronger_answer),
        "simulated": pair.simulated,
        ORDERS[0]: judge.stamp(cheaper_first.model_dump(mode="json")),
        ORDERS[1]: judge.stamp(stronger_first.model_dump(mode="json")),
    }
    errors = [r.error for r in (cheaper_first, stronger_first) if r.winner is None]
    if errors:
        values = _terminal(
            VerdictStatus.ERROR, now, error_detail="; ".join(e or "" for e in errors)[:2000]
        )
        return VerdictStatus.ERROR, {**values, **common}
    labels = combine_orders(cheaper_first, stronger_first)
    values = _terminal(VerdictStatus.DONE, now)
    values.update(
        outcome=labels.outcome,
        consistent=labels.consistent,
        strong_needed=labels.strong_needed,
        cheap_acceptable=labels.cheap_acceptable,
        score_cheaper=labels.score_cheaper,
        score_stronger=labels.score_stronger,
        score_delta=labels.score_delta,
    )
    return VerdictStatus.DONE, {**values, **common}


def _terminal(status: str, now: Any, **values: Any) -> dict[str, Any]:
    return {
        "status": status,
        "lease_owner": None,
        "lease_until": None,
        "finished_at": now,
        **values,
    }


async def _provider_failure(
    engine: Engine, verdict: Verdict, owner: str, error: ProviderError, settings: Settings
) -> str:
    assert verdict.id is not None
    now = utcnow()
    log.warning(
        "judge call for verdict %s failed: %s (%s), attempt %s of %s",
        verdict.id,
        error.reason,
        error.message,
        verdict.attempts,
        settings.work_max_attempts,
    )
    retry_at = leases.next_retry(error, attempts=verdict.attempts, settings=settings, now=now)
    if retry_at is not None:
        await asyncio.to_thread(
            leases.release_for_retry,
            engine,
            VERDICT_TABLE,
            item_id=verdict.id,
            owner=owner,
            retry_at=retry_at,
            values={"error_detail": f"{error.reason}: {error.message}"[:2000]},
        )
        return VerdictStatus.QUEUED
    values = _terminal(
        VerdictStatus.ERROR,
        now,
        error_detail=f"judge provider failure: {error.reason}: {error.message}"[:2000],
    )
    await asyncio.to_thread(_store, engine, verdict.id, owner, values)
    return VerdictStatus.ERROR


def fail_exhausted(engine: Engine, *, max_attempts: int) -> int:
    """Verdicts whose worker died on their last allowed attempt become `error`."""
    now = utcnow()
    columns = VERDICT_TABLE.c
    with engine.begin() as connection:
        result = connection.execute(
            VERDICT_TABLE.update()
            .where(
                columns.status == VerdictStatus.RUNNING,
                columns.lease_until < now,
                columns.attempts >= max_attempts,
            )
            .values(
                **_terminal(
                    VerdictStatus.ERROR,
                    now,
                    error_detail=f"worker lost {max_attempts} times (crash?)",
                )
            )
        )
        return int(result.rowcount)


async def process_due_verdicts(
    *,
    engine: Engine,
    provider_for_model: Callable[[str], Provider],
    settings: Settings,
    owner: str,
    limit: int,
) -> dict[str, int]:
    await asyncio.to_thread(fail_exhausted, engine, max_attempts=settings.work_max_attempts)

    async def handle(verdict_id: int) -> str:
        return await judge_one(
            engine=engine,
            provider_for_model=provider_for_model,
            settings=settings,
            owner=owner,
            verdict_id=verdict_id,
        )

    return await leases.claim_and_process(
        engine,
        VERDICT_TABLE,
        owner=owner,
        limit=limit,
        lease_seconds=settings.work_lease_seconds,
        handle=handle,
    )
