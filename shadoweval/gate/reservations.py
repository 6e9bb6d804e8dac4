"""Gate budget reservations: before an item spends, its most expensive remaining calls are
reserved on the run, so concurrent items never spend past the run's cost cap."""

from __future__ import annotations

from enum import Enum

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine

from shadoweval.gate.models import GateItem, GateItemStatus
from shadoweval.gate.rows import ITEM_TABLE, OPEN_ITEM_STATUSES, RUN_TABLE


class Reservation(Enum):
    MADE = "made"
    WAIT = "wait"  # does not fit now, would once the reservations in flight settle
    REFUSED = "refused"  # cannot fit even then: the cap is reached
    LEASE_LOST = "lease_lost"  # nothing stays reserved


def reserve(engine: Engine, item: GateItem, owner: str, estimate: float) -> Reservation:
    """Reserve `estimate` on the item's run if spent + reserved + estimate stays within the
    cap, by one conditional UPDATE (of concurrent items, only those that fit get through),
    and note it on the item in the same transaction."""
    assert item.id is not None
    try:
        with engine.begin() as connection:
            if not _reserve_in(connection, item, owner, estimate):
                runs, items = RUN_TABLE.c, ITEM_TABLE.c
                spent, cap = connection.execute(
                    select(runs.cost_usd, runs.max_cost_usd).where(runs.id == item.gate_run_id)
                ).one()
                # Counted from the items, not the run's float sum, so rounding residue can
                # never make an item wait for reservations that are not there.
                in_flight = connection.execute(
                    select(func.count()).where(
                        items.gate_run_id == item.gate_run_id,
                        items.id != item.id,
                        items.status.in_(OPEN_ITEM_STATUSES),
                        items.reserved_usd > 0,
                    )
                ).scalar_one()
                if in_flight and spent + estimate <= cap:
                    return Reservation.WAIT
                return Reservation.REFUSED
    except _LeaseLost:
        return Reservation.LEASE_LOST
    item.reserved_usd = estimate
    return Reservation.MADE


class _LeaseLost(Exception):
    """Raised inside the reservation's transaction so that it rolls back."""


def _reserve_in(connection: Connection, item: GateItem, owner: str, estimate: float) -> bool:
    runs, items = RUN_TABLE.c, ITEM_TABLE.c
    fits = connection.execute(
        update(RUN_TABLE)
        .where(
            runs.id == item.gate_run_id,
            runs.cost_usd + runs.reserved_usd + estimate <= runs.max_cost_usd,
        )
        .values(reserved_usd=runs.reserved_usd + estimate)
    ).rowcount
    if fits != 1:
        return False
    held = connection.execute(
        update(ITEM_TABLE)
        .where(
            items.id == item.id,
            items.lease_owner == owner,
            items.status == GateItemStatus.RUNNING,
        )
        .values(reserved_usd=estimate)
    ).rowcount
    if held != 1:
        raise _LeaseLost
    return True
