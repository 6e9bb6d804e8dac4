"""The model watcher and the pool API: one `model_change` event per new (router, tier, model).

The watcher reads the decision log past its watermark (decision ids) and keeps, per
router and tier, every *chosen* model it has seen (`chosen_model` is pre-failover,
so provider failover never looks like a routing change). The first model seen for
a router and tier only establishes the pool; any other model id new to that tier
records one `model_change` event (unique per (kind, dedup key), so two watchers
racing over the same decisions still record one) and boosts sampling of the tier.
Every step is idempotent: a crash before the watermark moves repeats nothing.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

from sqlalchemy import Row, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.events import service as events_service
from shadoweval.events.models import Event
from shadoweval.exceptions import InvalidRequest
from shadoweval.ingest.models import Decision
from shadoweval.pool.models import (
    ModelWatchResult,
    ModelWatchState,
    PoolIn,
    PoolPage,
    PoolPutResult,
    PoolSource,
    RouterModel,
    RouterModelPublic,
)
from shadoweval.sampling import service as sampling_service

log = logging.getLogger(__name__)

MODEL_CHANGE = "model_change"
WATERMARK_NAME = "decisions"
ROUTER_MODEL_TABLE = cast(Table, RouterModel.__table__)  # type: ignore[attr-defined]
WATCH_STATE_TABLE = cast(Table, ModelWatchState.__table__)  # type: ignore[attr-defined]
DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
EVENT_TABLE = cast(Table, Event.__table__)  # type: ignore[attr-defined]

# (router, tier) → {model: active}
Pool = dict[tuple[str, str], dict[str, bool]]


def model_change_key(router: str, tier: str, model: str) -> str:
    return f"{router}|{tier}|{model}"


def export_url(router: str, since: datetime) -> str:
    """The training export of a router's labelled pairs since `since` (for the retrain trigger)."""
    return "/v1/exports/training?" + urlencode({"router": router, "since": since.isoformat()})


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _load_pool(session: Session, routers: Sequence[str]) -> Pool:
    c = ROUTER_MODEL_TABLE.c
    pool: Pool = {}
    for router, tier, model, active in session.execute(
        select(c.router, c.tier, c.model, c.active).where(c.router.in_(sorted(set(routers))))
    ):
        pool.setdefault((router, tier), {})[model] = bool(active)
    return pool


def _add_model(
    session: Session,
    *,
    router: str,
    tier: str,
    model: str,
    first_seen_ts: datetime,
    source: PoolSource,
    now: datetime,
) -> bool:
    """Insert the (router, tier, model) row unless it exists; True when this call added it."""
    result = session.execute(
        _insert(session)(ROUTER_MODEL_TABLE)
        .values(
            router=router,
            tier=tier,
            model=model,
            first_seen_ts=first_seen_ts,
            source=source.value,
            active=True,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["router", "tier", "model"])
        .returning(ROUTER_MODEL_TABLE.c.id)
    )
    return result.first() is not None


def _set_active(
    session: Session, *, router: str, tier: str, model: str, active: bool, now: datetime
) -> None:
    c = ROUTER_MODEL_TABLE.c
    session.execute(
        update(ROUTER_MODEL_TABLE)
        .where(c.router == router, c.tier == tier, c.model == model)
        .values(active=active, updated_at=now)
    )


def _record_change(
    session: Session,
    settings: Settings,
    *,
    router: str,
    tier: str,
    model: str,
    ts: datetime,
    previous_models: list[str],
    source: PoolSource,
) -> tuple[bool, int]:
    """Record the model_change event and, when it is new, boost the tier's sampling.

    Returns (event is new, strata boosted). `boost` commits, so the pool row, the event
    and the boost land in one transaction.
    """
    new = events_service.record_event(
        session,
        kind=MODEL_CHANGE,
        dedup_key=model_change_key(router, tier, model),
        ts=ts,
        router=router,
        details={
            "tier": tier,
            "model": model,
            "previous_models": previous_models,
            "source": source.value,
            "export_url": export_url(router, ts),
        },
    )
    if not new:
        return False, 0
    boosted = sampling_service.boost(
        session=session,
        router=router,
        tier=tier,
        until=ts + timedelta(hours=settings.model_change_boost_hours),
        factor=settings.model_change_boost_factor,
    )
    return True, boosted


def _watermark(session: Session) -> int:
    value = session.execute(
        select(WATCH_STATE_TABLE.c.last_decision_id).where(
            WATCH_STATE_TABLE.c.name == WATERMARK_NAME
        )
    ).scalar()
    return int(value or 0)


def _advance_watermark(session: Session, last_id: int, now: datetime) -> None:
    c = WATCH_STATE_TABLE.c
    session.execute(
        _insert(session)(WATCH_STATE_TABLE)
        .values(name=WATERMARK_NAME, last_decision_id=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    # Never backwards: a slower concurrent watcher must not undo a faster one's progress.
    session.execute(
        update(WATCH_STATE_TABLE)
        .where(c.name == WATERMARK_NAME, c.last_decision_id < last_id)
        .values(last_decision_id=last_id, updated_at=now)
    )


def _scan_batch(
    session: Session, settings: Settings, rows: Sequence[Row[Any]], now: datetime
) -> ModelWatchResult:
    pool = _load_pool(session, [row.router for row in rows])
    new_models = events = boosted = 0
    for row in rows:
        models = pool.setdefault((row.router, row.tier), {})
        if models.get(row.chosen_model) is True:
            continue
        if row.chosen_model in models:
            # Left out by PUT /v1/pool, yet the router chooses it: it is in use again.
            _set_active(
                session,
                router=row.router,
                tier=row.tier,
                model=row.chosen_model,
                active=True,
                now=now,
            )
            models[row.chosen_model] = True
            continue
        previous = sorted(models)
        models[row.chosen_model] = True
        added = _add_model(
            session,
            router=row.router,
            tier=row.tier,
            model=row.chosen_model,
            first_seen_ts=row.ts,
            source=PoolSource.OBSERVED,
            now=now,
        )
        if not added:
            continue  # another watcher added it first, together with its event
        new_models += 1
        if not previous:
            # The first model of a router's tier only establishes the pool.
            log.info("pool of %s: tier %s starts with %s", row.router, row.tier, row.chosen_model)
            continue
        new, strata = _record_change(
            session,
            settings,
            router=row.router,
            tier=row.tier,
            model=row.chosen_model,
            ts=row.ts,
            previous_models=previous,
            source=PoolSource.OBSERVED,
        )
        events += int(new)
        boosted += strata
    last_id = int(rows[-1].id)
    _advance_watermark(session, last_id, now)
    session.commit()
    return ModelWatchResult(
        scanned=len(rows),
        new_models=new_models,
        events=events,
        boosted_strata=boosted,
        watermark=last_id,
    )


def watch_models(
    *, engine: Engine, settings: Settings, now: datetime | None = None
) -> ModelWatchResult:
    """Read every settled decision past the watermark, in batches; see the module docstring."""
    now = now or utcnow()
    settled_before = now - timedelta(seconds=settings.model_watch_settle_seconds)
    d = DECISION_TABLE.c
    total = ModelWatchResult(scanned=0, new_models=0, events=0, boosted_strata=0, watermark=0)
    while True:
        with Session(engine, expire_on_commit=False) as session:
            watermark = _watermark(session)
            fetched = session.execute(
                select(d.id, d.router, d.tier, d.chosen_model, d.ts, d.received_at)
                .where(d.id > watermark)
                .order_by(d.id)
                .limit(settings.model_watch_batch_size)
            ).all()
            # Stop at the first unsettled decision, not skip it: the watermark must never pass
            # a decision that has not been read (replicas' clocks may disagree slightly).
            rows = list(itertools.takewhile(lambda r: r.received_at <= settled_before, fetched))
            if not rows:
                total.watermark = max(total.watermark, watermark)
                return total
            batch = _scan_batch(session, settings, rows, now)
        total = ModelWatchResult(
            scanned=total.scanned + batch.scanned,
            new_models=total.new_models + batch.new_models,
            events=total.events + batch.events,
            boosted_strata=total.boosted_strata + batch.boosted_strata,
            watermark=batch.watermark,
        )
        if len(rows) < settings.model_watch_batch_size:
            return total


# --- the pool API --------------------------------------------------------------------------


def _public(session: Session, router: str) -> list[RouterModelPublic]:
    c = ROUTER_MODEL_TABLE.c
    rows = session.scalars(select(RouterModel).where(c.router == router).order_by(c.tier, c.model))
    return [RouterModelPublic.model_validate(r, from_attributes=True) for r in rows]


def list_pool(
    *,
    session: Session,
    router: str | None = None,
    include_inactive: bool = True,
    cursor: str | None = None,
    limit: int = 200,
) -> PoolPage:
    c = ROUTER_MODEL_TABLE.c
    query = select(RouterModel)
    if router is not None:
        query = query.where(c.router == router)
    if not include_inactive:
        query = query.where(c.active.is_(True))
    if cursor:
        try:
            after = int(cursor)
        except ValueError as error:
            raise InvalidRequest("cursor is not one this API returned", loc=["cursor"]) from error
        query = query.where(c.id > after)
    rows = list(session.scalars(query.order_by(c.id).limit(limit + 1)))
    items = [RouterModelPublic.model_validate(r, from_attributes=True) for r in rows[:limit]]
    return PoolPage(
        items=items, next_cursor=str(items[-1].id) if len(rows) > limit and items else None
    )


def put_pool(
    *, session: Session, settings: Settings, pool: PoolIn, now: datetime | None = None
) -> PoolPutResult:
    """Replace a router's pool: add the listed models, deactivate the others.

    Each model new to a tier that already had models records a `model_change` event
    (source `pool_put`, ts = now) and boosts the tier, as an observed change would; the
    first pool of a router only establishes it, like the first models the watcher sees.
    """
    now = now or utcnow()
    current = _load_pool(session, [pool.router])
    wanted = {(tier, model) for tier, models in pool.tiers.items() for model in models}
    added: list[tuple[str, str, list[str]]] = []
    removed: list[tuple[str, str]] = []
    for tier, models in pool.tiers.items():
        known = current.get((pool.router, tier), {})
        previous = sorted(m for m, active in known.items() if active) or sorted(known)
        for model in models:
            if known.get(model) is True:
                continue
            if model in known:
                _set_active(
                    session, router=pool.router, tier=tier, model=model, active=True, now=now
                )
            else:
                _add_model(
                    session,
                    router=pool.router,
                    tier=tier,
                    model=model,
                    first_seen_ts=now,
                    source=PoolSource.POOL_PUT,
                    now=now,
                )
            added.append((tier, model, previous))
    for (_, tier), known_models in current.items():
        for model, active in known_models.items():
            if active and (tier, model) not in wanted:
                _set_active(
                    session, router=pool.router, tier=tier, model=model, active=False, now=now
                )
                removed.append((tier, model))
    event_keys = []
    for tier, model, previous in added:
        if previous:  # as in the watcher, a tier's first models only establish it
            new, _ = _record_change(
                session,
                settings,
                router=pool.router,
                tier=tier,
                model=model,
                ts=now,
                previous_models=previous,
                source=PoolSource.POOL_PUT,
            )
            if new:
                event_keys.append(model_change_key(pool.router, tier, model))
    session.commit()
    event_ids = (
        [
            int(i)
            for i in session.scalars(
                select(EVENT_TABLE.c.id)
                .where(EVENT_TABLE.c.kind == MODEL_CHANGE, EVENT_TABLE.c.dedup_key.in_(event_keys))
                .order_by(EVENT_TABLE.c.id)
            )
        ]
        if event_keys
        else []
    )
    pool_rows = _public(session, pool.router)
    by_key = {(r.tier, r.model): r for r in pool_rows}
    return PoolPutResult(
        router=pool.router,
        added=[by_key[(tier, model)] for tier, model, _ in added],
        removed=[by_key[key] for key in removed],
        events=event_ids,
        pool=pool_rows,
    )


def latest_model_change(*, session: Session, router: str) -> Event | None:
    """The router's most recent model_change event by decision time (calibration windows)."""
    c = EVENT_TABLE.c
    return session.scalars(
        select(Event)
        .where(c.kind == MODEL_CHANGE, c.router == router)
        .order_by(c.ts.desc(), c.id.desc())
        .limit(1)
    ).first()
