"""The model watcher: one `model_change` event per new (router, tier, model).

Clock: decision time. Every judgement here compares decisions' `ts` (first-seen times
are decision times, events carry the ts of the decision that showed the change, boosts
end a fixed span of decision time after it), so a log replayed at any speed gives the
same events. Wall (database) clock only for the watermark's settle delay and row stamps.

The watcher reads the decision log past its watermark (decision ids) and keeps, per
router and tier, every *chosen* model it has seen (`chosen_model` is pre-failover,
so provider failover never looks like a routing change). The first decision choosing a
model new to a tier records one `model_change` event with that decision's ts (unique
per (kind, dedup key), so two watchers racing over the same decisions still record
one) and boosts sampling of the tier; with `gate_on_model_change` the same transaction
queues one gate run of the new model against the tier's previous one (its id goes into
the event's details). A model announced by `PUT /v1/pool` is no exception: PUT stores
it with no first-seen time, and the decision that first chooses it records the event.
Not an event:
- the models a tier chooses in its first `model_pool_establish_minutes` of decision time establish
  the pool (a router may use two models in a tier from day one); keyed on ts, not on
  what a watcher pass happens to read, so a fast replay establishes what the live
  stream established;
- a model first seen on decisions no later than the newest decision-derived first-seen
  of the tier (a backfill of old logs): it joins the pool, but the router did not
  change to it (DESIGN Time rule: keyed on ts).

Watermark: ids become visible in commit order on PostgreSQL, so a decision may commit
after a pass read higher ids. The watermark therefore trails what was read: a pass
records the highest id it saw and the database clock (`pending_*`); that id becomes the
watermark only `model_watch_settle_seconds` later, and every pass reads again from the
watermark, so recent ids are re-read (idempotently: pool rows and events are unique).
A decision is missed only if its ingest transaction is still open that long after it
drew its id. Every step is idempotent: a crash before the watermark moves repeats nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.events import service as events_service
from shadoweval.events.models import Event, EventKind
from shadoweval.exceptions import InvalidRequest
from shadoweval.gate import service as gate_service
from shadoweval.gate.create import check_power
from shadoweval.gate.models import GateCreate
from shadoweval.ingest.models import Decision
from shadoweval.pool.models import (
    ModelWatchResult,
    ModelWatchState,
    PoolSource,
)
from shadoweval.pool.service import ROUTER_MODEL_TABLE, add_model, load_pool, set_active
from shadoweval.providers.registry import pricing_table
from shadoweval.runtime import watermarks
from shadoweval.sampling import service as sampling_service
from shadoweval.sql import table_of

log = logging.getLogger(__name__)

GATE_REQUESTED_BY = EventKind.MODEL_CHANGE.value  # a gate started by a model_change event
WATERMARK_NAME = "decisions"
GATE_SAMPLE_LIMIT = 100_000  # GateCreate.sample's bound
WATCH_STATE_TABLE = table_of(ModelWatchState)
DECISION_TABLE = table_of(Decision)
EVENT_TABLE = table_of(Event)


def model_change_key(router: str, tier: str, model: str) -> str:
    return f"{router}|{tier}|{model}"


def export_url(router: str, since: datetime) -> str:
    """The training export of a router's labelled pairs since `since` (for the retrain trigger)."""
    return "/v1/exports/training?" + urlencode({"router": router, "since": since.isoformat()})


def _claim_first_seen(
    session: Session, *, router: str, tier: str, model: str, first_seen_ts: datetime, now: datetime
) -> bool:
    """Give an announced model (no first-seen yet) its first decision's ts; True when this
    call set it (a racing watcher's UPDATE finds it set and changes nothing)."""
    c = ROUTER_MODEL_TABLE.c
    result = session.execute(
        update(ROUTER_MODEL_TABLE)
        .where(c.router == router, c.tier == tier, c.model == model, c.first_seen_ts.is_(None))
        .values(first_seen_ts=first_seen_ts, updated_at=now)
    )
    return int(result.rowcount) > 0  # type: ignore[attr-defined]


def _record_change(
    session: Session,
    settings: Settings,
    *,
    router: str,
    tier: str,
    model: str,
    ts: datetime,
    previous_models: list[str],
    announced: bool,
) -> tuple[bool, int]:
    """Record the model_change event at decision time `ts` and, when it is new, boost the
    tier's sampling for decisions from `ts` on (decision time too, never the wall clock).

    Returns (event is new, strata boosted). `boost` commits, so the pool row, the event,
    the gate run it may start and the boost land in one transaction: one gate run per event.
    """
    details: dict[str, Any] = {
        "tier": tier,
        "model": model,
        "previous_models": previous_models,
        "source": PoolSource.OBSERVED.value,  # a decision showed it, announced or not
        "announced_by_pool_put": announced,
        "export_url": export_url(router, ts),
    }
    key = model_change_key(router, tier, model)
    new = events_service.record_event(
        session, kind=EventKind.MODEL_CHANGE, dedup_key=key, ts=ts, router=router, details=details
    )
    if not new:
        return False, 0
    if settings.gate_on_model_change:
        details.update(
            _start_gate(
                session,
                settings,
                router=router,
                tier=tier,
                model=model,
                ts=ts,
                previous_models=previous_models,
            )
        )
        session.execute(
            update(EVENT_TABLE)
            .where(EVENT_TABLE.c.kind == EventKind.MODEL_CHANGE, EVENT_TABLE.c.dedup_key == key)
            .values(details=details)
        )
    boosted = sampling_service.boost(
        session=session,
        router=router,
        tier=tier,
        until=ts + timedelta(hours=settings.model_change_boost_hours),
        factor=settings.model_change_boost_factor,
    )
    return True, boosted


def _replaced_model(
    session: Session, *, router: str, tier: str, ts: datetime, previous_models: list[str]
) -> str | None:
    """Of the tier's previous models, the one the router chose most recently before `ts`,
    preferring those still active (PUT /v1/pool deactivates the model it replaces first)."""
    m, d = ROUTER_MODEL_TABLE.c, DECISION_TABLE.c
    active = session.scalars(
        select(m.model).where(
            m.router == router,
            m.tier == tier,
            m.active.is_(True),
            m.model.in_(previous_models),
        )
    )
    candidates = sorted(str(name) for name in active) or previous_models
    row = session.execute(
        select(d.chosen_model)
        .where(d.router == router, d.tier == tier, d.ts <= ts, d.chosen_model.in_(candidates))
        .group_by(d.chosen_model)
        .order_by(func.max(d.ts).desc(), d.chosen_model)
        .limit(1)
    ).first()
    return None if row is None else str(row[0])


def _start_gate(
    session: Session,
    settings: Settings,
    *,
    router: str,
    tier: str,
    model: str,
    ts: datetime,
    previous_models: list[str],
) -> dict[str, Any]:
    """Queue a gate run of the new model against the one it replaces, uncommitted (it
    commits with the event); the event details it adds: gate_run_id, or gate_error when the
    gate cannot run (no previous model with traffic, a model without a price)."""
    replaced = _replaced_model(
        session, router=router, tier=tier, ts=ts, previous_models=previous_models
    )
    if replaced is None:
        reason = f"no previous model of tier {tier!r} was chosen before {model!r} to compare with"
        log.warning("model change %s|%s|%s: no gate run: %s", router, tier, model, reason)
        return {"gate_error": reason}
    spec = GateCreate(
        router=router,
        candidate=model,
        replace=replaced,
        sample=settings.gate_on_model_change_sample,
        max_drop=settings.gate_on_model_change_max_drop,
    )
    power_details = _size_for_power(session, settings, spec)
    if "gate_sample" in power_details:
        spec = spec.model_copy(update={"sample": power_details["gate_sample"]})
    try:
        run = gate_service.create_gate(
            session=session,
            settings=settings,
            spec=spec,
            knows_model=pricing_table(settings).knows,
            requested_by=GATE_REQUESTED_BY,
            commit=False,
        )
    except InvalidRequest as error:
        # The event (and the boost, the retrain trigger) must not wait on a gate.
        log.warning("model change %s|%s|%s: no gate run: %s", router, tier, model, error)
        return {"gate_error": str(error)}
    log.info("model change %s|%s|%s: gate run %s queued", router, tier, model, run.id)
    return {"gate_run_id": run.id, "gate_replaced_model": replaced, **power_details}


def _size_for_power(session: Session, settings: Settings, spec: GateCreate) -> dict[str, Any]:
    """Event details on the model-change gate's power: a sample too small for any pass is
    raised to the fewest pairs a pass needs (`gate_sample`; the run's cost cap still bounds
    the spend), and a gate no sample can make pass says why (`gate_underpowered`): its
    verdict will be inconclusive, and on-call should not wait for a pass."""
    power = check_power(session, spec, settings.gate_alpha)
    if power.can_pass:
        return {}
    if not power.short_segments and power.needed_sample <= GATE_SAMPLE_LIMIT:
        log.info(
            "model-change gate of %s: sample %d raised to %d (%s)",
            spec.candidate,
            spec.sample,
            power.needed_sample,
            power.describe(),
        )
        return {"gate_sample": power.needed_sample, "gate_power": power.describe()}
    reason = power.refusal(
        "SHADOWEVAL_GATE_ON_MODEL_CHANGE_SAMPLE", "expect an inconclusive verdict"
    )
    log.warning("model-change gate of %s is underpowered: %s", spec.candidate, reason)
    return {"gate_underpowered": reason}


@dataclass
class _Seen:
    first_ts: datetime
    count: int


def _scan_chunk(
    session: Session,
    settings: Settings,
    seen: dict[tuple[str, str, str], _Seen],
    now: datetime,
) -> ModelWatchResult:
    """Apply one id range's (router, tier, model) groups to the pool; commits."""
    pool = load_pool(session, [router for router, _, _ in seen])
    new_models = events = boosted = 0
    # Oldest first, so of two models new to a tier the later one sees the earlier as known.
    for (router, tier, model), group in sorted(seen.items(), key=lambda kv: kv[1].first_ts):
        models = pool.setdefault((router, tier), {})
        known = models.get(model)
        if known is not None and not known[0]:
            # Left out by PUT /v1/pool, yet the router chooses it: it is in use again.
            set_active(session, router=router, tier=tier, model=model, active=True, now=now)
        if known is not None and known[1] is not None:
            models[model] = (True, known[1])
            continue
        # Only decision-derived first-seen times: an announced model's PUT says nothing
        # about when the router started choosing anything.
        decided = {name: first for name, (_, first) in models.items() if first is not None}
        models[model] = (True, group.first_ts)
        added = known is None and add_model(
            session,
            router=router,
            tier=tier,
            model=model,
            first_seen_ts=group.first_ts,
            source=PoolSource.OBSERVED,
            now=now,
        )
        new_models += int(added)
        # The row exists: announced by a PUT (perhaps committed since the pool was read).
        claimed = added or _claim_first_seen(
            session, router=router, tier=tier, model=model, first_seen_ts=group.first_ts, now=now
        )
        if not claimed:
            continue  # another watcher got there first, together with any event
        if decided and group.first_ts <= max(decided.values()):
            log.info(
                "pool of %s: %s in tier %s first seen on older decisions (a backfill): "
                "no model change",
                router,
                model,
                tier,
            )
            continue
        establish = timedelta(minutes=settings.model_pool_establish_minutes)
        if not decided or group.first_ts < min(decided.values()) + establish:
            log.info("pool of %s: tier %s starts with %s", router, tier, model)
            continue
        new, strata = _record_change(
            session,
            settings,
            router=router,
            tier=tier,
            model=model,
            ts=group.first_ts,
            previous_models=sorted(decided),
            announced=not added,
        )
        events += int(new)
        boosted += strata
    session.commit()
    return ModelWatchResult(
        scanned=sum(g.count for g in seen.values()),
        new_models=new_models,
        events=events,
        boosted_strata=boosted,
        watermark=0,
    )


def watch_models(
    *, engine: Engine, settings: Settings, now: datetime | None = None
) -> ModelWatchResult:
    """Read every decision past the watermark, in id ranges; see the module docstring.

    `now` stands in for the database clock (tests); by default the database's own clock
    measures how long a checkpoint has settled, as transactions are timed there."""
    d = DECISION_TABLE.c
    settle = timedelta(seconds=settings.model_watch_settle_seconds)
    total = ModelWatchResult(scanned=0, new_models=0, events=0, boosted_strata=0, watermark=0)
    with Session(engine, expire_on_commit=False) as session:
        clock = now or watermarks.database_now(session)
        mark = watermarks.read_mark(session, WATCH_STATE_TABLE, WATERMARK_NAME)
        highest = int(session.execute(select(func.max(d.id))).scalar() or 0)
    low = mark.watermark
    while low < highest:
        high = min(low + settings.model_watch_batch_size, highest)
        with Session(engine, expire_on_commit=False) as session:
            seen = {
                (router, tier, model): _Seen(first_ts, int(count))
                for router, tier, model, first_ts, count in session.execute(
                    select(d.router, d.tier, d.chosen_model, func.min(d.ts), func.count())
                    .where(d.id > low, d.id <= high)
                    .group_by(d.router, d.tier, d.chosen_model)
                )
            }
            chunk = _scan_chunk(session, settings, seen, clock)
        total = ModelWatchResult(
            scanned=total.scanned + chunk.scanned,
            new_models=total.new_models + chunk.new_models,
            events=total.events + chunk.events,
            boosted_strata=total.boosted_strata + chunk.boosted_strata,
            watermark=0,
        )
        low = high
    mark = watermarks.next_mark(mark, highest, clock, settle)
    with Session(engine, expire_on_commit=False) as session:
        watermarks.store_mark(session, WATCH_STATE_TABLE, WATERMARK_NAME, mark, clock)
        session.commit()
    total.watermark = mark.watermark
    return total
