"""Decision-time helpers shared by the alert tests: decisions that move a router's clock,
and hourly traffic counts behind the rate rules."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from shadoweval.analytics.models import TrafficWindowSnapshot
from shadoweval.ingest.models import Decision

ROUTER = "support-router"


def decision_row(
    request_id: str,
    ts: datetime,
    *,
    router: str = ROUTER,
    version: str = "v1",
    segment: str = "billing",
    sampled: bool = False,
) -> Decision:
    return Decision(
        router=router,
        request_id=request_id,
        router_version=version,
        ts=ts,
        received_at=ts,
        tier="cheap",
        chosen_model="haiku-4",
        served_model="haiku-4",
        threshold=0.5,
        segment={},
        segment_value=segment,
        inclusion_probability=1.0 if sampled else 0.0,
        sampled=sampled,
    )


def move_decision_time(session: Session, ts: datetime, router: str = ROUTER) -> None:
    """A decision at `ts`: the router's decision time (its watermark) reaches `ts`."""
    request_id = f"clock-{ts.isoformat()}"
    exists = session.scalar(
        select(Decision.id).where(  # type: ignore[call-overload]
            Decision.router == router,
            Decision.request_id == request_id,
        )
    )
    if exists is None:
        session.add(decision_row(request_id, ts, router=router))
        session.commit()


def hour_traffic(
    session: Session,
    *,
    hour: datetime,
    decisions: int,
    escalated: int = 0,
    fallback: int = 0,
    segment: str = "billing",
    router: str = ROUTER,
) -> None:
    """The hour's counts (as the aggregator folds them), and a decision at its start."""
    row = session.scalars(
        select(TrafficWindowSnapshot).where(
            TrafficWindowSnapshot.router == router,  # type: ignore[arg-type]
            TrafficWindowSnapshot.segment_value == segment,  # type: ignore[arg-type]
            TrafficWindowSnapshot.window_start == hour,  # type: ignore[arg-type]
        )
    ).first()
    if row is None:
        row = TrafficWindowSnapshot(
            router=router, segment_value=segment, tier="cheap", window_start=hour
        )
    row.decisions, row.escalated, row.fallback = decisions, escalated, fallback
    session.add(row)
    session.commit()
    move_decision_time(session, hour, router)
