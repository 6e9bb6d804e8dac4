"""Sending the alert outbox (outbox.py): claim due deliveries, POST them, record each attempt.

Workers claim due rows under a lease (PostgreSQL `FOR UPDATE SKIP LOCKED`, as
runtime/leases.py) and POST them: 2xx is delivered; 408, 429, 5xx, timeouts and
connection errors are retried with jittered exponential backoff (never sooner than
`Retry-After`) until the row is `delivery_max_age_hours` old; any other answer fails
the row at once. Every attempt is a row of its own. A worker that dies mid-send
leaves its lease to expire and the row is sent again: delivery is at least once,
and receivers can drop repeats by the `X-Shadoweval-Delivery` id.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import and_, exists, insert, or_, select, update
from sqlalchemy.engine import Engine

from shadoweval import retry
from shadoweval.alerts import channels
from shadoweval.alerts.channels import Channel
from shadoweval.alerts.delivery_models import DeliveryStatus
from shadoweval.alerts.outbox import (
    ATTEMPT_TABLE,
    CHANNEL_URL_SETTING,
    DELIVERY_TABLE,
    OPEN_STATUSES,
    Clock,
    channel_url,
)
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.runtime import leases

log = logging.getLogger(__name__)


def claim_due(
    engine: Engine, *, owner: str, limit: int, lease_seconds: float, now: datetime
) -> list[int]:
    """Claim up to `limit` due deliveries for `owner` (committed); their ids.

    Per channel and dedup key, deliveries go out in the order they were queued: a row
    waits while an older one for the same key is still open, so a `resolve` can never
    overtake its `trigger` after a receiver outage and leave an incident open.
    """
    c = DELIVERY_TABLE.c
    due = or_(
        and_(c.status == DeliveryStatus.PENDING, c.next_attempt_at <= now),
        and_(c.status == DeliveryStatus.IN_FLIGHT, c.lease_until < now),
    )
    older = DELIVERY_TABLE.alias("older")
    older_open = exists().where(
        older.c.channel == c.channel,
        older.c.dedup_key == c.dedup_key,
        older.c.id < c.id,
        older.c.status.in_(OPEN_STATUSES),
    )
    return leases.claim_rows(
        engine,
        DELIVERY_TABLE,
        where=and_(due, ~older_open),
        order_by=(c.next_attempt_at, c.id),
        limit=limit,
        values={
            "status": DeliveryStatus.IN_FLIGHT,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "attempts": c.attempts + 1,
        },
    )


@dataclass(frozen=True)
class AttemptResult:
    outcome: channels.Outcome
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after_s: float | None = None


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~50 ms: once per process, not once per batch.
    return httpx.create_ssl_context()


def lease_seconds(settings: Settings) -> float:
    # Long enough for one POST to time out, short enough that a dead worker's rows resume soon.
    return settings.delivery_timeout_seconds * 2 + 60


async def process_due_deliveries(
    *,
    engine: Engine,
    settings: Settings,
    owner: str,
    limit: int,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, int]:
    """Claim up to `limit` due deliveries and send them concurrently; counts per new status.

    `clock` drives scheduling (claims, backoff, max age), so tests can move time;
    signature timestamps always use the wall clock, which is what receivers check.
    """
    ids = await asyncio.to_thread(
        claim_due,
        engine,
        owner=owner,
        limit=limit,
        lease_seconds=lease_seconds(settings),
        now=clock(),
    )
    if not ids:
        return {}
    jitter = rng or random.Random()  # noqa: S311  (jitter spreads retries; not a secret)
    counts: dict[str, int] = {}
    async with httpx.AsyncClient(
        timeout=settings.delivery_timeout_seconds,
        transport=transport,
        follow_redirects=False,
        verify=_ssl_context(),
    ) as client:
        results = await asyncio.gather(
            *(
                deliver_one(
                    engine=engine,
                    settings=settings,
                    client=client,
                    owner=owner,
                    delivery_id=delivery_id,
                    clock=clock,
                    rng=jitter,
                )
                for delivery_id in ids
            )
        )
    for status in results:
        counts[status] = counts.get(status, 0) + 1
    return counts


async def deliver_one(
    *,
    engine: Engine,
    settings: Settings,
    client: httpx.AsyncClient,
    owner: str,
    delivery_id: int,
    clock: Clock,
    rng: random.Random,
) -> str:
    """Send one claimed delivery and record the attempt; returns the delivery's new status."""
    row = await asyncio.to_thread(_load, engine, delivery_id)
    if row is None or row["status"] != DeliveryStatus.IN_FLIGHT or row["lease_owner"] != owner:
        return "lease_lost"
    result = await send(client, row, settings)
    now = clock()
    attempt = int(row["attempts"])
    deadline = row["created_at"] + timedelta(hours=settings.delivery_max_age_hours)
    shown_url = row["url"]  # stored redacted
    retry_at: datetime | None = None
    attempt_outcome: str = result.outcome
    if result.outcome == "delivered":
        values: dict[str, Any] = {
            "status": DeliveryStatus.DELIVERED,
            "delivered_at": now,
            "last_error": None,
        }
    elif result.outcome == "retry" and now < deadline:
        delay = retry.equal_jitter(
            attempt,
            base_seconds=settings.delivery_retry_base_seconds,
            max_seconds=settings.delivery_retry_max_seconds,
            rng=rng,
        )
        delay = max(delay, result.retry_after_s or 0.0)
        # One last try at the deadline rather than giving up early on a long Retry-After.
        retry_at = min(now + timedelta(seconds=delay), deadline)
        values = {
            "status": DeliveryStatus.PENDING,
            "next_attempt_at": retry_at,
            "last_error": result.error,
        }
    else:
        error = result.error or "refused"
        attempt_outcome = "failed"
        if result.outcome == "retry":
            error = (
                f"gave up after {attempt} attempts over "
                f"{settings.delivery_max_age_hours:g} h: {error}"
            )
        values = {"status": DeliveryStatus.FAILED, "failed_at": now, "last_error": error[:2000]}
    values.update(lease_owner=None, lease_until=None)
    attempt_row = {
        "delivery_id": delivery_id,
        "attempt": attempt,
        "at": now,
        "outcome": attempt_outcome,
        "status_code": result.status_code,
        "error": result.error,
        "duration_ms": result.duration_ms,
        "retry_at": retry_at,
    }
    recorded = await asyncio.to_thread(_record, engine, delivery_id, owner, values, attempt_row)
    status = str(values["status"])
    log_level = logging.WARNING if status == DeliveryStatus.FAILED else logging.INFO
    log.log(
        log_level,
        "alert delivery %s (%s %s to %s) attempt %s: %s%s",
        delivery_id,
        row["kind"],
        row["channel"],
        shown_url,
        attempt,
        status,
        f" ({result.error})" if result.error else "",
    )
    if not recorded:
        log.warning("alert delivery %s: lease taken over while sending; outcome kept", delivery_id)
        return "lease_lost"
    return status


async def send(client: httpx.AsyncClient, row: dict[str, Any], settings: Settings) -> AttemptResult:
    """One POST of a stored delivery; the URL and secrets (signature, routing key) come from
    the settings, only here."""
    channel = str(row["channel"])
    name = str(row.get("channel_name") or channel)
    url = channel_url(settings, name)
    if url is None:
        setting = CHANNEL_URL_SETTING.get(cast(Channel, name), name)
        if name == "pagerduty":
            setting = "alert_pagerduty_routing_key"
        return AttemptResult(
            "failed",
            None,
            f"channel {name!r} is not configured (set SHADOWEVAL_{setting.upper()})",
            0.0,
        )
    payload = dict(row["payload"])
    if channel == "pagerduty":  # channel_url checked that the routing key is set
        payload = {"routing_key": settings.alert_pagerduty_routing_key, **payload}
    if channel in ("webhook", "retrain"):
        # Inside the signed body, so a replayed body cannot claim another delivery id
        # than the X-Shadoweval-Delivery header receivers dedup on.
        payload["delivery_id"] = int(row["id"])
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if channel in ("webhook", "retrain"):
        # webhook-id is the delivery id: the same on every retry, as Standard Webhooks asks.
        headers = channels.webhook_headers(
            body,
            secret=settings.alert_webhook_secret,
            timestamp=int(time.time()),
            message_id=str(row["id"]),
        )
    else:
        headers = {"Content-Type": "application/json", "User-Agent": "shadoweval-alerts"}
    headers[channels.DELIVERY_HEADER] = str(row["id"])
    started = time.perf_counter()
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as error:
        return AttemptResult("retry", None, f"timeout: {error.__class__.__name__}", _ms(started))
    except httpx.HTTPError as error:
        # Transport errors name the host at most; never the URL's secret path.
        message = f"{error.__class__.__name__}: {error}".replace(url, "<url>")
        return AttemptResult("retry", None, message[:2000], _ms(started))
    duration = _ms(started)
    outcome = channels.classify_status(response.status_code)
    error_text = None
    if outcome != "delivered":
        error_text = f"HTTP {response.status_code}: {response.text[:500]}"
    retry_after = retry.parse_retry_after(response.headers.get("retry-after"), now=utcnow())
    return AttemptResult(outcome, response.status_code, error_text, duration, retry_after)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _load(engine: Engine, delivery_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(DELIVERY_TABLE).where(DELIVERY_TABLE.c.id == delivery_id)
        ).first()
    return None if row is None else dict(row._mapping)


def _record(
    engine: Engine,
    delivery_id: int,
    owner: str,
    values: dict[str, Any],
    attempt_row: dict[str, Any],
) -> bool:
    """The attempt always (it happened); the delivery's new state only while still ours."""
    c = DELIVERY_TABLE.c
    with engine.begin() as connection:
        result = connection.execute(
            update(DELIVERY_TABLE)
            .where(
                c.id == delivery_id,
                c.lease_owner == owner,
                c.status == DeliveryStatus.IN_FLIGHT,
            )
            .values(**values)
        )
        connection.execute(insert(ATTEMPT_TABLE).values(**attempt_row))
        return bool(result.rowcount == 1)
