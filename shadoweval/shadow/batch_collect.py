"""Batch mode, steps 3 and 4: poll a submitted batch and, once it has ended, write every
item's result and mark the row collected in one transaction (or fail it as a whole)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.judge import service as judge_service
from shadoweval.judge.models import VerdictStatus
from shadoweval.providers.base import BatchItemResult, OutputSchema, ProviderError
from shadoweval.shadow import service as shadow_service
from shadoweval.shadow.batch_rows import (
    RUN_TABLE,
    VERDICT_TABLE,
    BatchRow,
    ProviderForModel,
    batch_owner,
    batch_provider,
    load_batch,
    update_batch,
    update_batch_in,
)
from shadoweval.shadow.batch_values import item_judge, run_values, unadopted, verdict_values
from shadoweval.shadow.models import BatchKind, BatchState, WorkStatus

log = logging.getLogger(__name__)


@dataclass
class Collected:
    counts: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0

    def add(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


async def poll_batch(
    *,
    engine: Engine,
    settings: Settings,
    provider_for_model: ProviderForModel,
    batch_id: int,
    owner: str,
) -> str:
    """Check one claimed `submitted` batch; collect it when it has ended."""
    batch = await asyncio.to_thread(load_batch, engine, batch_id)
    now = utcnow()
    later = now + timedelta(seconds=settings.batch_poll_interval_seconds)
    try:
        provider = batch_provider(provider_for_model, batch.model)
        if provider is None:
            raise ProviderError(
                f"provider {batch.provider!r} has no batch API",
                reason="bad_request",
                provider=batch.provider,
            )
        state = await provider.batch_state(batch.submitted_id)
        if not state.ended:
            await asyncio.to_thread(
                update_batch,
                engine,
                batch_id,
                owner,
                {
                    "provider_status": state.status,
                    "next_check_at": later,
                    "lease_owner": None,
                    "lease_until": None,
                },
            )
            return BatchState.SUBMITTED
        schemas: dict[str, OutputSchema] = {}
        if batch.kind == BatchKind.JUDGE:
            schemas = {item["custom_id"]: judge_service.OUTPUT_SCHEMA for item in batch.items}
        results = await provider.batch_results(batch.submitted_id, output_schemas=schemas)
    except ProviderError as error:
        detail = f"{error.reason}: {error.message}"[:2000]
        if error.status_code == 404:
            log.error("batch %s is gone at the provider: %s", batch.tag, detail)
            lost = ProviderError(
                f"the batch is gone at the provider: {detail}",
                reason="server_error",  # its items are fine: they go into another batch
                provider=batch.provider,
            )
            await asyncio.to_thread(abandon_batch, engine, settings, batch, owner, lost)
            return BatchState.FAILED
        log.warning("polling batch %s failed: %s", batch.tag, detail)
        await asyncio.to_thread(
            update_batch,
            engine,
            batch_id,
            owner,
            {
                "attempts": int(batch.attempts) + 1,
                "error_detail": detail,
                "next_check_at": later,
                "lease_owner": None,
                "lease_until": None,
            },
        )
        return BatchState.SUBMITTED
    by_id = {result.custom_id: result for result in results}
    if by_id and not any(custom_id.startswith(f"{batch.tag}-") for custom_id in by_id):
        # Not this row's batch (a wrong adoption): book nothing, send the items again. (No
        # results at all is this batch failing as a whole: its items are counted missing.)
        log.error(
            "batch %s: provider batch %s holds none of its items; it is submitted again",
            batch.tag,
            batch.provider_batch_id,
        )
        await asyncio.to_thread(_reject_adoption, engine, batch, owner)
        return BatchState.SUBMITTING
    pairs: dict[int, judge_service.PairInput] = {}
    if batch.kind == BatchKind.JUDGE:
        ids = sorted({int(item["item_id"]) for item in batch.items})
        pairs = await asyncio.to_thread(judge_service.load_pairs, engine, ids)
    collected = await asyncio.to_thread(
        _collect, engine, settings, batch, owner, by_id, pairs, state.status
    )
    if collected is None:
        log.warning("batch %s was collected by another worker", batch.tag)
        return BatchState.SUBMITTED
    log.info("batch %s collected: %s", batch.tag, collected.counts)
    return BatchState.COLLECTED


def _reject_adoption(engine: Engine, batch: BatchRow, owner: str) -> bool:
    return update_batch(
        engine,
        batch.id,
        owner,
        unadopted(batch.rejected_provider_ids, batch.submitted_id, utcnow()),
    )


def _collect(
    engine: Engine,
    settings: Settings,
    batch: BatchRow,
    owner: str,
    results: dict[str, BatchItemResult],
    pairs: dict[int, judge_service.PairInput],
    provider_status: str,
) -> Collected | None:
    """Record every item's result and mark the batch collected, all or nothing."""
    now = utcnow()
    with engine.begin() as connection:
        if not update_batch_in(
            connection,
            batch.id,
            owner,
            {"state": BatchState.COLLECTED},
        ):
            return None
        collected = apply_results(connection, settings, batch, results, pairs, now)
        update_batch_in(
            connection,
            batch.id,
            owner,
            {
                "provider_status": provider_status,
                "ended_at": now,
                "collected_at": now,
                "counts": collected.counts,
                "cost_usd": collected.cost_usd,
                "lease_owner": None,
                "lease_until": None,
            },
        )
    return collected


def abandon_batch(
    engine: Engine, settings: Settings, batch: BatchRow, owner: str, error: ProviderError
) -> None:
    """The batch will never give results: mark it failed and treat every item as errored
    with `error`, in one transaction (back to the queue when a retry could help and attempts
    are left, else failed, as a realtime call failing this way would be)."""
    now = utcnow()
    detail = f"{error.reason}: {error.message}"[:2000]
    with engine.begin() as connection:
        if not update_batch_in(
            connection,
            batch.id,
            owner,
            {
                "state": BatchState.FAILED,
                "error_detail": detail,
                "ended_at": now,
                "lease_owner": None,
                "lease_until": None,
            },
        ):
            return
        results = {
            item["custom_id"]: BatchItemResult(item["custom_id"], "errored", error=error)
            for item in batch.items or []
        }
        apply_results(connection, settings, batch, results, {}, now)


def apply_results(
    connection: Connection,
    settings: Settings,
    batch: BatchRow,
    results: Mapping[str, BatchItemResult],
    pairs: Mapping[int, judge_service.PairInput],
    now: datetime,
    *,
    missing_detail: str = "missing from the batch results",
) -> Collected:
    collected = Collected()
    tag = batch.tag
    items: list[dict[str, Any]] = list(batch.items or [])
    if batch.kind == BatchKind.SHADOW:
        attempts = dict(
            connection.execute(
                select(RUN_TABLE.c.id, RUN_TABLE.c.attempts).where(
                    RUN_TABLE.c.id.in_([int(i["item_id"]) for i in items])
                )
            ).all()
        )
        for item in items:
            run_id = int(item["item_id"])
            result = results.get(item["custom_id"])
            outcome, values = run_values(
                result, attempts.get(run_id, 0), settings, now, missing_detail
            )
            if finish_run(connection, tag, run_id, values, now):
                collected.add(outcome)
                collected.cost_usd += float(values.get("cost_usd") or 0.0)
        return collected

    by_verdict: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        by_verdict.setdefault(int(item["item_id"]), []).append(item)
    rows = {
        row[0]: row
        for row in connection.execute(
            select(
                VERDICT_TABLE.c.id,
                VERDICT_TABLE.c.attempts,
                VERDICT_TABLE.c.order_cheaper_first,
                VERDICT_TABLE.c.order_stronger_first,
            ).where(VERDICT_TABLE.c.id.in_(list(by_verdict)))
        )
    }
    for verdict_id, verdict_items in by_verdict.items():
        row = rows.get(verdict_id)
        if row is None:
            continue
        outcome, values, cost = verdict_values(
            row, verdict_items, results, pairs.get(verdict_id), settings, now, missing_detail
        )
        for item in verdict_items:
            # Which batch (and judge) answered this order; its cost is at the batch price.
            judge = item_judge(item)
            answered = values.get(item["order"])
            if isinstance(answered, dict):
                answered = {**answered, "batch": tag}
                values[item["order"]] = judge.stamp(answered) if judge else answered
        if finish_verdict(connection, tag, verdict_id, values):
            collected.add(outcome)
            collected.cost_usd += cost
    return collected


def finish_run(
    connection: Connection, tag: str, run_id: int, values: Mapping[str, Any], now: datetime
) -> bool:
    """Write a run's result if the batch still holds it; a finished run advances its verdict."""
    result = connection.execute(
        update(RUN_TABLE)
        .where(
            RUN_TABLE.c.id == run_id,
            RUN_TABLE.c.lease_owner == batch_owner(tag),
            RUN_TABLE.c.status == WorkStatus.RUNNING,
        )
        .values(**values)
        .returning(RUN_TABLE.c.decision_id)
    ).all()
    if not result:
        return False
    if values["status"] in (WorkStatus.SUCCEEDED, WorkStatus.FAILED):
        shadow_service.advance_verdict(connection, int(result[0][0]), now)
    return True


def finish_verdict(
    connection: Connection, tag: str, verdict_id: int, values: Mapping[str, Any]
) -> bool:
    result = connection.execute(
        update(VERDICT_TABLE)
        .where(
            VERDICT_TABLE.c.id == verdict_id,
            VERDICT_TABLE.c.lease_owner == batch_owner(tag),
            VERDICT_TABLE.c.status == VerdictStatus.RUNNING,
        )
        .values(**values)
    )
    return bool(result.rowcount == 1)
