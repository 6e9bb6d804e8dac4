"""Batch mode: held shadow runs and judge calls go to the providers' batch APIs at half price.

Life of one batch (a `provider_batch` row):

1. Form: in ONE transaction a `submitting` row with its custom_ids is inserted and its
   items (queued, held at BATCH_HOLD) become `running` under the batch's lease (owner
   `batch:<tag>`, lease_until BATCH_HOLD, attempts + 1). Nothing has been sent yet.
2. Submit: the requests are rebuilt from the database and sent; the provider's batch id
   is stored and the row becomes `submitted`. A row found still `submitting` later (a
   crash, a failed or timed-out call) is reconciled first: the provider is asked for the
   batch carrying this tag, and it is submitted again only when there is none.
3. Poll: `submitted` rows are checked every `batch_poll_interval_seconds` by whichever
   worker claims them (a short lease); a restarted worker finds the same row and id.
4. Collect: once the batch has ended, every item's result is written and the row marked
   `collected` in one transaction. Items that errored (transiently), expired or were
   canceled go back to the queue for the next batch, or fail after `work_max_attempts`.

Custom ids are `<tag>-r<shadow_run id>` and `<tag>-v<verdict id>-c|s` (judge order:
cheaper answer first | stronger answer first). A provider without a batch API (the
simulated one) gets its held items back on the realtime lanes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.ingest.models import DecisionPayload
from shadoweval.judge import service as judge_service
from shadoweval.judge.models import OrderResult, VerdictStatus
from shadoweval.judge.parsing import VerdictParseError, parse_verdict
from shadoweval.providers.base import (
    BatchItemResult,
    BatchProvider,
    BatchRequest,
    OutputSchema,
    Provider,
    ProviderError,
    as_batch_provider,
)
from shadoweval.runtime import leases
from shadoweval.shadow import service as shadow_service
from shadoweval.shadow.models import (
    BATCH_HOLD,
    BatchKind,
    BatchState,
    ProviderBatch,
    ShadowMode,
    WorkStatus,
)

log = logging.getLogger(__name__)

BATCH_TABLE = cast(Table, ProviderBatch.__table__)  # type: ignore[attr-defined]
RUN_TABLE = shadow_service.RUN_TABLE
VERDICT_TABLE = judge_service.VERDICT_TABLE
ORDER_CODES = {"order_cheaper_first": "c", "order_stronger_first": "s"}
# Batches created this long before their row (clock skew between us and the provider)
# still count when a `submitting` row is reconciled.
RECONCILE_SKEW = timedelta(minutes=10)

ProviderForModel = Callable[[str], Provider]


def batch_owner(tag: str) -> str:
    """The lease owner of the items inside the batch `tag`."""
    return f"batch:{tag}"


def _table(kind: str) -> Table:
    return RUN_TABLE if kind == BatchKind.SHADOW else VERDICT_TABLE


def _batch_provider(provider_for_model: ProviderForModel, model: str) -> BatchProvider | None:
    return as_batch_provider(provider_for_model(model))


# --- forming ---------------------------------------------------------------------------------


@dataclass
class HeldGroup:
    kind: str
    model: str
    count: int
    oldest: datetime


def held_groups(engine: Engine, settings: Settings) -> list[HeldGroup]:
    """Items waiting for a batch, per (kind, model)."""
    held_run = (RUN_TABLE.c.status == WorkStatus.QUEUED) & (
        RUN_TABLE.c.next_attempt_at == BATCH_HOLD
    )
    held_verdict = (VERDICT_TABLE.c.status == VerdictStatus.QUEUED) & (
        VERDICT_TABLE.c.next_attempt_at == BATCH_HOLD
    )
    with engine.connect() as connection:
        runs = connection.execute(
            select(RUN_TABLE.c.target_model, func.count(), func.min(RUN_TABLE.c.created_at))
            .where(held_run)
            .group_by(RUN_TABLE.c.target_model)
        ).all()
        verdicts = connection.execute(
            select(func.count(), func.min(VERDICT_TABLE.c.created_at)).where(held_verdict)
        ).one()
    groups = [HeldGroup(BatchKind.SHADOW, str(m), int(n), oldest) for m, n, oldest in runs]
    if verdicts[0]:
        groups.append(
            HeldGroup(BatchKind.JUDGE, settings.judge_model, int(verdicts[0]), verdicts[1])
        )
    return groups


def _held_condition(table: Table, kind: str, model: str) -> Any:
    condition = (table.c.status == WorkStatus.QUEUED) & (table.c.next_attempt_at == BATCH_HOLD)
    if kind == BatchKind.SHADOW:
        condition = condition & (table.c.target_model == model)
    return condition


def release_to_realtime(engine: Engine, kind: str, model: str, now: datetime) -> int:
    """Hand held items to the realtime lanes (their provider has no batch API)."""
    table = _table(kind)
    values: dict[str, Any] = {"next_attempt_at": now}
    if kind == BatchKind.SHADOW:
        values["mode"] = ShadowMode.REALTIME
    with engine.begin() as connection:
        result = connection.execute(
            update(table).where(_held_condition(table, kind, model)).values(**values)
        )
        return int(result.rowcount)


class _NothingHeld(Exception):
    pass


def form_batch(
    engine: Engine,
    *,
    kind: str,
    provider: str,
    model: str,
    limit: int,
    owner: str,
    lease_seconds: float,
    now: datetime,
) -> int | None:
    """Commit a `submitting` batch row holding up to `limit` held items; its id, or None
    when another worker took them first."""
    tag = f"se-{uuid.uuid4().hex[:20]}"
    table = _table(kind)
    try:
        with engine.begin() as connection:
            batch_id = connection.execute(
                insert(BATCH_TABLE)
                .values(
                    tag=tag,
                    provider=provider,
                    kind=kind,
                    model=model,
                    state=BatchState.SUBMITTING,
                    items=[],
                    item_count=0,
                    attempts=0,
                    lease_owner=owner,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    next_check_at=now,
                    created_at=now,
                    cost_usd=0.0,
                )
                .returning(BATCH_TABLE.c.id)
            ).scalar_one()
            candidates = (
                select(table.c.id)
                .where(_held_condition(table, kind, model))
                .order_by(table.c.id)
                .limit(limit)
            )
            if connection.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            values: dict[str, Any] = {
                "status": WorkStatus.RUNNING,
                "lease_owner": batch_owner(tag),
                "lease_until": BATCH_HOLD,
                "attempts": table.c.attempts + 1,
            }
            if kind == BatchKind.SHADOW:
                values["batch_id"] = batch_id
            ids = sorted(
                row[0]
                for row in connection.execute(
                    update(table)
                    .where(table.c.id.in_(candidates.scalar_subquery()))
                    .values(**values)
                    .returning(table.c.id)
                )
            )
            if not ids:
                raise _NothingHeld
            items = _items(connection, kind, tag, ids)
            connection.execute(
                update(BATCH_TABLE)
                .where(BATCH_TABLE.c.id == batch_id)
                .values(items=items, item_count=len(items))
            )
    except _NothingHeld:
        return None
    return int(batch_id)


def _items(connection: Connection, kind: str, tag: str, ids: list[int]) -> list[dict[str, Any]]:
    if kind == BatchKind.SHADOW:
        return [{"custom_id": f"{tag}-r{item_id}", "item_id": item_id} for item_id in ids]
    items: list[dict[str, Any]] = []
    rows = connection.execute(
        select(
            VERDICT_TABLE.c.id,
            VERDICT_TABLE.c.order_cheaper_first,
            VERDICT_TABLE.c.order_stronger_first,
        ).where(VERDICT_TABLE.c.id.in_(ids))
    )
    for verdict_id, cheaper_first, stronger_first in sorted(rows, key=lambda r: r[0]):
        stored = {"order_cheaper_first": cheaper_first, "order_stronger_first": stronger_first}
        for order, code in ORDER_CODES.items():
            if not (stored[order] or {}).get("winner"):  # a settled order is never paid twice
                items.append(
                    {
                        "custom_id": f"{tag}-v{verdict_id}-{code}",
                        "item_id": verdict_id,
                        "order": order,
                    }
                )
    return items


# --- claiming batch rows ---------------------------------------------------------------------


def claim_batches(
    engine: Engine, *, state: str, owner: str, lease_seconds: float, now: datetime, limit: int
) -> list[int]:
    """Claim due batch rows in `state` whose lease is free or expired (committed)."""
    columns = BATCH_TABLE.c
    return leases.claim_rows(
        engine,
        BATCH_TABLE,
        where=and_(
            columns.state == state,
            columns.next_check_at <= now,
            or_(columns.lease_until.is_(None), columns.lease_until < now),
        ),
        order_by=(columns.next_check_at, columns.id),
        limit=limit,
        values={"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_seconds)},
    )


def _load_batch(engine: Engine, batch_id: int) -> dict[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(select(BATCH_TABLE).where(BATCH_TABLE.c.id == batch_id)).one()
    return dict(row._mapping)


def _update_batch(engine: Engine, batch_id: int, owner: str, values: Mapping[str, Any]) -> bool:
    """Write to a batch row this worker still holds."""
    with engine.begin() as connection:
        return _update_batch_in(connection, batch_id, owner, values)


def _update_batch_in(
    connection: Connection, batch_id: int, owner: str, values: Mapping[str, Any]
) -> bool:
    result = connection.execute(
        update(BATCH_TABLE)
        .where(BATCH_TABLE.c.id == batch_id, BATCH_TABLE.c.lease_owner == owner)
        .values(**values)
    )
    return bool(result.rowcount == 1)


# --- building requests -----------------------------------------------------------------------


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
        payload_table = cast(Table, DecisionPayload.__table__)  # type: ignore[attr-defined]
        requests = dict(
            connection.execute(
                select(payload_table.c.decision_id, payload_table.c.request).where(
                    payload_table.c.decision_id.in_({r.decision_id for r in runs.values()})
                )
            ).all()
        )
    return {run_id: (run, requests.get(run.decision_id)) for run_id, run in runs.items()}


def prepare_requests(
    engine: Engine, batch: dict[str, Any], settings: Settings
) -> tuple[list[BatchRequest], list[dict[str, Any]]]:
    """The requests of a `submitting` batch, rebuilt from the database (so a resubmission
    sends the same ones), and its items. Items that cannot be sent (payload gone, answer
    missing) are finished here and dropped from the row before anything is sent."""
    tag, kind, now = batch["tag"], batch["kind"], utcnow()
    items: list[dict[str, Any]] = list(batch["items"] or [])
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
                pair.verdict.segment_value, settings, model=batch["model"]
            )
            if _item_judge(item) != judge:
                items[index] = item = judge.stamp(item)
                restamped = True
            system, turns = judge_service.order_turns(pair, settings)
            requests.append(
                BatchRequest(
                    custom_id=item["custom_id"],
                    model=batch["model"],
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
            owned = _owned(connection, _table(kind), tag, sorted(dropped))
            for item_id in sorted(owned):
                if kind == BatchKind.SHADOW:
                    _finish_run(
                        connection,
                        tag,
                        item_id,
                        shadow_service._failed_values(
                            "no_payload", "the request payload is gone (retention?)", now
                        ),
                        now,
                    )
                else:
                    _finish_verdict(
                        connection,
                        tag,
                        item_id,
                        judge_service._terminal(
                            VerdictStatus.SKIPPED, now, skip_reason="missing_answer"
                        ),
                    )
            connection.execute(
                update(BATCH_TABLE)
                .where(BATCH_TABLE.c.id == batch["id"])
                .values(items=kept, item_count=len(kept))
            )
        items = kept
    elif restamped:
        with engine.begin() as connection:
            connection.execute(
                update(BATCH_TABLE).where(BATCH_TABLE.c.id == batch["id"]).values(items=items)
            )
    return requests, items


def _item_judge(item: Mapping[str, Any]) -> judge_service.JudgeIdentity | None:
    """The judge a judge batch item was sent to (None: not stamped yet)."""
    return judge_service.order_judge(dict(item))


# --- submitting ------------------------------------------------------------------------------


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
    batch = await asyncio.to_thread(_load_batch, engine, batch_id)
    now = utcnow()
    try:
        provider = _batch_provider(provider_for_model, batch["model"])
    except ProviderError as error:
        return await _submit_failed(engine, settings, batch, owner, error)
    if provider is None:
        no_api = ProviderError(
            f"provider {batch['provider']!r} has no batch API",
            reason="bad_request",
            provider=batch["provider"],
        )
        return await _submit_failed(engine, settings, batch, owner, no_api)
    try:
        if reconcile:
            known = await asyncio.to_thread(_known_provider_ids, engine, batch["provider"])
            known |= set(batch["rejected_provider_ids"] or [])
            found = await provider.find_batches(
                tag=batch["tag"],
                created_after=batch["created_at"] - RECONCILE_SKEW,
                size=int(batch["item_count"]),
            )
            candidates = [found_id for found_id in found if found_id not in known]
            # Two candidates (another deployment, or a batch another worker created a moment
            # ago) cannot be told apart: sending again costs one duplicate at worst, while a
            # wrong adoption would hold the items until that batch ends.
            if len(candidates) == 1:
                adopted = candidates[0]
                log.info("batch %s was created before a crash: %s", batch["tag"], adopted)
                if await asyncio.to_thread(
                    _mark_submitted, engine, batch, owner, adopted, created=False
                ):
                    return BatchState.SUBMITTED
                return BatchState.SUBMITTING
            if candidates:
                log.warning(
                    "batch %s: %s unrecorded batches of its size, none provably its own; "
                    "sending it again",
                    batch["tag"],
                    len(candidates),
                )
        requests, _ = await asyncio.to_thread(prepare_requests, engine, batch, settings)
        if not requests:
            await asyncio.to_thread(
                _update_batch,
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
        provider_batch_id = await provider.submit_batch(requests=requests, tag=batch["tag"])
    except ProviderError as error:
        return await _submit_failed(engine, settings, batch, owner, error)
    if await asyncio.to_thread(
        _mark_submitted, engine, batch, owner, provider_batch_id, created=True
    ):
        return BatchState.SUBMITTED
    # Another worker recorded a different batch for this row first: ours is a paid
    # duplicate nobody would ever collect.
    log.error("batch %s: duplicate %s is cancelled", batch["tag"], provider_batch_id)
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
    engine: Engine, batch: dict[str, Any], owner: str, provider_batch_id: str, *, created: bool
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
                    columns.provider == batch["provider"],
                    columns.provider_batch_id == provider_batch_id,
                    columns.id != batch["id"],
                )
            ).all()
            for adopter_id, rejected in adopters:
                log.warning("batch row %s had adopted %s by mistake", adopter_id, provider_batch_id)
                connection.execute(
                    update(BATCH_TABLE)
                    .where(columns.id == adopter_id)
                    .values(**_unadopted(rejected, provider_batch_id, now))
                )
        if _update_batch_in(connection, batch["id"], owner, values):
            return True
        if connection.execute(
            update(BATCH_TABLE)
            .where(
                columns.id == batch["id"],
                columns.state == BatchState.SUBMITTING,
                columns.provider_batch_id.is_(None),
            )
            .values(**values)
        ).rowcount:
            log.warning("batch %s: lease lost during submission; id recorded", batch["tag"])
            return True
        recorded = connection.execute(
            select(columns.provider_batch_id).where(columns.id == batch["id"])
        ).scalar_one()
    return bool(recorded == provider_batch_id)


def _unadopted(rejected: list[str] | None, provider_batch_id: str, now: datetime) -> dict[str, Any]:
    """Values that put a row back to `submitting` after a wrong adoption."""
    return {
        "state": BatchState.SUBMITTING,
        "provider_batch_id": None,
        "provider_status": None,
        "submitted_at": None,
        "next_check_at": now,
        "lease_owner": None,
        "lease_until": None,
        "rejected_provider_ids": sorted({*(rejected or []), provider_batch_id}),
    }


async def _submit_failed(
    engine: Engine, settings: Settings, batch: dict[str, Any], owner: str, error: ProviderError
) -> str:
    """A create call failed: try again later (reconciling first, since it may have landed),
    or give the items back when the provider refuses the batch outright."""
    attempts = int(batch["attempts"]) + 1
    log.warning(
        "submitting batch %s (%s items) to %s failed: %s (%s), attempt %s",
        batch["tag"],
        batch["item_count"],
        batch["provider"],
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
            _update_batch,
            engine,
            batch["id"],
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


def abandon_batch(
    engine: Engine, settings: Settings, batch: dict[str, Any], owner: str, error: ProviderError
) -> None:
    """The batch will never give results: mark it failed and treat every item as errored
    with `error`, in one transaction (back to the queue when a retry could help and attempts
    are left, else failed, as a realtime call failing this way would be)."""
    now = utcnow()
    detail = f"{error.reason}: {error.message}"[:2000]
    with engine.begin() as connection:
        if not _update_batch_in(
            connection,
            batch["id"],
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
            for item in batch["items"] or []
        }
        _apply_results(connection, settings, batch, results, {}, now)


# --- polling and collecting ------------------------------------------------------------------


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
    batch = await asyncio.to_thread(_load_batch, engine, batch_id)
    now = utcnow()
    later = now + timedelta(seconds=settings.batch_poll_interval_seconds)
    try:
        provider = _batch_provider(provider_for_model, batch["model"])
        if provider is None:
            raise ProviderError(
                f"provider {batch['provider']!r} has no batch API",
                reason="bad_request",
                provider=batch["provider"],
            )
        state = await provider.batch_state(batch["provider_batch_id"])
        if not state.ended:
            await asyncio.to_thread(
                _update_batch,
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
        if batch["kind"] == BatchKind.JUDGE:
            schemas = {item["custom_id"]: judge_service.OUTPUT_SCHEMA for item in batch["items"]}
        results = await provider.batch_results(batch["provider_batch_id"], output_schemas=schemas)
    except ProviderError as error:
        detail = f"{error.reason}: {error.message}"[:2000]
        if error.status_code == 404:
            log.error("batch %s is gone at the provider: %s", batch["tag"], detail)
            lost = ProviderError(
                f"the batch is gone at the provider: {detail}",
                reason="server_error",  # its items are fine: they go into another batch
                provider=batch["provider"],
            )
            await asyncio.to_thread(abandon_batch, engine, settings, batch, owner, lost)
            return BatchState.FAILED
        log.warning("polling batch %s failed: %s", batch["tag"], detail)
        await asyncio.to_thread(
            _update_batch,
            engine,
            batch_id,
            owner,
            {
                "attempts": int(batch["attempts"]) + 1,
                "error_detail": detail,
                "next_check_at": later,
                "lease_owner": None,
                "lease_until": None,
            },
        )
        return BatchState.SUBMITTED
    by_id = {result.custom_id: result for result in results}
    if by_id and not any(custom_id.startswith(f"{batch['tag']}-") for custom_id in by_id):
        # Not this row's batch (a wrong adoption): book nothing, send the items again. (No
        # results at all is this batch failing as a whole: its items are counted missing.)
        log.error(
            "batch %s: provider batch %s holds none of its items; it is submitted again",
            batch["tag"],
            batch["provider_batch_id"],
        )
        await asyncio.to_thread(_reject_adoption, engine, batch, owner)
        return BatchState.SUBMITTING
    pairs: dict[int, judge_service.PairInput] = {}
    if batch["kind"] == BatchKind.JUDGE:
        ids = sorted({int(item["item_id"]) for item in batch["items"]})
        pairs = await asyncio.to_thread(judge_service.load_pairs, engine, ids)
    collected = await asyncio.to_thread(
        _collect, engine, settings, batch, owner, by_id, pairs, state.status
    )
    if collected is None:
        log.warning("batch %s was collected by another worker", batch["tag"])
        return BatchState.SUBMITTED
    log.info("batch %s collected: %s", batch["tag"], collected.counts)
    return BatchState.COLLECTED


def _reject_adoption(engine: Engine, batch: dict[str, Any], owner: str) -> bool:
    return _update_batch(
        engine,
        batch["id"],
        owner,
        _unadopted(batch["rejected_provider_ids"], batch["provider_batch_id"], utcnow()),
    )


def _collect(
    engine: Engine,
    settings: Settings,
    batch: dict[str, Any],
    owner: str,
    results: dict[str, BatchItemResult],
    pairs: dict[int, judge_service.PairInput],
    provider_status: str,
) -> Collected | None:
    """Record every item's result and mark the batch collected, all or nothing."""
    now = utcnow()
    with engine.begin() as connection:
        if not _update_batch_in(
            connection,
            batch["id"],
            owner,
            {"state": BatchState.COLLECTED},
        ):
            return None
        collected = _apply_results(connection, settings, batch, results, pairs, now)
        _update_batch_in(
            connection,
            batch["id"],
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


def _apply_results(
    connection: Connection,
    settings: Settings,
    batch: dict[str, Any],
    results: Mapping[str, BatchItemResult],
    pairs: Mapping[int, judge_service.PairInput],
    now: datetime,
    *,
    missing_detail: str = "missing from the batch results",
) -> Collected:
    collected = Collected()
    tag = batch["tag"]
    items: list[dict[str, Any]] = list(batch["items"] or [])
    if batch["kind"] == BatchKind.SHADOW:
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
            outcome, values = _run_values(
                result, attempts.get(run_id, 0), settings, now, missing_detail
            )
            if _finish_run(connection, tag, run_id, values, now):
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
        outcome, values, cost = _verdict_values(
            row, verdict_items, results, pairs.get(verdict_id), settings, now, missing_detail
        )
        for item in verdict_items:
            # Which batch (and judge) answered this order; its cost is at the batch price.
            judge = _item_judge(item)
            answered = values.get(item["order"])
            if isinstance(answered, dict):
                answered = {**answered, "batch": tag}
                values[item["order"]] = judge.stamp(answered) if judge else answered
        if _finish_verdict(connection, tag, verdict_id, values):
            collected.add(outcome)
            collected.cost_usd += cost
    return collected


def _finish_run(
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


def _finish_verdict(
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


def _retry_or_fail(failure: ProviderError | None, attempts: int, settings: Settings) -> bool:
    """Whether an item that did not succeed goes into another batch."""
    if attempts >= settings.work_max_attempts:
        return False
    return failure is None or failure.worth_requeueing


def _requeue(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": WorkStatus.QUEUED,
        "lease_owner": None,
        "lease_until": None,
        "next_attempt_at": BATCH_HOLD,
        **values,
    }


def _run_values(
    result: BatchItemResult | None,
    attempts: int,
    settings: Settings,
    now: datetime,
    missing_detail: str,
) -> tuple[str, dict[str, Any]]:
    """(outcome, column values) of one shadow run from its batch item."""
    if result is not None and result.completion is not None:
        # A batch has a turnaround, not a per-call latency.
        return "succeeded", shadow_service.succeeded_run_values(
            result.completion, now, latency_ms=None
        )
    outcome = "missing" if result is None else result.outcome
    failure = None if result is None else result.error
    if failure is not None:
        reason, detail = failure.reason, failure.message
    else:
        reason = "batch_expired" if outcome == "expired" else f"batch_{outcome}"
        detail = missing_detail if result is None else f"the batch item was {outcome}"
    if outcome == "succeeded" or not _retry_or_fail(failure, attempts, settings):
        # A succeeded item whose output is unusable (refused…) fails as a realtime call would.
        return f"{outcome}_failed", shadow_service._failed_values(reason, detail, now)
    return f"{outcome}_retried", _requeue(
        {"failure_reason": reason[:64], "failure_detail": detail[:2000]}
    )


def _order_from(
    previous: OrderResult, result: BatchItemResult
) -> tuple[OrderResult | None, ProviderError | None]:
    """An order's new state from its batch item, or the transport failure that left it
    unanswered (None, error)."""
    completion = result.completion
    if completion is None:
        failure = result.error
        if result.outcome == "succeeded" and failure is not None:
            if failure.reason not in judge_service.OUTPUT_FAILURES:
                return None, failure
            return previous.model_copy(
                update={
                    "attempts": previous.attempts + 1,
                    "error": f"{failure.reason}: {failure.message}",
                }
            ), None
        return None, failure
    order = previous.model_copy(
        update={
            "attempts": previous.attempts + 1,
            "input_tokens": previous.input_tokens + completion.input_tokens,
            "output_tokens": previous.output_tokens + completion.output_tokens,
            "cache_read_tokens": previous.cache_read_tokens + completion.cache_read_tokens,
            "cost_usd": previous.cost_usd + completion.cost_usd,
        }
    )
    try:
        parsed = parse_verdict(completion.structured)
    except VerdictParseError as error:
        order.error = f"{error.reason}: {error.detail}"
        return order, None
    order.winner, order.score_a, order.score_b = parsed.winner, parsed.score_a, parsed.score_b
    order.rationale = parsed.rationale
    order.error = None
    return order, None


def _verdict_values(
    row: Any,
    items: list[dict[str, Any]],
    results: Mapping[str, BatchItemResult],
    pair: judge_service.PairInput | None,
    settings: Settings,
    now: datetime,
    missing_detail: str,
) -> tuple[str, dict[str, Any], float]:
    """(outcome, column values, USD spent in this batch) of one verdict from its orders."""
    stored = {"order_cheaper_first": row[2], "order_stronger_first": row[3]}
    orders = {
        name: OrderResult.model_validate(value) if value else None for name, value in stored.items()
    }
    spent = 0.0
    failures: list[str] = []
    permanent = False
    judge = next((j for j in map(_item_judge, items) if j is not None), None)
    discarded: dict[str, None] = {}
    answered_here = {item["order"] for item in items}
    for name, value in stored.items():
        # An order settled earlier by another judge (model or rubric changed since) is not
        # combined with this batch's answer: it is asked again of this batch's judge.
        answered_by = judge_service.order_judge(value)
        if name not in answered_here and judge and answered_by and answered_by != judge:
            orders[name] = None
            discarded[name] = None
            failures.append(f"{name}: answered by {answered_by.key}, not {judge.key}")
    for item in items:
        name = item["order"]
        previous = orders[name] or OrderResult()
        result = results.get(item["custom_id"])
        if result is None:
            failures.append(f"{name}: {missing_detail}")
            continue
        updated, failure = _order_from(previous, result)
        if updated is not None:
            spent += updated.cost_usd - previous.cost_usd
            orders[name] = updated
            continue
        failures.append(
            f"{name}: {failure.reason}: {failure.message}"
            if failure is not None
            else f"{name}: the batch item was {result.outcome}"
        )
        permanent = permanent or (failure is not None and not failure.worth_requeueing)
    # Orders answered here are re-dumped; the others are kept as stored (with their judge).
    order_values: dict[str, Any] = {
        name: order.model_dump(mode="json") if name in answered_here else stored[name]
        for name, order in orders.items()
        if order is not None
    }
    order_values.update(discarded)
    cheaper_first, stronger_first = orders["order_cheaper_first"], orders["order_stronger_first"]
    # An order is settled with a winner, or after two unusable answers (as in realtime).
    settled = [
        order is not None and (order.winner is not None or order.attempts >= 2)
        for order in (cheaper_first, stronger_first)
    ]
    if all(settled) and pair is not None:
        assert cheaper_first is not None
        assert stronger_first is not None
        status, values = judge_service.final_values(
            pair, cheaper_first, stronger_first, settings, now=now, judge=judge
        )
        return status, values, spent
    detail = "; ".join(failures)[:2000] or "an order needs another try"
    if permanent or int(row[1]) >= settings.work_max_attempts:
        values = judge_service._terminal(
            VerdictStatus.ERROR, now, error_detail=f"judge provider failure: {detail}"[:2000]
        )
        return VerdictStatus.ERROR, {**values, **order_values}, spent
    return "retried", _requeue({"error_detail": detail, **order_values}), spent


# --- the two jobs ----------------------------------------------------------------------------


async def submit_due_batches(
    *,
    engine: Engine,
    settings: Settings,
    provider_for_model: ProviderForModel,
    owner: str,
    force: bool = False,
) -> dict[str, int]:
    """Reconcile batches left `submitting`, then gather held items into new batches: a group
    goes when it fills a batch or its oldest item has waited `batch_max_age_seconds`
    (`force`: at once)."""
    counts: dict[str, int] = {}

    def count(key: str, n: int = 1) -> None:
        if n:
            counts[key] = counts.get(key, 0) + n

    now = utcnow()
    stuck = await asyncio.to_thread(
        claim_batches,
        engine,
        state=BatchState.SUBMITTING,
        owner=owner,
        lease_seconds=settings.work_lease_seconds,
        now=now,
        limit=20,
    )
    for batch_id in stuck:
        state = await submit_batch(
            engine=engine,
            settings=settings,
            provider_for_model=provider_for_model,
            batch_id=batch_id,
            owner=owner,
            reconcile=True,
        )
        count(f"resumed_{state}")

    for group in await asyncio.to_thread(held_groups, engine, settings):
        try:
            provider = _batch_provider(provider_for_model, group.model)
        except ProviderError as error:
            # Formed anyway: the submission fails the same way and the items use up their
            # attempts and are recorded as failed, as realtime ones would be, never left waiting.
            log.warning("no provider for %s held items of %s: %s", group.kind, group.model, error)
            provider_name = error.provider
        else:
            if provider is None:
                released = release_to_realtime(engine, group.kind, group.model, now)
                count("released_to_realtime", released)
                continue
            provider_name = provider.name
        remaining = group.count
        aged = group.oldest <= now - timedelta(seconds=settings.batch_max_age_seconds)
        while remaining > 0 and (force or aged or remaining >= settings.batch_max_items):
            formed: int | None = await asyncio.to_thread(
                functools.partial(
                    form_batch,
                    engine,
                    kind=group.kind,
                    provider=provider_name,
                    model=group.model,
                    limit=settings.batch_max_items,
                    owner=owner,
                    lease_seconds=settings.work_lease_seconds,
                    # Read per batch: after a long pass a lease from the pass's start would
                    # already have run out, and another worker would submit a second copy.
                    now=utcnow(),
                )
            )
            if formed is None:
                break
            batch_id = formed
            remaining -= settings.batch_max_items
            state = await submit_batch(
                engine=engine,
                settings=settings,
                provider_for_model=provider_for_model,
                batch_id=batch_id,
                owner=owner,
                reconcile=False,
            )
            count(f"{group.kind}_{state}")
    return counts


async def poll_batches(
    *,
    engine: Engine,
    settings: Settings,
    provider_for_model: ProviderForModel,
    owner: str,
    limit: int = 20,
) -> dict[str, int]:
    """Check the submitted batches that are due; collect those that have ended."""
    ids = await asyncio.to_thread(
        claim_batches,
        engine,
        state=BatchState.SUBMITTED,
        owner=owner,
        lease_seconds=settings.work_lease_seconds,
        now=utcnow(),
        limit=limit,
    )
    counts: dict[str, int] = {}
    for batch_id in ids:
        state = await poll_batch(
            engine=engine,
            settings=settings,
            provider_for_model=provider_for_model,
            batch_id=batch_id,
            owner=owner,
        )
        key = "collected" if state == BatchState.COLLECTED else f"still_{state}"
        counts[key] = counts.get(key, 0) + 1
    return counts
