"""Batch mode, step 2: rebuild a `submitting` batch's requests from the database and send
them, reconciling first with the provider when an earlier attempt may have created it."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Connection, Engine

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.ingest.models import DecisionPayload
from shadoweval.judge import service as judge_service
from shadoweval.judge.models import VerdictStatus
from shadoweval.providers.base import BatchRequest, ProviderError
from shadoweval.runtime import leases
from shadoweval.shadow import service as shadow_service
from shadoweval.shadow.batch_collect import abandon_batch, finish_run, finish_verdict
from shadoweval.shadow.batch_rows import (
    BATCH_TABLE,
    RECONCILE_SKEW,
    RUN_TABLE,
    BatchRow,
    ProviderForModel,
    batch_owner,
    batch_provider,
    item_table,
    load_batch,
    update_batch,
    update_batch_in,
)
from shadoweval.shadow.batch_values import item_judge, unadopted
from shadoweval.shadow.models import BatchKind, BatchState, WorkStatus
from shadoweval.sql import table_of

log = logging.getLogger(__name__)


def _owned(connection: Connection, table: Table, tag: str, ids: list[int]) -> set[int]:
    return {
        row[0]
        for row in connection.execute(
            select(table.c.id).where(
                table.c.id.in_(ids),
                table.c.lease_owner == batch_owner(tag),
                table.c.status == WorkStatus.RUNNING,
            )
        )
    }


def _load_runs(engine: Engine, ids: list[int]) -> dict[int, tuple[Any, dict[str, Any] | None]]:
    """Shadow runs with the request payload of their decision, in two queries."""
    with engine.connect() as connection:
        runs = {
            row.id: row
            for row in connection.execute(select(RUN_TABLE).where(RUN_TABLE.c.id.in_(ids)))
        }
        payload_table = table_of(DecisionPayload)
        requests = dict(
            connection.execute(
                select(payload_table.c.decision_id, payload_table.c.request).where(
                    payload_table.c.decision_id.in_({r.decision_id for r in runs.values()})
                )
            ).all()
        )
    return {run_id: (run, requests.get(run.decision_id)) for run_id, run in runs.items()}


def prepare_requests(
    engine: Engine, batch: BatchRow, settings: Settings
) -> tuple[list[BatchRequest], list[dict[str, Any]]]:
    """The requests of a `submitting` batch, rebuilt from the database (so a resubmission
    sends the same ones), and its items. Items that cannot be sent (payload gone, answer
    missing) are finished here and dropped from the row before anything is sent."""
    tag, kind, now = batch.tag, batch.kind, utcnow()
    items: list[dict[str, Any]] = list(batch.items or [])
    ids = sorted({int(item["item_id"]) for item in items})
    requests: list[BatchRequest] = []
    dropped: set[int] = set()
    restamped = False
    if kind == BatchKind.SHADOW:
        loaded = _load_runs(engine, ids)
        for item in items:
            run, request = loaded[int(item["item_id"])]
            if request is None:
                dropped.add(int(item["item_id"]))
                continue
            requests.append(
                BatchRequest(
                    custom_id=item["custom_id"],
                    model=run.target_model,
                    messages=list(request.get("messages") or []),
                    system=request.get("system"),
                    params=shadow_service.replay_params(
                        request.get("params"), settings.shadow_default_max_tokens
                    ),
                )
            )
    else:
        pairs = judge_service.load_pairs(engine, ids)
        for index, item in enumerate(items):
            pair = pairs[int(item["item_id"])]
            if not pair.cheaper_answer or not pair.stronger_answer or not pair.messages:
                dropped.add(int(item["item_id"]))
                continue
            # The judge these requests ask, recorded on the row before they are sent, so
            # the verdicts are labelled with it even if the configuration changes meanwhile.
            judge = judge_service.judge_identity(
                pair.verdict.segment_value, settings, model=batch.model
            )
            if item_judge(item) != judge:
                items[index] = item = judge.stamp(item)
                restamped = True
            system, turns = judge_service.order_turns(pair, settings)
            requests.append(
                BatchRequest(
                    custom_id=item["custom_id"],
                    model=batch.model,
                    messages=[{"role": "user", "content": turns[item["order"]]}],
                    system=system,
                    params=judge_service._judge_params(settings),
                    output_schema=judge_service.OUTPUT_SCHEMA,
                    cache_system=True,
                )
            )
    if dropped:
        kept = [item for item in items if int(item["item_id"]) not in dropped]
        with engine.begin() as connection:
            owned = _owned(connection, item_table(kind), tag, sorted(dropped))
            for item_id in sorted(owned):
                if kind == BatchKind.SHADOW:
                    finish_run(
                        connection,
                        tag,
                        item_id,
                        shadow_service._failed_values(
                            "no_payload", "the request payload is gone (retention?)", now
                        ),
                        now,
                    )
                else:
                    finish_verdict(
                        connection,
                        tag,
                        item_id,
                        judge_service._terminal(
                            VerdictStatus.SKIPPED, now, skip_reason="missing_answer"
                        ),
                    )
            connection.execute(
                update(BATCH_TABLE)
                .where(BATCH_TABLE.c.id == batch.id)
                .values(items=kept, item_count=len(kept))
            )
        items = kept
    elif restamped:
        with engine.begin() as connection:
            connection.execute(
                update(BATCH_TABLE).where(BATCH_TABLE.c.id == batch.id).values(items=items)
            )
    return requests, items


async def submit_batch(
    *,
    engine: Engine,
    settings: Settings,
    provider_for_model: ProviderForModel,
    batch_id: int,
    owner: str,
    reconcile: bool,
) -> str:
    """Send a claimed `submitting` batch (after looking for it at the provider when a
    previous attempt may have created it); returns the row's resulting state."""
    batch = await asyncio.to_thread(load_batch, engine, batch_id)
    now = utcnow()
    try:
        provider = batch_provider(provider_for_model, batch.model)
    except ProviderError as error:
        return await _submit_failed(engine, settings, batch, owner, error)
    if provider is None:
        no_api = ProviderError(
            f"provider {batch.provider!r} has no batch API",
            reason="bad_request",
            provider=batch.provider,
        )
        return await _submit_failed(engine, settings, batch, owner, no_api)
    try:
        if reconcile:
            known = await asyncio.to_thread(_known_provider_ids, engine, batch.provider)
            known |= set(batch.rejected_provider_ids or [])
            found = await provider.find_batches(
                tag=batch.tag,
                created_after=batch.created_at - RECONCILE_SKEW,
                size=int(batch.item_count),
            )
            candidates = [found_id for found_id in found if found_id not in known]
            # Two candidates (another deployment, or a batch another worker created a moment
            # ago) cannot be told apart: sending again costs one duplicate at worst, while a
            # wrong adoption would hold the items until that batch ends.
            if len(candidates) == 1:
                adopted = candidates[0]
                log.info("batch %s was created before a crash: %s", batch.tag, adopted)
                if await asyncio.to_thread(
                    _mark_submitted, engine, batch, owner, adopted, created=False
                ):
                    return BatchState.SUBMITTED
                return BatchState.SUBMITTING
            if candidates:
                log.warning(
                    "batch %s: %s unrecorded batches of its size, none provably its own; "
                    "sending it again",
                    batch.tag,
                    len(candidates),
                )
        requests, _ = await asyncio.to_thread(prepare_requests, engine, batch, settings)
        if not requests:
            await asyncio.to_thread(
                update_batch,
                engine,
                batch_id,
                owner,
                {
                    "state": BatchState.COLLECTED,
                    "collected_at": now,
                    "lease_owner": None,
                    "lease_until": None,
                },
            )
            return BatchState.COLLECTED
        provider_batch_id = await provider.submit_batch(requests=requests, tag=batch.tag)
    except ProviderError as error:
        return await _submit_failed(engine, settings, batch, owner, error)
    if await asyncio.to_thread(
        _mark_submitted, engine, batch, owner, provider_batch_id, created=True
    ):
        return BatchState.SUBMITTED
    # Another worker recorded a different batch for this row first: ours is a paid
    # duplicate nobody would ever collect.
    log.error("batch %s: duplicate %s is cancelled", batch.tag, provider_batch_id)
    try:
        await provider.cancel_batch(provider_batch_id)
    except ProviderError as error:
        log.error("cancelling duplicate batch %s failed: %s", provider_batch_id, error.message)
    return BatchState.SUBMITTED


def _known_provider_ids(engine: Engine, provider: str) -> set[str]:
    with engine.connect() as connection:
        return {
            str(row[0])
            for row in connection.execute(
                select(BATCH_TABLE.c.provider_batch_id).where(
                    BATCH_TABLE.c.provider == provider,
                    BATCH_TABLE.c.provider_batch_id.is_not(None),
                )
            )
        }


def _mark_submitted(
    engine: Engine, batch: BatchRow, owner: str, provider_batch_id: str, *, created: bool
) -> bool:
    """Record the provider's batch for the row; False when the row records another one.

    `created`: this worker's create call returned the id, so the batch is certainly this
    row's: a row that adopted it by mistake (reconciling while the create call was in
    flight) gives it up. When the lease was lost meanwhile, the id is still recorded if the
    row has none yet, so a paid batch is never left uncollected.
    """
    now = utcnow()
    columns = BATCH_TABLE.c
    values = {
        "state": BatchState.SUBMITTED,
        "provider_batch_id": provider_batch_id,
        "submitted_at": now,
        "next_check_at": now,
        "lease_owner": None,
        "lease_until": None,
    }
    with engine.begin() as connection:
        if created:
            adopters = connection.execute(
                select(columns.id, columns.rejected_provider_ids).where(
                    columns.provider == batch.provider,
                    columns.provider_batch_id == provider_batch_id,
                    columns.id != batch.id,
                )
            ).all()
            for adopter_id, rejected in adopters:
                log.warning("batch row %s had adopted %s by mistake", adopter_id, provider_batch_id)
                connection.execute(
                    update(BATCH_TABLE)
                    .where(columns.id == adopter_id)
                    .values(**unadopted(rejected, provider_batch_id, now))
                )
        if update_batch_in(connection, batch.id, owner, values):
            return True
        if connection.execute(
            update(BATCH_TABLE)
            .where(
                columns.id == batch.id,
                columns.state == BatchState.SUBMITTING,
                columns.provider_batch_id.is_(None),
            )
            .values(**values)
        ).rowcount:
            log.warning("batch %s: lease lost during submission; id recorded", batch.tag)
            return True
        recorded = connection.execute(
            select(columns.provider_batch_id).where(columns.id == batch.id)
        ).scalar_one()
    return bool(recorded == provider_batch_id)


async def _submit_failed(
    engine: Engine, settings: Settings, batch: BatchRow, owner: str, error: ProviderError
) -> str:
    """A create call failed: try again later (reconciling first, since it may have landed),
    or give the items back when the provider refuses the batch outright."""
    attempts = int(batch.attempts) + 1
    log.warning(
        "submitting batch %s (%s items) to %s failed: %s (%s), attempt %s",
        batch.tag,
        batch.item_count,
        batch.provider,
        error.reason,
        error.message,
        attempts,
    )
    detail = f"{error.reason}: {error.message}"[:2000]
    if error.worth_requeueing and attempts < settings.work_max_attempts:
        delay = leases.retry_delay_seconds(
            attempts, settings.work_retry_base_s, settings.work_retry_max_s
        )
        await asyncio.to_thread(
            update_batch,
            engine,
            batch.id,
            owner,
            {
                "attempts": attempts,
                "error_detail": detail,
                "next_check_at": utcnow() + timedelta(seconds=max(delay, error.retry_after_s or 0)),
                "lease_owner": None,
                "lease_until": None,
            },
        )
        return BatchState.SUBMITTING
    await asyncio.to_thread(abandon_batch, engine, settings, batch, owner, error)
    return BatchState.FAILED
