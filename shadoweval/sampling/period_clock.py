"""When a decision-time period closes: period starts, the cursor of the next period to close,
the label watermark, and routers whose decision time stopped moving. Clock: decision time,
except the idle close, which reads the wall time a router's decision time last moved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlmodel import Session

from shadoweval.db import aware_utc
from shadoweval.ingest.models import AWAITING_PLAN
from shadoweval.judge.models import OPEN_VERDICT_STATUSES
from shadoweval.sampling.period_rows import (
    CURSOR,
    CURSOR_NAME,
    DECISION,
    VERDICT,
)
from shadoweval.sql import dialect_of


def period_start_of(ts: datetime, minutes: int) -> datetime:
    """The start of the sampling period holding `ts` (periods are aligned to UTC midnight)."""
    ts = ts.astimezone(UTC)
    midnight = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = int((ts - midnight).total_seconds() // 60)
    return midnight + timedelta(minutes=elapsed - elapsed % minutes)


def _cursor(session: Session) -> dict[str, Any]:
    dialect = dialect_of(session)
    session.execute(dialect.insert_or_ignore(CURSOR, {"name": CURSOR_NAME}, conflict_on=["name"]))
    # One planner at a time, whoever holds the lead.
    query = dialect.lock_for_update(select(CURSOR).where(CURSOR.c.name == CURSOR_NAME))
    return dict(session.execute(query).mappings().one())


def _earliest_awaiting(session: Session, at_or_after: datetime | None = None) -> datetime | None:
    query = select(func.min(DECISION.c.ts)).where(DECISION.c.sampling_skip_reason == AWAITING_PLAN)
    if at_or_after is not None:
        query = query.where(DECISION.c.ts >= at_or_after)
    return aware_utc(session.execute(query).scalar())


def label_watermark(session: Session) -> datetime | None:
    """The earliest ts of a sampled decision still waiting for its verdict; None when none."""
    open_verdict = session.execute(
        select(func.min(VERDICT.c.ts)).where(VERDICT.c.status.in_(OPEN_VERDICT_STATUSES))
    ).scalar()
    unplanned = session.execute(
        select(func.min(DECISION.c.ts)).where(
            DECISION.c.sampled.is_(True),
            ~select(VERDICT.c.id).where(VERDICT.c.decision_id == DECISION.c.id).exists(),
        )
    ).scalar()
    found = [t for t in (aware_utc(open_verdict), aware_utc(unplanned)) if t is not None]
    return min(found) if found else None


def _idle_routers(
    session: Session, clocks: dict[str, datetime], wall_now: datetime, idle_seconds: float
) -> set[str]:
    """Routers whose decision time has not moved for `idle_seconds` of wall time: they no
    longer hold a period open (a router that went quiet must not stop everyone's sampling)."""
    names = {f"router:{router}": router for router in clocks}
    insert = dialect_of(session).insert
    for name, router in names.items():
        session.execute(
            insert(CURSOR)
            .values(name=name, watermark_seen=clocks[router], watermark_seen_at=wall_now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
    idle: set[str] = set()
    for name, seen, seen_at in session.execute(
        select(CURSOR.c.name, CURSOR.c.watermark_seen, CURSOR.c.watermark_seen_at).where(
            CURSOR.c.name.in_(list(names))
        )
    ):
        router = names[name]
        if aware_utc(seen) != clocks[router]:
            session.execute(
                update(CURSOR)
                .where(CURSOR.c.name == name)
                .values(watermark_seen=clocks[router], watermark_seen_at=wall_now)
            )
        elif (wall_now - cast(datetime, aware_utc(seen_at))).total_seconds() >= idle_seconds:
            idle.add(router)
    return idle


def closed_by(
    start: datetime,
    end: datetime,
    clocks: dict[str, datetime],
    idle: set[str],
    lateness: timedelta,
) -> str | None:
    """Whether period [start, end) is closed, and by what: `watermark` when every router that
    reached it is `lateness` past its end, `idle` when the only routers still inside it have
    stopped moving; None while a router is still inside it."""
    inside = {r for r, now in clocks.items() if start <= now < end + lateness}
    if not any(now >= start for now in clocks.values()):
        return None
    if not inside:
        return "watermark"
    return "idle" if inside <= idle else None
