"""Shadow service: enqueue sampled decisions, run their shadow calls, advance their verdicts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.judge.prompts import build_judge_prompt
from shadoweval.providers.base import Completion, Provider, ProviderError
from shadoweval.runtime import leases
from shadoweval.shadow.models import (
    BATCH_HOLD,
    Direction,
    RunKind,
    ShadowMode,
    ShadowRun,
    WorkStatus,
)
from shadoweval.shadow.policy import ShadowPlan, plan_shadow
from shadoweval.sql import dialect_of, table_of

log = logging.getLogger(__name__)

RUN_TABLE = table_of(ShadowRun)
VERDICT_TABLE = table_of(Verdict)
DECISION_TABLE = table_of(Decision)

# Request params replayed on another model; the rest (stream, tools…) are the router's own.
REPLAYED_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "stop_sequences")

PricePerMtok = Callable[[str], float | None]
ProviderForModel = Callable[[str], Provider]


@dataclass
class EnqueueResult:
    enqueued: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def judge_identity(settings: Settings, segment_value: str) -> tuple[str, str]:
    """(judge_key, prompt_hash) of the judge that will see a decision of this segment."""
    rubric = settings.judge_rubric_by_segment.get(segment_value, settings.judge_rubric)
    prompt_hash = build_judge_prompt(rubric).prompt_hash
    return f"{settings.judge_model}#{prompt_hash}", prompt_hash


def shadow_mode_for(settings: Settings, router: str) -> ShadowMode:
    """How this router's shadow and judge calls are made: the per-router override, else the
    global `shadow_mode`."""
    return ShadowMode(settings.shadow_mode_by_router.get(router, settings.shadow_mode))


def resolve_pool(
    session: Session, decision: Decision, settings: Settings, learned: dict[str, dict[str, str]]
) -> dict[str, str]:
    """The router's pool, tier → model: configured, else the decision's candidates, else the
    model last seen routed to each tier (learned from the log, cached in `learned`)."""
    configured = settings.tier_models.get(decision.router) or settings.tier_models.get("*")
    if configured:
        return dict(configured)
    from_candidates = {
        str(c["tier"]): str(c["model"])
        for c in decision.candidates
        if c.get("tier") and c.get("model")
    }
    if len(from_candidates) >= 2:
        return from_candidates
    if decision.router not in learned:
        latest = (
            select(func.max(DECISION_TABLE.c.id))
            .where(DECISION_TABLE.c.router == decision.router)
            .group_by(DECISION_TABLE.c.tier)
        )
        rows = session.execute(
            select(DECISION_TABLE.c.tier, DECISION_TABLE.c.chosen_model).where(
                DECISION_TABLE.c.id.in_(latest.scalar_subquery())
            )
        )
        # A Result has .keys(), so dict(result) would treat it as a mapping.
        learned[decision.router] = {str(tier): str(model) for tier, model in rows}
    return {**learned[decision.router], **from_candidates}


def succeeded_run_values(
    completion: Completion, now: datetime, *, latency_ms: float | None
) -> dict[str, Any]:
    """The columns of a shadow run answered by `completion` (realtime or batch)."""
    return {
        "status": WorkStatus.SUCCEEDED,
        "lease_owner": None,
        "lease_until": None,
        "finished_at": now,
        "response_text": completion.text,
        "served_model": completion.served_model,
        "provider": completion.provider,
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "cache_read_tokens": completion.cache_read_tokens,
        "cost_usd": completion.cost_usd,
        "latency_ms": latency_ms,
        "finish_reason": completion.finish_reason,
        "simulated": completion.simulated,
        "failure_reason": None,
        "failure_detail": None,
    }


def _routed_answer(payload: DecisionPayload | None) -> str | None:
    if payload is None or not payload.response:
        return None
    text = payload.response.get("text")
    return text if isinstance(text, str) and text.strip() else None


def enqueue_sampled_decisions(
    *,
    session: Session,
    settings: Settings,
    price_per_mtok: PricePerMtok,
    limit: int = 500,
    now: datetime | None = None,
) -> EnqueueResult:
    """Give every sampled decision without a verdict row its shadow runs and verdict row.

    Decisions that cannot be shadowed get a `skipped` verdict with the reason, so
    the coverage funnel counts them instead of losing them.
    """
    now = now or utcnow()
    result = EnqueueResult()
    pending = session.scalars(
        select(Decision)
        .where(
            DECISION_TABLE.c.sampled.is_(True),
            ~exists().where(VERDICT_TABLE.c.decision_id == DECISION_TABLE.c.id),
        )
        .order_by(DECISION_TABLE.c.ts, DECISION_TABLE.c.id)
        .limit(limit)
    ).all()
    if not pending:
        return result
    payloads = {
        p.decision_id: p
        for p in session.scalars(
            select(DecisionPayload).where(
                col(DecisionPayload.decision_id).in_([d.id for d in pending])
            )
        )
    }
    learned: dict[str, dict[str, str]] = {}
    for decision in pending:
        assert decision.id is not None
        payload = payloads.get(decision.id)
        pool = resolve_pool(session, decision, settings, learned)
        plan = plan_shadow(routed_tier=decision.tier, pool=pool, price_per_mtok=price_per_mtok)
        skip_reason = None
        if payload is None or not payload.request:
            skip_reason = "no_payload"
        elif decision.payload_redacted:
            skip_reason = "redacted"
        elif plan is None:
            skip_reason = "no_other_tier"
        judge_key, prompt_hash = judge_identity(settings, decision.segment_value)
        verdict = _verdict_row(decision, plan, pool, judge_key, prompt_hash, settings, now)
        if skip_reason is not None:
            verdict.status = VerdictStatus.SKIPPED
            verdict.skip_reason = skip_reason
            verdict.finished_at = now
            result.skipped[skip_reason] = result.skipped.get(skip_reason, 0) + 1
            session.add(verdict)
            continue
        assert plan is not None
        mode = shadow_mode_for(settings, decision.router)
        session.add(verdict)
        session.add(
            _run_row(decision, plan, RunKind.SHADOW, plan.target_tier, plan.target_model, now, mode)
        )
        if _routed_answer(payload) is None:
            session.add(
                _run_row(
                    decision,
                    plan,
                    RunKind.ROUTED_RERUN,
                    decision.tier,
                    decision.served_model or decision.chosen_model,
                    now,
                    mode,
                )
            )
        result.enqueued += 1
    try:
        session.commit()
    except IntegrityError:
        # Another leader enqueued the same decisions first; theirs stand.
        session.rollback()
        log.warning("enqueue raced with another worker; will retry on the next tick")
        return EnqueueResult()
    return result


def _verdict_row(
    decision: Decision,
    plan: ShadowPlan | None,
    pool: dict[str, str],
    judge_key: str,
    prompt_hash: str,
    settings: Settings,
    now: datetime,
) -> Verdict:
    assert decision.id is not None
    direction = plan.direction if plan else Direction.FORWARD
    cheaper_tier = plan.cheaper_tier if plan else decision.tier
    stronger_tier = plan.stronger_tier if plan else decision.tier
    routed_model = decision.served_model or decision.chosen_model
    return Verdict(
        decision_id=decision.id,
        router=decision.router,
        request_id=decision.request_id,
        ts=decision.ts,
        segment_value=decision.segment_value,
        routed_tier=decision.tier,
        direction=direction,
        inclusion_probability=decision.inclusion_probability,
        router_score=decision.router_score,
        score_semantics=decision.score_semantics,
        cheaper_tier=cheaper_tier,
        stronger_tier=stronger_tier,
        cheaper_model=routed_model if cheaper_tier == decision.tier else pool.get(cheaper_tier, ""),
        stronger_model=routed_model
        if stronger_tier == decision.tier
        else pool.get(stronger_tier, ""),
        judge_key=judge_key,
        judge_model=settings.judge_model,
        prompt_hash=prompt_hash,
        status=VerdictStatus.WAITING,
        next_attempt_at=now,
        created_at=now,
    )


def _run_row(
    decision: Decision,
    plan: ShadowPlan,
    kind: RunKind,
    target_tier: str,
    target_model: str,
    now: datetime,
    mode: ShadowMode = ShadowMode.REALTIME,
) -> ShadowRun:
    assert decision.id is not None
    return ShadowRun(
        decision_id=decision.id,
        kind=kind,
        direction=plan.direction,
        routed_tier=decision.tier,
        target_tier=target_tier,
        target_model=target_model,
        ts=decision.ts,
        status=WorkStatus.QUEUED,
        # Batch-mode runs wait for the batch submitter, never for a realtime lane.
        next_attempt_at=BATCH_HOLD if mode == ShadowMode.BATCH else now,
        created_at=now,
        mode=mode,
    )


def advance_stalled_verdicts(engine: Engine, *, limit: int = 500) -> int:
    """Safety net: re-check waiting verdicts whose runs have all finished."""
    now = utcnow()
    unfinished = exists().where(
        RUN_TABLE.c.decision_id == VERDICT_TABLE.c.decision_id,
        RUN_TABLE.c.status.in_([WorkStatus.QUEUED, WorkStatus.RUNNING]),
    )
    with engine.begin() as connection:
        decision_ids = [
            row[0]
            for row in connection.execute(
                select(VERDICT_TABLE.c.decision_id)
                .where(VERDICT_TABLE.c.status == VerdictStatus.WAITING, ~unfinished)
                .limit(limit)
            )
        ]
        for decision_id in decision_ids:
            _advance_verdict(connection, decision_id, now)
    return len(decision_ids)


# --- running ---------------------------------------------------------------------------------


def replay_params(params: dict[str, Any] | None, default_max_tokens: int) -> dict[str, Any]:
    replayed = {k: v for k, v in (params or {}).items() if k in REPLAYED_PARAMS}
    replayed.setdefault("max_tokens", default_max_tokens)
    return replayed


def _load_run(engine: Engine, run_id: int) -> tuple[ShadowRun, dict[str, Any] | None]:
    with Session(engine) as session:
        run = session.get(ShadowRun, run_id)
        assert run is not None
        payload = session.get(DecisionPayload, run.decision_id)
        return run, payload.request if payload else None


def advance_verdict(connection: Connection, decision_id: int, now: datetime) -> None:
    """Public name of `_advance_verdict`, for the batch collector."""
    _advance_verdict(connection, decision_id, now)


def _advance_verdict(connection: Connection, decision_id: int, now: datetime) -> None:
    """After a run finished: queue the verdict once all its runs succeeded, or skip it.

    The verdict row is locked first: two runs of one decision finishing at once
    would otherwise each see the other still running and neither queue it.
    """
    lock = select(VERDICT_TABLE.c.id).where(VERDICT_TABLE.c.decision_id == decision_id)
    lock = dialect_of(connection).lock_for_update(lock)
    connection.execute(lock).all()
    runs = connection.execute(
        select(RUN_TABLE.c.status, RUN_TABLE.c.mode).where(RUN_TABLE.c.decision_id == decision_id)
    ).all()
    statuses = [row[0] for row in runs]
    # A decision shadowed in batch mode is judged in batch mode too.
    judge_due = BATCH_HOLD if any(row[1] == ShadowMode.BATCH for row in runs) else now
    waiting = VERDICT_TABLE.c.status == VerdictStatus.WAITING
    if WorkStatus.FAILED in statuses:
        connection.execute(
            update(VERDICT_TABLE)
            .where(VERDICT_TABLE.c.decision_id == decision_id, waiting)
            .values(status=VerdictStatus.SKIPPED, skip_reason="provider_failure", finished_at=now)
        )
    elif statuses and all(s == WorkStatus.SUCCEEDED for s in statuses):
        connection.execute(
            update(VERDICT_TABLE)
            .where(VERDICT_TABLE.c.decision_id == decision_id, waiting)
            .values(status=VerdictStatus.QUEUED, next_attempt_at=judge_due)
        )


def _record_run(
    engine: Engine,
    run: ShadowRun,
    owner: str,
    values: dict[str, Any],
    now: datetime,
) -> bool:
    assert run.id is not None
    with engine.begin() as connection:
        if not leases._finish(connection, RUN_TABLE, item_id=run.id, owner=owner, values=values):
            return False
        _advance_verdict(connection, run.decision_id, now)
        return True


async def run_one(
    *,
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    owner: str,
    run_id: int,
) -> str:
    """Run one claimed shadow run; returns its resulting status."""
    run, request = await asyncio.to_thread(_load_run, engine, run_id)
    now = utcnow()
    if request is None:
        values = _failed_values("no_payload", "the request payload is gone (retention?)", now)
        await asyncio.to_thread(_record_run, engine, run, owner, values, now)
        return WorkStatus.FAILED
    try:
        provider = provider_for_model(run.target_model)
        completion = await provider.complete(
            model=run.target_model,
            messages=list(request.get("messages") or []),
            system=request.get("system"),
            params=replay_params(request.get("params"), settings.shadow_default_max_tokens),
        )
    except ProviderError as error:
        return await _handle_failure(engine, run, owner, error, settings)
    now = utcnow()
    values = succeeded_run_values(completion, now, latency_ms=completion.latency_ms)
    recorded = await asyncio.to_thread(_record_run, engine, run, owner, values, now)
    if not recorded:
        log.warning("shadow run %s finished after its lease was taken over; result dropped", run.id)
    return WorkStatus.SUCCEEDED


def _failed_values(reason: str, detail: str, now: datetime) -> dict[str, Any]:
    return {
        "status": WorkStatus.FAILED,
        "lease_owner": None,
        "lease_until": None,
        "finished_at": now,
        "failure_reason": reason,
        "failure_detail": detail[:2000],
    }


async def _handle_failure(
    engine: Engine, run: ShadowRun, owner: str, error: ProviderError, settings: Settings
) -> str:
    now = utcnow()
    assert run.id is not None
    log.warning(
        "shadow run %s on %s failed: %s (%s), attempt %s of %s",
        run.id,
        run.target_model,
        error.reason,
        error.message,
        run.attempts,
        settings.work_max_attempts,
    )
    retry_at = leases.next_retry(error, attempts=run.attempts, settings=settings, now=now)
    if retry_at is not None:
        await asyncio.to_thread(
            leases.release_for_retry,
            engine,
            RUN_TABLE,
            item_id=run.id,
            owner=owner,
            retry_at=retry_at,
            values={"failure_reason": error.reason, "failure_detail": error.message[:2000]},
        )
        return WorkStatus.QUEUED
    values = _failed_values(error.reason, error.message, now)
    await asyncio.to_thread(_record_run, engine, run, owner, values, now)
    return WorkStatus.FAILED


def fail_exhausted(engine: Engine, *, max_attempts: int, now: datetime | None = None) -> int:
    """Record as failed the runs whose lease expired after their last allowed attempt."""
    now = now or utcnow()
    columns = RUN_TABLE.c
    with engine.begin() as connection:
        rows = connection.execute(
            update(RUN_TABLE)
            .where(
                columns.status == WorkStatus.RUNNING,
                columns.lease_until < now,
                columns.attempts >= max_attempts,
            )
            .values(
                **_failed_values("lease_expired", f"worker lost {max_attempts} times (crash?)", now)
            )
            .returning(columns.id, columns.decision_id)
        ).all()
        for decision_id in {row[1] for row in rows}:
            _advance_verdict(connection, decision_id, now)
    return len(rows)


async def process_due_runs(
    *,
    engine: Engine,
    provider_for_model: ProviderForModel,
    settings: Settings,
    owner: str,
    limit: int,
) -> dict[str, int]:
    """Claim up to `limit` due runs and run them concurrently (providers bound concurrency)."""
    await asyncio.to_thread(fail_exhausted, engine, max_attempts=settings.work_max_attempts)

    async def handle(run_id: int) -> str:
        return await run_one(
            engine=engine,
            provider_for_model=provider_for_model,
            settings=settings,
            owner=owner,
            run_id=run_id,
        )

    return await leases.claim_and_process(
        engine,
        RUN_TABLE,
        owner=owner,
        limit=limit,
        lease_seconds=settings.work_lease_seconds,
        handle=handle,
    )
