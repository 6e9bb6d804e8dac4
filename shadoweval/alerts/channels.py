"""How a notification is said on each channel, and how a delivery attempt is judged (pure).

Generic webhooks (and the retrain trigger) are signed the Standard Webhooks way
(standardwebhooks.com): `webhook-id` (the delivery id, the same on every retry),
`webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, so the `standardwebhooks` libraries verify them. The key: a
secret written `whsec_<base64>` is base64-decoded, as the spec's libraries do; any other
secret is used as its raw UTF-8 bytes (the libraries base64-decode every string, so a receiver
using one passes `secret.encode()` as bytes). For one release the old headers are sent too:
`X-Shadoweval-Timestamp` and `X-Shadoweval-Signature: v1=` + hex HMAC-SHA256 of
`f"{timestamp}."` + body, keyed by the secret string as written. Either way a receiver can
check both who sent a body and that it is not a replay of an old one.
Payloads never hold secrets (PagerDuty's routing key is added at send time), because
they are stored in the outbox and shown by the API.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from shadoweval.alerts.notification import Notification, list_text, split_summary, when_text

Channel = Literal["webhook", "slack", "pagerduty", "retrain"]
CHANNELS: tuple[Channel, ...] = ("webhook", "slack", "pagerduty", "retrain")
Outcome = Literal["delivered", "retry", "failed"]

TIMESTAMP_HEADER = "X-Shadoweval-Timestamp"
SIGNATURE_HEADER = "X-Shadoweval-Signature"
DELIVERY_HEADER = "X-Shadoweval-Delivery"  # the outbox row id: receivers dedup redeliveries by it
SIGNATURE_VERSION = "v1"
# Standard Webhooks (lower case, as the spec writes them; HTTP header names ignore case).
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
STANDARD_SECRET_PREFIX = "whsec_"  # noqa: S105 - a format marker, not a secret
PAYLOAD_VERSION = 1

# PagerDuty Events API v2 accepts critical|error|warning|info.
PAGERDUTY_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}
PAGERDUTY_DEDUP_KEY_MAX = 255
PAGERDUTY_SUMMARY_MAX = 1024
SLACK_HEADER_MAX = 150  # plain_text limit of a header block
SLACK_TEXT_MAX = 3000  # text limit of a section block


# --- signing -------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value of `body` sent at `timestamp` (unix seconds)."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret: str,
    timestamp_header: str,
    signature_header: str,
    body: bytes,
    *,
    now: float,
    tolerance_seconds: float = 300,
) -> bool:
    """True when the signature matches and the timestamp is within the tolerance of `now`.

    The header may list several comma-separated signatures (as during a secret rotation);
    one match is enough. Comparison is constant-time.
    """
    try:
        timestamp = int(timestamp_header.strip())
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False  # a replayed (or badly clocked) request
    expected = sign(secret, timestamp, body)
    return any(
        hmac.compare_digest(candidate.strip(), expected)
        for candidate in signature_header.split(",")
        if candidate.strip()
    )


def signing_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature: `whsec_<base64>` decoded, else the
    secret's raw UTF-8 bytes (so existing plain secrets keep working unchanged)."""
    if secret.startswith(STANDARD_SECRET_PREFIX):
        encoded = secret[len(STANDARD_SECRET_PREFIX) :]
        try:
            # Decoded as the standardwebhooks libraries do (padding added: b64decode ignores
            # surplus padding, and unpadded keys are common), so both sides get one key.
            return base64.b64decode(encoded + "==")
        except (binascii.Error, ValueError) as error:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from error
    return secret.encode()


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`."""
    message = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), message, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_standard_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_seconds: float = 300,
) -> bool:
    """True when one of the space-separated `v1,` signatures matches and `webhook-timestamp`
    is within the tolerance of `now` (the spec's five minutes by default). Constant-time."""
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get(WEBHOOK_ID_HEADER, "").strip()
    signatures = lowered.get(WEBHOOK_SIGNATURE_HEADER, "")
    try:
        timestamp = int(lowered.get(WEBHOOK_TIMESTAMP_HEADER, "").strip())
    except ValueError:
        return False
    if not message_id or abs(now - timestamp) > tolerance_seconds:
        return False
    try:
        expected = standard_signature(secret, message_id, timestamp, body)
    except ValueError:
        return False
    return any(
        hmac.compare_digest(candidate.encode(), expected.encode())
        for candidate in signatures.split(" ")
        if candidate
    )


def webhook_headers(
    body: bytes, *, secret: str | None, timestamp: int, message_id: str
) -> dict[str, str]:
    """Headers of a generic webhook POST; signed (both schemes) when a secret is configured.

    `message_id` is the delivery id: the same on every retry, so receivers dedup on it.
    """
    headers = {"Content-Type": "application/json", "User-Agent": "shadoweval-alerts"}
    if secret:
        headers[WEBHOOK_ID_HEADER] = message_id
        headers[WEBHOOK_TIMESTAMP_HEADER] = str(timestamp)
        headers[WEBHOOK_SIGNATURE_HEADER] = standard_signature(secret, message_id, timestamp, body)
        # Deprecated: kept for one release so existing receivers keep verifying.
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return headers


# --- payloads ------------------------------------------------------------------------------


def webhook_payload(notification: Notification) -> dict[str, Any]:
    """The generic webhook JSON: the whole notification with its numbers and links.

    `summary` is the sentence a person reads in one breath; `detail` the statistician's line.
    """
    headline, detail = split_summary(notification.summary)
    return {
        "version": PAYLOAD_VERSION,
        "source": "shadoweval",
        "kind": notification.kind,
        "dedup_key": notification.dedup_key,
        "rule": notification.rule,
        "severity": notification.severity,
        "title": notification.title,
        "summary": headline,
        "detail": detail,
        "ts": notification.ts.isoformat(),
        "router": notification.router,
        "segment": notification.segment,
        "alert_id": notification.alert_id,
        "numbers": _jsonable(notification.numbers),
        "links": _links(notification),
        "details": _jsonable(notification.details),
    }


def slack_payload(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: header, the numbers as fields, link buttons.

    `text` is the fallback shown in notifications and by clients without blocks.
    """
    icon = _slack_icon(notification)
    headline, detail = split_summary(notification.summary)
    header = _clip(f"{icon} {_header_text(notification)}", SLACK_HEADER_MAX)
    context = " · ".join(
        part
        for part in (
            f"rule `{notification.rule}`",
            f"router `{notification.router}`" if notification.router else "",
            f"segment `{notification.segment}`" if notification.segment else "",
            f"severity *{notification.severity}*",
        )
        if part
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _clip(headline or "-", SLACK_TEXT_MAX)},
        },
    ]
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{label}*\n{value}", 2000)}
        for label, value in number_fields(notification.numbers)
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})  # Slack allows 10 fields
    context_elements = [{"type": "mrkdwn", "text": context}]
    if detail:
        context_elements.append({"type": "plain_text", "text": _clip(detail, SLACK_TEXT_MAX)})
    blocks.append({"type": "context", "elements": context_elements})
    buttons = [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": text},
            "url": url,
            **({"style": "primary"} if text == "Dashboard" else {}),
        }
        for text, url in (
            ("Dashboard", notification.dashboard_url),
            ("Runbook", notification.runbook_url),
            ("Training export", notification.details.get("export_url")),
        )
        if isinstance(url, str) and url
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    fallback = _header_text(notification)
    if headline:
        fallback += f" — {headline}"
    return {"text": _clip(fallback, SLACK_TEXT_MAX), "blocks": blocks}


def pagerduty_payload(notification: Notification, *, source: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event, without its routing key (added when sending).

    `resolve` closes the incident opened by `trigger` with the same dedup key; reminders
    are sent as `trigger` again, which PagerDuty folds into the open incident.
    """
    dedup_key = notification.dedup_key[:PAGERDUTY_DEDUP_KEY_MAX]
    headline, detail = split_summary(notification.summary)
    if notification.kind == "resolve":
        return {"event_action": "resolve", "dedup_key": dedup_key}
    custom_details: dict[str, Any] = {
        "rule": notification.rule,
        "router": notification.router,
        "segment": notification.segment,
        "kind": notification.kind,
        "title": notification.title,
        "detail": detail,
        "numbers": _jsonable(notification.numbers),
    }
    if notification.alert_id is not None:
        custom_details["alert_id"] = notification.alert_id
    links = [
        {"href": url, "text": text}
        for text, url in (
            ("Dashboard", notification.dashboard_url),
            ("Runbook", notification.runbook_url),
        )
        if url
    ]
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            # What the incident list shows: the sentence, not the rule's name.
            "summary": _clip(headline or notification.title, PAGERDUTY_SUMMARY_MAX),
            "source": source,
            "severity": PAGERDUTY_SEVERITY[notification.severity],
            "timestamp": notification.ts.isoformat(),
            "component": notification.router or "shadoweval",
            "group": notification.segment or "all",
            "class": notification.rule,
            "custom_details": custom_details,
        },
        "client": "shadoweval",
        "links": links,
    }
    if notification.dashboard_url:
        event["client_url"] = notification.dashboard_url
    return event


def payload_for(channel: Channel, notification: Notification, *, source: str) -> dict[str, Any]:
    if channel == "slack":
        return slack_payload(notification)
    if channel == "pagerduty":
        return pagerduty_payload(notification, source=source)
    return webhook_payload(notification)


def number_fields(numbers: dict[str, Any]) -> list[tuple[str, str]]:
    """The numbers behind an alert as readable (label, value) pairs, estimate ± interval first."""
    shown: list[tuple[str, str]] = []
    used: set[str] = set()
    estimate = numbers.get("estimate")
    if estimate is not None:
        text = _number(estimate)
        low, high = numbers.get("ci_low"), numbers.get("ci_high")
        if low is not None and high is not None:
            text += f" (95 % CI {_number(low)} – {_number(high)})"
        shown.append(("Estimate", text))
        used.update(("estimate", "ci_low", "ci_high"))
    if numbers.get("n") is not None:
        shown.append(("Sample size n", _number(numbers["n"])))
        used.add("n")
    if numbers.get("threshold") is not None:
        shown.append(("Threshold", _number(numbers["threshold"])))
        used.add("threshold")
    start, end = numbers.get("window_start"), numbers.get("window_end")
    if start is not None or end is not None:
        shown.append(("Window (decision time)", f"{when_text(start)} → {when_text(end)}"))
        used.update(("window_start", "window_end"))
    for key, value in numbers.items():
        if key.endswith("_ts") and value is not None:
            label = "Decision time" if key == "decision_ts" else key.replace("_", " ").capitalize()
            shown.append((label, when_text(value)))
        elif key not in used and value is not None:
            shown.append((key.replace("_", " ").capitalize(), _number(value)))
    return shown


# --- attempts ------------------------------------------------------------------------------


def classify_status(status_code: int) -> Outcome:
    """2xx delivered; 408, 429 and 5xx worth retrying; any other answer is final."""
    if 200 <= status_code < 300:
        return "delivered"
    if status_code in (408, 429) or status_code >= 500:
        return "retry"
    return "failed"  # 3xx (configure the final URL) and 4xx: a resend would fail the same way


def redact_url(url: str, channel: str) -> str:
    """A URL safe to log and show: scheme and host only.

    Webhook receivers of every kind (Slack, Teams, Zapier, home-grown) put tokens in the
    path or the query, so both are hidden for every channel, as are credentials.
    """
    del channel  # kept in the signature: callers pass it, and no channel is exempt
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = "/***" if parts.path not in ("", "/") else parts.path
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, host, path, query, ""))


# --- helpers -------------------------------------------------------------------------------


def _links(notification: Notification) -> dict[str, str]:
    links = {
        "dashboard": notification.dashboard_url,
        "runbook": notification.runbook_url,
        "export": notification.details.get("export_url"),
    }
    return {name: url for name, url in links.items() if isinstance(url, str) and url}


def _header_text(notification: Notification) -> str:
    """The title, which already carries its one severity (or RESOLVED) word; a reminder
    says it is one."""
    if notification.kind == "reminder":
        return f"{notification.title} (still firing)"
    return notification.title


def _slack_icon(notification: Notification) -> str:
    if notification.kind == "resolve":
        return ":white_check_mark:"
    if notification.kind == "retrain":
        return ":arrows_counterclockwise:"
    return {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}[
        notification.severity
    ]


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return when_text(value)
    if isinstance(value, list | tuple):
        return list_text(value)
    return "-" if value is None else str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _jsonable(value: Any) -> Any:
    """Numbers and details may hold datetimes; stored payloads are plain JSON."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None  # NaN is not JSON
    return value
