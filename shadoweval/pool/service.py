"""The pool API: which models each router's tiers may choose (`GET`/`PUT /v1/pool`), and the
pool rows the model watcher (`watcher.py`) shares.

`PUT /v1/pool` records no event: a model changes when the router starts choosing it, a
decision time only a decision can give, so a model new to the pool is stored without a
first-seen time and the watcher records the event when a decision first chooses it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import Session

from shadoweval import paging
from shadoweval.db import utcnow
from shadoweval.events.models import Event, EventKind
from shadoweval.pool.models import (
    PoolIn,
    PoolPage,
    PoolPutResult,
    PoolSource,
    RouterModel,
    RouterModelPublic,
)
from shadoweval.sql import dialect_of, table_of

log = logging.getLogger(__name__)

ROUTER_MODEL_TABLE = table_of(RouterModel)
EVENT_TABLE = table_of(Event)


# (router, tier) → {model: (active, first_seen_ts; None until a decision chooses it)}
Pool = dict[tuple[str, str], dict[str, tuple[bool, datetime | None]]]


def load_pool(session: Session, routers: Sequence[str]) -> Pool:
    c = ROUTER_MODEL_TABLE.c
    pool: Pool = {}
    for router, tier, model, active, first_seen_ts in session.execute(
        select(c.router, c.tier, c.model, c.active, c.first_seen_ts).where(
            c.router.in_(sorted(set(routers)))
        )
    ):
        pool.setdefault((router, tier), {})[model] = (bool(active), first_seen_ts)
    return pool


def add_model(
    session: Session,
    *,
    router: str,
    tier: str,
    model: str,
    first_seen_ts: datetime | None,
    source: PoolSource,
    now: datetime,
) -> bool:
    """Insert the (router, tier, model) row unless it exists; True when this call added it."""
    result = session.execute(
        dialect_of(session)
        .insert(ROUTER_MODEL_TABLE)
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


def set_active(
    session: Session, *, router: str, tier: str, model: str, active: bool, now: datetime
) -> None:
    c = ROUTER_MODEL_TABLE.c
    session.execute(
        update(ROUTER_MODEL_TABLE)
        .where(c.router == router, c.tier == tier, c.model == model)
        .values(active=active, updated_at=now)
    )


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
        query = query.where(c.id > paging.decode_id(cursor))
    rows = list(session.scalars(query.order_by(c.id).limit(limit + 1)))
    items = [RouterModelPublic.model_validate(r, from_attributes=True) for r in rows[:limit]]
    return PoolPage(
        items=items,
        next_cursor=paging.encode_id(items[-1].id) if len(rows) > limit and items else None,
    )


def put_pool(*, session: Session, pool: PoolIn, now: datetime | None = None) -> PoolPutResult:
    """Replace a router's pool: announce the listed models, deactivate the others.

    Records no event: a model changes when the router starts choosing it, which is a
    decision time only a decision can give (the wall time of a PUT is not one, least of
    all for a replayed log). A model new to the pool is stored without a first-seen
    time; the first decision choosing it sets one and records the `model_change` event
    (see the module docstring). `now` (wall clock) only stamps the rows.
    """
    now = now or utcnow()
    current = load_pool(session, [pool.router])
    wanted = {(tier, model) for tier, models in pool.tiers.items() for model in models}
    added: list[tuple[str, str]] = []
    removed: list[tuple[str, str]] = []
    for tier, models in pool.tiers.items():
        known = current.get((pool.router, tier), {})
        for model in models:
            if model in known and known[model][0]:
                continue
            if model in known:
                set_active(
                    session, router=pool.router, tier=tier, model=model, active=True, now=now
                )
            else:
                add_model(
                    session,
                    router=pool.router,
                    tier=tier,
                    model=model,
                    first_seen_ts=None,
                    source=PoolSource.POOL_PUT,
                    now=now,
                )
            added.append((tier, model))
    for (_, tier), known_models in current.items():
        for model, (active, _) in known_models.items():
            if active and (tier, model) not in wanted:
                set_active(
                    session, router=pool.router, tier=tier, model=model, active=False, now=now
                )
                removed.append((tier, model))
    session.commit()
    pool_rows = _public(session, pool.router)
    by_key = {(r.tier, r.model): r for r in pool_rows}
    return PoolPutResult(
        router=pool.router,
        added=[by_key[key] for key in added],
        removed=[by_key[key] for key in removed],
        announced=[r for r in pool_rows if r.active and r.first_seen_ts is None],
        pool=pool_rows,
    )


def latest_model_change(*, session: Session, router: str) -> Event | None:
    """The router's most recent model_change event by decision time (calibration windows)."""
    c = EVENT_TABLE.c
    return session.scalars(
        select(Event)
        .where(c.kind == EventKind.MODEL_CHANGE, c.router == router)
        .order_by(c.ts.desc(), c.id.desc())
        .limit(1)
    ).first()
