"""Alert text a person reads in one breath: the headline of each kind, titles, times, and the
demo receiver accepting exactly what the outbox signs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadoweval.alerts import alert_text, channels, outbox
from shadoweval.alerts.rules import AlertRule
from shadoweval.demo import receiver

DASH = "http://127.0.0.1:8501/quality?router=demo-router&segment=legal"


def _numbers(**extra: Any) -> dict[str, Any]:
    return {
        "value": 1.2,
        "reason": "at or above alert 1",
        "threshold": 1.0,
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
        "n": None,
        "window_start": None,
        "window_end": None,
        **extra,
    }


def test_quality_drop_headline_names_segment_rates_since_interval_labels_and_link() -> None:
    rule = AlertRule(name="quality", kind="quality_drop", alert=1.0)
    numbers = _numbers(
        estimate=0.2379,
        ci_low=0.181,
        ci_high=0.309,
        n=60,
        pre_change_harm_rate=0.1,
        post_change_labels=48,
        change_point_ts="2026-12-07T09:07:42.512345+00:00",
        window_start="2026-12-07T09:00:00+00:00",
        window_end="2026-12-07T12:00:00+00:00",
    )
    summary = alert_text._summary(
        rule, numbers, router="demo-router", segment="legal", dashboard_url=DASH
    )
    headline, detail = summary.split("\n")
    assert headline == (
        "legal: harm 10 % → 24 % since 2026-12-07 09:07 UTC decision time "
        f"(95 % CI 18 %–31 %), 48 labels — {DASH}"
    )
    # The statistician's line keeps statistic, threshold and interval.
    assert detail.startswith("GLR change-point statistic")
    assert "1.2 ratio (at or above alert 1)" in detail
    assert "decision time 2026-12-07 09:00 UTC → 2026-12-07 12:00 UTC" in detail
    assert alert_text._title(rule, "warning", "demo-router", "legal") == (
        "WARNING quality legal on demo-router"
    )
    assert alert_text._resolved_title("WARNING quality legal on demo-router") == (
        "RESOLVED quality legal on demo-router"
    )


@pytest.mark.parametrize(
    ("kind", "segment", "extra", "expected"),
    [
        (
            "calibration_drift",
            None,
            {
                "value": 0.00042,
                "estimate": 0.0812,
                "n": 400,
                "window_start": "2026-12-06T12:00:00+00:00",
                "window_end": "2026-12-07T12:00:00.000001+00:00",
            },
            "demo-router: routing scores no longer match outcomes (calibration error 0.081 "
            "over 400 labels), p = 0.00042 in decision time 2026-12-06 12:00 UTC → "
            "2026-12-07 12:00 UTC",
        ),
        (
            "budget_exhausted",
            "default",
            {
                "value": 1.0,
                "estimate": 19.5,
                "budget_usd": 20.0,
                "day": "2026-12-07",
                "budget_exhausted_event": True,
                "refused_decisions": 312,
            },
            "budget default: the shadow budget of decision day 2026-12-07 is used up "
            "($19.50 of $20.00); 312 decisions went unmonitored",
        ),
        (
            "router_stale",
            None,
            {
                "value": 1.0,
                "tier": "weak",
                "model": "haiku-5",
                "previous_models": ["haiku-4", "haiku-3"],
                "decision_ts": "2026-12-07T09:07:00+00:00",
            },
            "demo-router: weak tier moved to haiku-5 (was haiku-4, haiku-3) at "
            "2026-12-07 09:07 UTC decision time, and the router has no new version or "
            "threshold since",
        ),
        (
            "cascade_escalation_rate",
            "billing",
            {
                "value": 0.4,
                "estimate": 0.4,
                "ci_low": 0.31,
                "ci_high": 0.5,
                "threshold": 0.3,
                "n": 100,
                "window_start": "2026-12-07T11:00:00+00:00",
                "window_end": "2026-12-07T12:00:00+00:00",
            },
            "billing: share of decisions escalated from a cheaper tier is 40 % (95 % CI "
            "31 %–50 %), alarm at 30 %, n = 100, decision time 2026-12-07 11:00 UTC → "
            "2026-12-07 12:00 UTC",
        ),
    ],
)
def test_every_kind_has_a_plain_headline(
    kind: str, segment: str | None, extra: dict[str, Any], expected: str
) -> None:
    rule = AlertRule.model_validate({"name": kind, "kind": kind, "alert": 1.0})
    summary = alert_text._summary(rule, _numbers(**extra), router="demo-router", segment=segment)
    headline, detail = summary.split("\n")
    assert headline == expected
    assert "[" not in headline
    assert "None" not in headline
    assert detail  # the statistician's line is still there


def test_retrain_text_lists_previous_models_and_says_decision_time() -> None:
    from datetime import UTC, datetime

    n = outbox.retrain_notification(
        event_id=3,
        dedup_key="demo-router|weak|haiku-5",
        ts=datetime(2026, 12, 7, 9, 7, 31, 123456, tzinfo=UTC),
        router="demo-router",
        details={"tier": "weak", "model": "haiku-5", "previous_models": ["haiku-4", "h-3"]},
        public_base_url="http://api.example:8000",
    )
    assert n.title == "INFO model_change on demo-router"
    headline = n.summary.split("\n")[0]
    assert headline.startswith(
        "demo-router: weak tier now routes to haiku-5 (was haiku-4, h-3) since "
        "2026-12-07 09:07 UTC decision time — labelled training tuples: "
        "http://api.example:8000/v1/exports/training?"
    )
    assert "['" not in n.summary


# --- the demo receiver accepts what the outbox signs ---------------------------------------


@pytest.mark.parametrize("secret", ["s3cret", "whsec_c2l4dGVlbiBieXRlIGtleQ=="])
def test_demo_receiver_verifies_standard_webhooks_and_refuses_tampering(
    tmp_path: Path, secret: str
) -> None:
    body = json.dumps({"title": "WARNING quality legal on demo-router"}).encode()
    headers = channels.webhook_headers(
        body, secret=secret, timestamp=int(time.time()), message_id="9"
    )
    standard_only = {k: v for k, v in headers.items() if not k.startswith("X-Shadoweval")}
    log_path = tmp_path / "alerts.jsonl"
    with run_and_post(secret, log_path) as post:
        assert post(body, standard_only) == 200
        assert post(body.replace(b"legal", b"other"), standard_only) == 401
        # A receiver of the old headers only (one more release) still verifies.
        legacy = {k: v for k, v in headers.items() if not k.startswith("webhook-")}
        assert post(body, legacy) == 200
    entries = receiver.read_log(log_path)
    assert [(e["signature_verified"], e["signature_scheme"]) for e in entries] == [
        (True, "standard-webhooks"),
        (False, "standard-webhooks"),
        (True, "x-shadoweval"),
    ]


@contextmanager
def run_and_post(secret: str, log_path: Path) -> Iterator[Callable[[bytes, dict[str, str]], int]]:
    """The receiver on a free port, and a function that POSTs to it and returns the status."""
    with receiver.run_receiver(secret=secret, log_path=log_path) as url:

        def post(body: bytes, headers: dict[str, str]) -> int:
            return httpx.post(url + "/alerts", content=body, headers=headers).status_code

        yield post
