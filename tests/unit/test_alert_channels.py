"""Pure channel logic: signatures, payload shapes, attempt outcomes, backoff, redaction."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from shadoweval.alerts import channels, outbox
from shadoweval.alerts.notification import Notification
from shadoweval.config import Settings

TS = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def notification(**changes: object) -> Notification:
    fields: dict[str, object] = {
        "kind": "trigger",
        "dedup_key": "quality_drop|support-router|billing",
        "rule": "quality_drop",
        "severity": "critical",
        "title": "CRITICAL quality_drop billing on support-router",
        "summary": "billing: harm 10 % → 21 % since 2026-11-27 09:07 UTC decision time "
        "(95 % CI 15 %–28 %), 240 labels\nGLR statistic / threshold: 1.2 ratio (above 1)",
        "ts": TS,
        "router": "support-router",
        "segment": "billing",
        "numbers": {
            "estimate": 0.2134,
            "ci_low": 0.15,
            "ci_high": 0.28,
            "n": 240,
            "threshold": 0.15,
            "window_start": "2026-11-27T00:00:00+00:00",
            "window_end": "2026-11-27T12:00:00+00:00",
            "baseline": 0.1,
        },
        "dashboard_url": "http://dash.example/segments?router=support-router&segment=billing",
        "runbook_url": "http://wiki.example/runbooks/quality_drop",
        "alert_id": 7,
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


# --- signatures ----------------------------------------------------------------------------


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert channels.sign("s3cret", 1700000000, body) == f"v1={expected}"


def test_signature_verifies_within_tolerance() -> None:
    body = b'{"kind":"trigger"}'
    signature = channels.sign("s3cret", 1700000000, body)
    assert channels.verify_signature("s3cret", "1700000000", signature, body, now=1700000100)
    # Several signatures (secret rotation): one match is enough.
    both = f"v1=deadbeef, {signature}"
    assert channels.verify_signature("s3cret", "1700000000", both, body, now=1700000000)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now"),
    [
        ("s3cret", "1700000000", b'{"kind":"resolve"}', 1700000000),  # tampered body
        ("other", "1700000000", b'{"kind":"trigger"}', 1700000000),  # wrong secret
        ("s3cret", "1700000001", b'{"kind":"trigger"}', 1700000001),  # timestamp changed
        ("s3cret", "1700000000", b'{"kind":"trigger"}', 1700000301),  # stale: a replay
        ("s3cret", "1700000000", b'{"kind":"trigger"}', 1699999699),  # from the future
        ("s3cret", "not-a-number", b'{"kind":"trigger"}', 1700000000),
    ],
)
def test_signature_fails(secret: str, timestamp: str, body: bytes, now: float) -> None:
    signature = channels.sign("s3cret", 1700000000, b'{"kind":"trigger"}')
    assert not channels.verify_signature(secret, timestamp, signature, body, now=now)


def test_webhook_headers_are_signed_only_with_a_secret() -> None:
    body = b"{}"
    signed = channels.webhook_headers(body, secret="k", timestamp=1700000000, message_id="42")
    assert signed[channels.TIMESTAMP_HEADER] == "1700000000"
    assert channels.verify_signature(
        "k", "1700000000", signed[channels.SIGNATURE_HEADER], body, now=1700000000
    )
    assert (signed["webhook-id"], signed["webhook-timestamp"]) == ("42", "1700000000")
    assert channels.verify_standard_signature("k", signed, body, now=1700000000)
    unsigned = channels.webhook_headers(body, secret=None, timestamp=1, message_id="42")
    assert channels.SIGNATURE_HEADER not in unsigned
    assert channels.WEBHOOK_SIGNATURE_HEADER not in unsigned


def _independent_standard_signature(
    key: bytes, message_id: str, timestamp: str, body: bytes
) -> str:
    """The spec's signature, written from standardwebhooks.com, not from channels.py."""
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        # whsec_ + base64: the key is the decoded bytes, as the spec's libraries read it.
        ("whsec_" + base64.b64encode(b"sixteen byte key").decode(), b"sixteen byte key"),
        # Any other secret: its raw UTF-8 bytes (documented in channels.py).
        ("demo-secret", b"demo-secret"),
    ],
)
def test_standard_webhooks_signature_matches_the_spec(secret: str, key: bytes) -> None:
    body = b'{"kind":"trigger","summary":"legal: harm 10 % \xe2\x86\x92 24 %"}'
    headers = channels.webhook_headers(body, secret=secret, timestamp=1700000000, message_id="17")
    expected = _independent_standard_signature(key, "17", "1700000000", body)
    assert headers["webhook-signature"] == expected
    assert channels.verify_standard_signature(secret, headers, body, now=1700000000 + 299)
    tampered = body.replace(b"24", b"25")
    assert not channels.verify_standard_signature(secret, headers, tampered, now=1700000000)
    # Too old, another id, another secret: refused.
    assert not channels.verify_standard_signature(secret, headers, body, now=1700000000 + 301)
    other_id = {**headers, "webhook-id": "18"}
    assert not channels.verify_standard_signature(secret, other_id, body, now=1700000000)
    assert not channels.verify_standard_signature("other", headers, body, now=1700000000)
    # Several space-separated signatures (a key rotation): one match is enough.
    rotated = {**headers, "webhook-signature": "v1,AAAA " + expected}
    assert channels.verify_standard_signature(secret, rotated, body, now=1700000000)


def test_the_standardwebhooks_library_verifies_our_deliveries() -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    import time

    body = b'{"kind":"trigger","delivery_id":17}'
    now = int(time.time())  # the library checks the timestamp against its own clock
    whsec = "whsec_" + base64.b64encode(b"a key of thirty-two bytes exactly").decode()
    for secret, library_key in ((whsec, whsec), ("demo-secret", b"demo-secret")):
        headers = channels.webhook_headers(body, secret=secret, timestamp=now, message_id="17")
        webhook = standardwebhooks.Webhook(library_key)
        assert webhook.verify(body, headers) == {"kind": "trigger", "delivery_id": 17}
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            webhook.verify(body.replace(b"17", b"18"), headers)


# --- payloads ------------------------------------------------------------------------------


def test_webhook_payload_carries_the_numbers_and_links() -> None:
    payload = channels.webhook_payload(
        notification(numbers={"estimate": 0.2, "at": TS, "nan": float("nan")})
    )
    assert json.loads(json.dumps(payload)) == payload  # plain JSON
    assert payload["kind"] == "trigger"
    assert payload["dedup_key"] == "quality_drop|support-router|billing"
    assert payload["severity"] == "critical"
    assert payload["numbers"] == {"estimate": 0.2, "at": TS.isoformat(), "nan": None}
    assert payload["links"] == {
        "dashboard": "http://dash.example/segments?router=support-router&segment=billing",
        "runbook": "http://wiki.example/runbooks/quality_drop",
    }
    assert payload["ts"] == "2026-11-27T12:00:00+00:00"
    assert payload["alert_id"] == 7
    # The sentence read in one breath, and the statistician's detail apart from it.
    assert payload["summary"].startswith("billing: harm 10 % → 21 % since 2026-11-27 09:07 UTC")
    assert "\n" not in payload["summary"]
    assert payload["detail"] == "GLR statistic / threshold: 1.2 ratio (above 1)"
    assert payload["title"] == "CRITICAL quality_drop billing on support-router"


def test_slack_payload_has_header_fields_and_link_buttons() -> None:
    payload = channels.slack_payload(notification())
    assert payload["text"] == (
        "CRITICAL quality_drop billing on support-router — billing: harm 10 % → 21 % since "
        "2026-11-27 09:07 UTC decision time (95 % CI 15 %–28 %), 240 labels"
    )
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["type"] == "plain_text"
    assert blocks[0]["text"]["text"] == (
        ":rotating_light: CRITICAL quality_drop billing on support-router"
    )
    assert blocks[1]["text"]["text"].startswith("billing: harm 10 % → 21 %")
    context = next(b["elements"] for b in blocks if b["type"] == "context")
    assert context[-1]["text"] == "GLR statistic / threshold: 1.2 ratio (above 1)"
    fields = next(b["fields"] for b in blocks if b["type"] == "section" and "fields" in b)
    texts = [f["text"] for f in fields]
    assert texts[0] == "*Estimate*\n0.2134 (95 % CI 0.15 – 0.28)"
    assert "*Sample size n*\n240" in texts
    assert "*Threshold*\n0.15" in texts
    assert "*Window (decision time)*\n2026-11-27 00:00 UTC → 2026-11-27 12:00 UTC" in texts
    assert "*Baseline*\n0.1" in texts
    assert all(f["type"] == "mrkdwn" for f in fields)
    buttons = next(b["elements"] for b in blocks if b["type"] == "actions")
    assert [(b["text"]["text"], b["url"]) for b in buttons] == [
        ("Dashboard", "http://dash.example/segments?router=support-router&segment=billing"),
        ("Runbook", "http://wiki.example/runbooks/quality_drop"),
    ]


def test_slack_resolve_reads_as_resolved_and_long_titles_are_clipped() -> None:
    resolved = channels.slack_payload(
        notification(kind="resolve", title="RESOLVED quality_drop billing on support-router")
    )
    header = resolved["blocks"][0]["text"]["text"]
    assert header == ":white_check_mark: RESOLVED quality_drop billing on support-router"
    reminder = channels.slack_payload(notification(kind="reminder"))
    assert reminder["blocks"][0]["text"]["text"].endswith("support-router (still firing)")
    payload = channels.slack_payload(notification(kind="resolve", title="x" * 400, numbers={}))
    header = payload["blocks"][0]["text"]["text"]
    assert header.startswith(":white_check_mark: x")
    assert len(header) == channels.SLACK_HEADER_MAX
    assert not any(b["type"] == "section" and "fields" in b for b in payload["blocks"])


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_pagerduty_trigger_shape(severity: str) -> None:
    event = channels.pagerduty_payload(notification(severity=severity), source="shadoweval.local")
    assert "routing_key" not in event  # added when sending, never stored
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "quality_drop|support-router|billing"
    body = event["payload"]
    assert body["severity"] == severity
    assert body["severity"] in {"critical", "error", "warning", "info"}
    assert body["summary"] == (
        "billing: harm 10 % → 21 % since 2026-11-27 09:07 UTC decision time "
        "(95 % CI 15 %–28 %), 240 labels"
    )
    assert body["custom_details"]["detail"] == "GLR statistic / threshold: 1.2 ratio (above 1)"
    assert body["source"] == "shadoweval.local"
    assert body["custom_details"]["numbers"]["n"] == 240
    assert body["custom_details"]["alert_id"] == 7
    assert {link["text"] for link in event["links"]} == {"Dashboard", "Runbook"}


def test_pagerduty_resolve_pairs_with_the_trigger_by_dedup_key() -> None:
    trigger = channels.pagerduty_payload(notification(), source="s")
    resolve = channels.pagerduty_payload(notification(kind="resolve"), source="s")
    assert resolve == {"event_action": "resolve", "dedup_key": trigger["dedup_key"]}
    long_key = channels.pagerduty_payload(notification(dedup_key="k" * 400), source="s")
    assert len(long_key["dedup_key"]) == channels.PAGERDUTY_DEDUP_KEY_MAX


def test_reminder_is_a_trigger_for_pagerduty() -> None:
    event = channels.pagerduty_payload(notification(kind="reminder"), source="s")
    assert event["event_action"] == "trigger"


# --- attempts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (202, "delivered"),
        (204, "delivered"),
        (301, "failed"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
    ],
)
def test_classify_status(status: int, outcome: str) -> None:
    assert channels.classify_status(status) == outcome


def test_redact_url_hides_every_path_query_and_credentials_on_every_channel() -> None:
    slack = "https://hooks.slack.com/services/T000/B000/HOOKSECRET"
    assert channels.redact_url(slack, "slack") == "https://hooks.slack.com/***"
    # Generic receivers put tokens in the path too (Teams, Zapier, home-grown hooks).
    for channel in channels.CHANNELS:
        assert (
            channels.redact_url("https://user:pw@hooks.example:8443/hooks/TOKEN?k=abc", channel)
            == "https://hooks.example:8443/***?***"
        )
    assert channels.redact_url("http://127.0.0.1:9000/", "webhook") == "http://127.0.0.1:9000/"


def test_number_fields_render_remaining_numbers_readably() -> None:
    fields = dict(channels.number_fields({"harm_rate_delta": 0.051234, "flag": True, "x": None}))
    assert fields == {"Harm rate delta": "0.05123", "Flag": "true"}
    # A model change's previous models as "a, b"; decision times to the minute, in UTC.
    fields = dict(
        channels.number_fields(
            {
                "previous_models": ["haiku-4", "haiku-3"],
                "decision_ts": "2026-11-27T09:07:31.123456+00:00",
                "change_point_ts": "2026-11-27T08:00:00",
            }
        )
    )
    assert fields == {
        "Previous models": "haiku-4, haiku-3",
        "Decision time": "2026-11-27 09:07 UTC",
        "Change point ts": "2026-11-27 08:00 UTC",
    }


def test_payload_for_routes_by_channel() -> None:
    n = notification()
    assert channels.payload_for("slack", n, source="s") == channels.slack_payload(n)
    assert channels.payload_for("pagerduty", n, source="s")["event_action"] == "trigger"
    assert channels.payload_for("retrain", n, source="s") == channels.webhook_payload(n)
    assert channels.payload_for("webhook", n, source="s")["version"] == 1


def test_a_channel_name_resolves_to_the_url_configured_now() -> None:
    settings = Settings(
        alert_webhook_url="https://hooks.example/a?token=T",
        alert_slack_webhook_url="https://hooks.slack.com/services/T/B/X",
        retrain_webhook_url="https://ml.example/retrain",
        alert_pagerduty_routing_key=None,
    )
    assert outbox.channel_url(settings, "webhook") == "https://hooks.example/a?token=T"
    assert outbox.channel_url(settings, "slack") == "https://hooks.slack.com/services/T/B/X"
    assert outbox.channel_url(settings, "retrain") == "https://ml.example/retrain"
    # PagerDuty's URL has a default; without a routing key the channel is not configured.
    assert outbox.channel_url(settings, "pagerduty") is None
    keyed = settings.model_copy(update={"alert_pagerduty_routing_key": "R"})
    assert outbox.channel_url(keyed, "pagerduty") == keyed.alert_pagerduty_url
    assert outbox.channel_url(settings, "teams") is None
    assert [name for name, _ in outbox.configured_channels(keyed, "trigger")] == [
        "webhook",
        "slack",
        "pagerduty",
    ]
    assert [name for name, _ in outbox.configured_channels(keyed, "retrain")] == ["retrain"]
