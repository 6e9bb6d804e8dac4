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

The steps live in their own modules: `batch_form` (1), `batch_submit` (2), `batch_collect`
(3, 4), with the row type and its lease-guarded writes in `batch_rows` and the pure value
builders in `batch_values`. This module holds the two jobs that drive them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import timedelta

from sqlalchemy.engine import Engine

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.providers.base import ProviderError
from shadoweval.shadow.batch_collect import abandon_batch as abandon_batch
from shadoweval.shadow.batch_collect import poll_batch as poll_batch
from shadoweval.shadow.batch_form import form_batch as form_batch
from shadoweval.shadow.batch_form import held_groups as held_groups
from shadoweval.shadow.batch_form import release_to_realtime as release_to_realtime
from shadoweval.shadow.batch_rows import BATCH_TABLE as BATCH_TABLE
from shadoweval.shadow.batch_rows import RUN_TABLE as RUN_TABLE
from shadoweval.shadow.batch_rows import VERDICT_TABLE as VERDICT_TABLE
from shadoweval.shadow.batch_rows import BatchRow as BatchRow
from shadoweval.shadow.batch_rows import ProviderForModel as ProviderForModel
from shadoweval.shadow.batch_rows import batch_owner as batch_owner
from shadoweval.shadow.batch_rows import batch_provider, claim_batches
from shadoweval.shadow.batch_rows import load_batch as _load_batch  # the tests' name
from shadoweval.shadow.batch_submit import prepare_requests as prepare_requests
from shadoweval.shadow.batch_submit import submit_batch as submit_batch
from shadoweval.shadow.models import BatchState

log = logging.getLogger(__name__)

__all__ = [
    "BATCH_TABLE",
    "RUN_TABLE",
    "VERDICT_TABLE",
    "BatchRow",
    "ProviderForModel",
    "_load_batch",
    "abandon_batch",
    "batch_owner",
    "claim_batches",
    "form_batch",
    "held_groups",
    "poll_batch",
    "poll_batches",
    "prepare_requests",
    "release_to_realtime",
    "submit_batch",
    "submit_due_batches",
]


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
            provider = batch_provider(provider_for_model, group.model)
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
