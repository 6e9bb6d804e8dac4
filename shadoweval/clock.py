"""Decision time: each router's "now" is the watermark of its own log (DESIGN.md, Time).

The watermark is the latest committed decision `ts` of the router, bounded by the wall
clock plus `decision_clock_skew_seconds`, so one decision stamped next year cannot run the
router's clock ahead. Windows, plans, budgets and tests read this clock, never the wall
clock: a recorded log replayed at any speed then gives what the live stream gave.
Every read is one probe of `ix_decision_router_ts` per router.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import func, select, union
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shadoweval.analytics.models import TrafficWindowSnapshot
from shadoweval.db import UtcDateTime, utcnow
from shadoweval.ingest.models import Decision, TrafficDelta
from shadoweval.sql import table_of

DECISION_TABLE = table_of(Decision)
TRAFFIC_TABLE = table_of(TrafficWindowSnapshot)
DELTA_TABLE = table_of(TrafficDelta)


def _decode(bind: Session | Connection, value: object) -> datetime | None:
    if value is None:
        return None
    dialect = (bind.get_bind() if isinstance(bind, Session) else bind).dialect
    if isinstance(value, str):  # SQLite aggregates come back as text
        value = datetime.fromisoformat(value)
    return UtcDateTime().process_result_value(cast(datetime, value), dialect)


def wall_bound(skew_seconds: float, wall_now: datetime | None = None) -> datetime:
    """The latest `ts` that may move a watermark: wall clock + the allowed skew."""
    return (wall_now or utcnow()) + timedelta(seconds=skew_seconds)


def decision_now(
    bind: Session | Connection,
    router: str,
    *,
    skew_seconds: float,
    wall_now: datetime | None = None,
) -> datetime | None:
    """The router's decision-time watermark; None before its first decision."""
    bound = wall_bound(skew_seconds, wall_now)
    c = DECISION_TABLE.c
    value = bind.execute(select(func.max(c.ts)).where(c.router == router, c.ts <= bound)).scalar()
    return _decode(bind, value)


def known_routers(bind: Session | Connection) -> list[str]:
    """Routers with counted traffic (from the small traffic tables, not the decision log)."""
    query = union(select(TRAFFIC_TABLE.c.router), select(DELTA_TABLE.c.router))
    return sorted(str(r) for (r,) in bind.execute(query))


def decision_now_by_router(
    bind: Session | Connection,
    *,
    skew_seconds: float,
    routers: Iterable[str] | None = None,
    wall_now: datetime | None = None,
) -> dict[str, datetime]:
    """Every router's decision-time watermark (routers without decisions are left out)."""
    bound = wall_bound(skew_seconds, wall_now)
    clocks: dict[str, datetime] = {}
    for router in known_routers(bind) if routers is None else routers:
        now = decision_now(bind, router, skew_seconds=0.0, wall_now=bound)
        if now is not None:
            clocks[router] = now
    return clocks


def deployment_now(
    bind: Session | Connection, *, skew_seconds: float, wall_now: datetime | None = None
) -> datetime | None:
    """The latest watermark over all routers: decision time for deployment-wide questions
    (the budget day a dashboard shows), None before any decision."""
    clocks = decision_now_by_router(bind, skew_seconds=skew_seconds, wall_now=wall_now)
    return max(clocks.values()) if clocks else None
