"""The alert outbox: notifications become delivery rows, workers send them until they land.

`enqueue_notification` writes one row per configured channel in the caller's
transaction, so an alert and its notifications commit (or vanish) together; workers
claim the rows and send them (sender.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

from sqlalchemy import exists, insert, select
from sqlmodel import Session

from shadoweval.alerts import channels
from shadoweval.alerts.channels import Channel
from shadoweval.alerts.delivery_models import (
    AlertDelivery,
    AlertDeliveryAttempt,
    DeliveryStatus,
)
from shadoweval.alerts.notification import Notification, list_text, when_text
from shadoweval.config import Settings, get_settings
from shadoweval.db import dialect_insert, utcnow
from shadoweval.events.models import Event, EventKind
from shadoweval.sql import table_of

log = logging.getLogger(__name__)

DELIVERY_TABLE = table_of(AlertDelivery)
ATTEMPT_TABLE = table_of(AlertDeliveryAttempt)
EVENT_TABLE = table_of(Event)

MODEL_CHANGE = EventKind.MODEL_CHANGE  # retrain notifications are named after their event
OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
Clock = Callable[[], datetime]


# --- enqueueing ----------------------------------------------------------------------------


# The setting that holds each channel's URL. A delivery row stores only the channel's name
# (`channel_name`): the URL, which carries secrets (Slack's path, tokens in queries), and
# the signing secret or routing key are read from the settings when sending.
CHANNEL_URL_SETTING: dict[Channel, str] = {
    "webhook": "alert_webhook_url",
    "slack": "alert_slack_webhook_url",
    "pagerduty": "alert_pagerduty_url",
    "retrain": "retrain_webhook_url",
}


def channel_url(settings: Settings, channel_name: str) -> str | None:
    """The URL configured now for the channel named `channel_name`; None when it is not
    configured (any more). PagerDuty counts as configured only with its routing key."""
    if channel_name == "pagerduty" and not settings.alert_pagerduty_routing_key:
        return None
    setting = CHANNEL_URL_SETTING.get(cast(Channel, channel_name))
    url = getattr(settings, setting) if setting else None
    return str(url) if url else None


def configured_channels(settings: Settings, kind: str) -> list[tuple[Channel, str]]:
    """Where a notification of `kind` goes: retrain triggers to their own webhook only."""
    names: tuple[Channel, ...] = (
        ("retrain",) if kind == "retrain" else ("webhook", "slack", "pagerduty")
    )
    return [(name, url) for name in names if (url := channel_url(settings, name)) is not None]


def enqueue_notification(
    session: Session,
    notification: Notification,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> list[int]:
    """One pending delivery per configured channel, in the caller's transaction; their ids.

    No channel configured: []. A retrain notification carrying `details["event_id"]`
    is enqueued at most once per channel: a second call for the same event returns [].
    `now` is wall-clock time (never a decision `ts`): rows are due from it and retried
    until `delivery_max_age_hours` after it.
    """
    settings = settings or get_settings()
    now = now or utcnow()
    event_id = notification.details.get("event_id") if notification.kind == "retrain" else None
    source = _source(settings)
    ids: list[int] = []
    for channel, url in configured_channels(settings, notification.kind):
        values: dict[str, Any] = {
            "channel": channel,
            "channel_name": channel,
            "url": channels.redact_url(url, channel),
            "payload": channels.payload_for(channel, notification, source=source),
            "dedup_key": notification.dedup_key[:300],
            "kind": notification.kind,
            "rule": notification.rule[:100],
            "alert_id": notification.alert_id,
            "event_id": event_id,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        if event_id is None:
            statement: Any = insert(DELIVERY_TABLE).values(**values)
        else:
            # ON CONFLICT keeps the caller's transaction usable on PostgreSQL, where a
            # unique violation would abort it.
            statement = (
                dialect_insert(session)(DELIVERY_TABLE)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["event_id", "channel"])
            )
        row = session.execute(statement.returning(DELIVERY_TABLE.c.id)).first()
        if row is not None:
            ids.append(int(row[0]))
    if ids:
        log.info(
            "notification %s %s queued for %s",
            notification.kind,
            notification.dedup_key,
            ", ".join(channel for channel, _ in configured_channels(settings, notification.kind)),
        )
    return ids


def _source(settings: Settings) -> str:
    return urlsplit(settings.public_base_url).hostname or "shadoweval"


# --- retrain triggers ----------------------------------------------------------------------


def retrain_notification(
    *,
    event_id: int,
    dedup_key: str,
    ts: datetime,
    router: str | None,
    details: dict[str, Any],
    public_base_url: str,
) -> Notification:
    """The retrain trigger for one `model_change` event, with an absolute training-export link."""
    tier, model = details.get("tier"), details.get("model")
    relative = details.get("export_url")
    if not isinstance(relative, str) or not relative:
        query = urlencode({"router": router or "", "since": ts.isoformat()})
        relative = f"/v1/exports/training?{query}"
    export_url = relative if "://" in relative else public_base_url.rstrip("/") + relative
    previous = list_text(details.get("previous_models"))
    return Notification(
        kind="retrain",
        dedup_key=f"{MODEL_CHANGE}|{dedup_key}",
        rule=MODEL_CHANGE,
        severity="info",
        title=f"INFO {MODEL_CHANGE} on {router}",
        # Headline, then detail (notification.split_summary), like every alert notification.
        summary=(
            f"{router}: {tier} tier now routes to {model} (was {previous}) since "
            f"{when_text(ts)} decision time — labelled training tuples: {export_url}\n"
            f"first decision with the new model at {ts.isoformat()}"
        ),
        ts=ts,
        router=router,
        details={
            "event_id": event_id,
            "event": {
                "id": event_id,
                "kind": MODEL_CHANGE,
                "dedup_key": dedup_key,
                "ts": ts.isoformat(),
                "router": router,
                "details": details,
            },
            "export_url": export_url,
        },
    )


def enqueue_retrain_triggers(
    *, session: Session, settings: Settings, now: datetime | None = None, limit: int = 100
) -> int:
    """Queue one retrain delivery per `model_change` event that has none yet; how many.

    Exactly once per event: the NOT EXISTS skips events already triggered, and the
    unique (event_id, channel) settles two runs racing. Events older than the delivery
    max age are not triggered late (e.g. when the webhook is configured after them).
    """
    if not settings.retrain_webhook_url:
        return 0
    now = now or utcnow()
    since = now - timedelta(hours=settings.delivery_max_age_hours)
    e, d = EVENT_TABLE.c, DELIVERY_TABLE.c
    triggered = exists().where(d.event_id == e.id, d.channel == "retrain")
    rows = session.execute(
        select(e.id, e.dedup_key, e.ts, e.router, e.details)
        .where(e.kind == MODEL_CHANGE, e.created_at >= since, ~triggered)
        .order_by(e.id)
        .limit(limit)
    ).all()
    queued = 0
    for event_id, dedup_key, ts, router, details in rows:
        notification = retrain_notification(
            event_id=int(event_id),
            dedup_key=str(dedup_key),
            ts=ts,
            router=router,
            details=dict(details or {}),
            public_base_url=settings.public_base_url,
        )
        queued += len(enqueue_notification(session, notification, settings=settings, now=now))
    return queued
