"""GET /v1/alert-deliveries: what the outbox sent where, with its last attempts, and
GET /v1/alert-deliveries/{id}/attempts: all of them, paged (read scope)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from shadoweval.alerts import delivery_records
from shadoweval.alerts.delivery_models import AlertDeliveryPage, DeliveryAttemptPage
from shadoweval.db import SessionDep
from shadoweval.deps import ReadScope, RowId, RowIdFilter

router = APIRouter(prefix="/v1", tags=["alerts"], dependencies=[ReadScope])


@router.get("/alert-deliveries")
def list_alert_deliveries(
    session: SessionDep,
    alert_id: RowIdFilter = None,
    event_id: RowIdFilter = None,
    status: Literal["pending", "in_flight", "delivered", "failed"] | None = None,
    channel: Literal["webhook", "slack", "pagerduty", "retrain"] | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertDeliveryPage:
    """Deliveries newest first; URLs are redacted and secrets never included."""
    return delivery_records.list_deliveries(
        session=session,
        alert_id=alert_id,
        event_id=event_id,
        status=status,
        channel=channel,
        cursor=cursor,
        limit=limit,
    )


@router.get("/alert-deliveries/{delivery_id}/attempts")
def list_alert_delivery_attempts(
    session: SessionDep,
    delivery_id: RowId,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryAttemptPage:
    """Every attempt of one delivery, newest first (404 for an unknown delivery)."""
    return delivery_records.list_attempts(
        session=session, delivery_id=delivery_id, cursor=cursor, limit=limit
    )
