"""The one way decisions are written: capacity, group commit, the writer lock, the counters.

Every ingest route is an adapter in front of this module: `/v1/decisions` (JSON and
NDJSON), `/v1/integrations/litellm` and `/v1/traces` turn their format into decision
items (a ParsedBody) and hand them to `IngestSubmitter.submit`, which

1. takes one of the app's ingest slots within `ingest_wait_seconds`, or raises Overloaded
   (503 with Retry-After): the only capacity check of ingest;
2. prepares the items (prepare.py): on the event loop when the body is small and the
   sampling plan fresh, in a worker thread otherwise;
3. queues them on the API process's group-commit writer (writer.py), which stores
   concurrent requests in one transaction under db.ingest_write_lock, and waits for the
   commit: a route answers 202 only after its rows are committed;
4. counts stored, duplicate, sampled and rejected decisions (metrics.ApiMetrics).

`/v1/feedback` writes other rows (per-item upserts, no sampling) and so skips steps 2–4,
but takes the same slots and writer lock (`IngestSubmitter.write_other`).

Phoenix's `db/bulk_inserter.py` with `routers/v1/traces.py` is the model (one inserter,
one capacity check); unlike Phoenix, nothing is acknowledged before it is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from shadoweval.config import Settings
from shadoweval.deps import SettingsDep
from shadoweval.exceptions import Overloaded
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.ingest.store import IngestOutcome
from shadoweval.ingest.writer import IngestWriter
from shadoweval.metrics import ApiMetrics

T = TypeVar("T")

_SLOT_POLL_SECONDS = 0.005
_app_state_lock = threading.Lock()


def ingest_writer(app: Any) -> IngestWriter:
    """The app's group-commit writer, created on first use."""
    writer: IngestWriter | None = getattr(app.state, "ingest_writer", None)
    if writer is None:
        with _app_state_lock:
            writer = getattr(app.state, "ingest_writer", None)
            if writer is None:
                writer = app.state.ingest_writer = IngestWriter(
                    app.state.engine, app.state.sampling_plan
                )
    return writer


async def _take_slot(slots: threading.BoundedSemaphore, wait_s: float) -> bool:
    """A write slot within `wait_s`, polled so a client that goes away leaks none."""
    deadline = time.monotonic() + wait_s
    while not slots.acquire(blocking=False):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_SLOT_POLL_SECONDS)
    return True


class IngestSubmitter:
    """Submits one request's decision items; see the module docstring for the steps."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.metrics: ApiMetrics = app.state.metrics

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        settings = self.settings
        slots: threading.BoundedSemaphore = self.app.state.ingest_slots
        if not await _take_slot(slots, settings.ingest_wait_seconds):
            raise Overloaded(
                f"{settings.ingest_max_concurrent} ingest requests are being written already; "
                "retry after the Retry-After delay",
                retry_after_s=1,
            )
        try:
            yield
        finally:
            slots.release()

    async def submit(self, parsed: ParsedBody, *, inline: bool = False) -> IngestOutcome:
        """Store the valid new items, once they are committed; per-item results and errors.

        `inline`: prepare on the event loop (a small body; saves a thread hop's latency).
        """
        settings = self.settings
        writer = ingest_writer(self.app)
        async with self._slot():
            # Prepared here, not in the writer: one request is validated while another's
            # rows are written. Inline only while the sampling plan needs no database read.
            if inline and writer.plan_is_fresh(settings):
                prepared = writer.prepare(parsed, settings)
            else:
                prepared = await run_in_threadpool(writer.prepare, parsed, settings)
            outcome = await asyncio.wrap_future(writer.submit(prepared, settings))
        self._count(outcome)
        return outcome

    async def write_other(self, write: Callable[[], T]) -> T:
        """An ingest write that is not decisions (feedback): the same slots and writer lock,
        its own transaction, in a worker thread."""
        lock = ingest_writer(self.app).write_lock

        def locked() -> T:
            with lock:
                return write()

        async with self._slot():
            return await run_in_threadpool(locked)

    def _count(self, outcome: IngestOutcome) -> None:
        metrics = self.metrics
        metrics.decisions_ingested.inc(outcome.count("stored"))
        metrics.decisions_duplicate.inc(outcome.count("duplicate"))
        metrics.decisions_sampled.inc(
            sum(1 for r in outcome.results if r.status == "stored" and r.sampled)
        )
        metrics.record_item_errors(outcome.errors)


async def ingest_submitter(request: Request, settings: SettingsDep) -> IngestSubmitter:
    """The dependency every ingest route writes through (async: no thread hop)."""
    return IngestSubmitter(request.app, settings)


SubmitterDep = Annotated[IngestSubmitter, Depends(ingest_submitter)]
