"""Alert API over real HTTP: rules (admin) with validation errors, alerts, acknowledge, silence."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.alerts import service
from shadoweval.alerts.rules import RuleFileError
from shadoweval.app import create_app
from shadoweval.config import Settings
from tests.conftest import Keys, LiveApi, use_settings
from tests.integration.alerts.stream import hour_traffic, move_decision_time

RULE = {
    "name": "escalation",
    "kind": "cascade_escalation_rate",
    "warn": 0.25,
    "alert": 0.3,
    "window": "1h",
    "min_samples": 10,
}


def test_rules_default_to_the_packaged_file(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as client:
        body = client.get("/v1/alert-rules").json()
    assert body["source"].endswith("default_rules.yaml")
    assert len({rule["kind"] for rule in body["rules"]}) == 13


def test_put_replaces_the_rule_set(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as client:
        put = client.put("/v1/alert-rules", json={"rules": [RULE]})
        assert put.status_code == 200, put.text
        body = client.get("/v1/alert-rules").json()
    assert body["source"] == "api"
    assert body["updated_by"] == "_".join(keys.admin.split("_")[:2])  # the key's prefix
    assert [rule["name"] for rule in body["rules"]] == ["escalation"]
    assert body["rules"][0]["labels"] == {"router": "*", "segment": "*"}


def test_pending_period_and_clear_level_round_trip(live_api: LiveApi, keys: Keys) -> None:
    rule = {**RULE, "for": "15m", "clear": 0.2}
    with live_api.client(keys.admin) as client:
        assert client.put("/v1/alert-rules", json={"rules": [rule]}).status_code == 200
        (stored,) = client.get("/v1/alert-rules").json()["rules"]
    assert (stored["for"], stored["clear"]) == ("15m", 0.2)


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"kind": "vibes"}, ["body", "rules", 0, "kind"], "Input should be"),
        ({"warn": 0.5, "alert": 0.3}, ["body", "rules", 0], "must be ≤ alert"),
        ({"window": "soon"}, ["body", "rules", 0, "window"], "30m, 6h or 7d"),
        ({"min_samples": -1}, ["body", "rules", 0, "min_samples"], "greater than or equal"),
        ({"labels": {"team": "x"}}, ["body", "rules", 0, "labels", "team"], "Extra inputs"),
        ({"severity": "loud"}, ["body", "rules", 0, "severity"], "Input should be"),
        ({"for": "a while"}, ["body", "rules", 0, "for"], "0, 15m, 2h or 1d"),
        ({"clear": 0.5}, ["body", "rules", 0, "clear"], "must be ≤ the lowest threshold"),
        (
            {"calibration": {"min_n": 10}},
            ["body", "rules", 0, "calibration"],
            "only calibration_drift rules",
        ),
        (
            {
                "kind": "calibration_drift",
                "warn": 0.01,
                "alert": 0.001,
                "calibration": {"min_ece": 2},
            },
            ["body", "rules", 0, "calibration", "min_ece"],
            "less than or equal to 1",
        ),
    ],
)
def test_invalid_rules_answer_422_with_the_field_path(
    live_api: LiveApi, keys: Keys, change: dict[str, object], loc: list[object], message: str
) -> None:
    with live_api.client(keys.admin) as client:
        response = client.put("/v1/alert-rules", json={"rules": [{**RULE, **change}]})
        assert response.status_code == 422
        errors = response.json()["detail"]
        assert any(e["loc"] == loc and message in e["msg"] for e in errors), errors
        # Nothing was stored.
        assert client.get("/v1/alert-rules").json()["source"] != "api"


def test_duplicate_rule_names_are_refused(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.admin) as client:
        response = client.put("/v1/alert-rules", json={"rules": [RULE, RULE]})
    assert response.status_code == 422
    assert "used twice" in response.text


@pytest.fixture
def fired(live_api: LiveApi, keys: Keys, session: Session) -> list[int]:
    """Two firing alerts (billing, refunds) and one resolved (chat), from real evaluations."""
    with live_api.client(keys.admin) as client:
        assert client.put("/v1/alert-rules", json={"rules": [RULE]}).status_code == 200
    # Decision time, not the wall clock: a day in the log, evaluated as it was live.
    now = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
    hour = now.replace(minute=0) - timedelta(hours=1)
    for segment, escalated in (("billing", 40), ("refunds", 35), ("chat", 50)):
        hour_traffic(session, hour=hour, decisions=100, escalated=escalated, segment=segment)
    move_decision_time(session, now)
    settings = live_api.app.state.settings
    service.evaluate_alerts(session=session, settings=settings, now=now)
    # The next hour: chat is back to normal.
    for segment, escalated in (("billing", 40), ("refunds", 35), ("chat", 0)):
        hour_traffic(
            session,
            hour=hour + timedelta(hours=1),
            decisions=100,
            escalated=escalated,
            segment=segment,
        )
    later = now + timedelta(hours=1)
    move_decision_time(session, later)
    service.evaluate_alerts(session=session, settings=settings, now=later)
    with live_api.client(keys.read) as client:
        items = client.get("/v1/alerts", params={"state": "all"}).json()["items"]
    return [item["id"] for item in items]


def test_list_filter_and_page(live_api: LiveApi, keys: Keys, fired: list[int]) -> None:
    with live_api.client(keys.read) as client:
        firing = client.get("/v1/alerts", params={"state": "firing"}).json()["items"]
        assert sorted(a["segment"] for a in firing) == ["billing", "refunds"]
        resolved = client.get("/v1/alerts", params={"state": "resolved"}).json()["items"]
        assert [(a["segment"], a["resolved_at"] is not None) for a in resolved] == [("chat", True)]
        one = client.get("/v1/alerts", params={"segment": "billing"}).json()["items"]
        assert [a["dedup_key"] for a in one] == ["escalation|support-router|billing"]
        assert client.get("/v1/alerts", params={"router": "other"}).json()["items"] == []
        first = client.get("/v1/alerts", params={"limit": 2}).json()
        second = client.get(
            "/v1/alerts", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
        assert [a["id"] for a in first["items"] + second["items"]] == fired
        assert second["next_cursor"] is None
        assert client.get("/v1/alerts", params={"state": "sleeping"}).status_code == 422
        bad = client.get("/v1/alerts", params={"cursor": "x"})
        assert (bad.status_code, bad.json()["loc"]) == (400, ["query", "cursor"])


def test_get_one_carries_the_numbers_and_links(
    live_api: LiveApi, keys: Keys, fired: list[int]
) -> None:
    with live_api.client(keys.read) as client:
        alert = client.get(f"/v1/alerts/{fired[-1]}").json()
        assert client.get("/v1/alerts/999999").status_code == 404
    assert alert["state"] == "firing"
    assert alert["level"] == "alert"
    numbers = alert["numbers"]
    for key in ("estimate", "ci_low", "ci_high", "n", "threshold", "window_start", "window_end"):
        assert numbers[key] is not None, key
    assert alert["dashboard_url"].startswith("http://127.0.0.1:8501/routing?router=")


def test_acknowledge_and_silence(live_api: LiveApi, keys: Keys, fired: list[int]) -> None:
    alert_id = fired[-1]
    with live_api.client(keys.operate) as client:
        acked = client.post(f"/v1/alerts/{alert_id}/acknowledge")
        assert acked.status_code == 200, acked.text
        assert acked.json()["acknowledged_by"] == "_".join(keys.operate.split("_")[:2])
        silenced = client.post(f"/v1/alerts/{alert_id}/silence", json={"minutes": 30})
        assert silenced.status_code == 200, silenced.text
        until = datetime.fromisoformat(silenced.json()["silenced_until"])
        assert timedelta(minutes=29) < until - datetime.now(UTC) <= timedelta(minutes=30)
        absolute = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        again = client.post(f"/v1/alerts/{alert_id}/silence", json={"until": absolute})
        assert datetime.fromisoformat(again.json()["silenced_until"]) == datetime.fromisoformat(
            absolute
        )
        both = client.post(f"/v1/alerts/{alert_id}/silence", json={"minutes": 5, "until": absolute})
        assert both.status_code == 422
        assert "exactly one" in both.text
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        in_the_past = client.post(f"/v1/alerts/{alert_id}/silence", json={"until": past})
        assert in_the_past.status_code == 400
        assert in_the_past.json()["field"] == "until"
        naive = client.post(f"/v1/alerts/{alert_id}/silence", json={"until": "2030-01-01T00:00:00"})
        assert naive.status_code == 422


BAD_RULES = """rules:
  - name: escalation
    kind: cascade_escalation_rate
    warn: 0.4
    alert: 0.3
  - name: typo
    kind: not_a_kind
    warn: 1
"""


def test_a_bad_rule_file_answers_a_clear_error_with_field_paths(
    live_api: LiveApi, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(BAD_RULES)
    use_settings(live_api, alert_rules_file=path)
    with live_api.client(keys.admin) as client:
        response = client.get("/v1/alert-rules")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "invalid_alert_rules"
    assert body["source"] == str(path)
    assert {".".join(str(p) for p in e["loc"]) for e in body["errors"]} == {
        "rules.0",
        "rules.1.kind",
    }


def test_the_api_refuses_to_start_on_a_bad_rule_file(
    base_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(BAD_RULES)
    app = create_app(base_settings.model_copy(update={"alert_rules_file": path}), engine)
    with pytest.raises(RuleFileError) as caught, TestClient(app):
        pass
    assert str(path) in str(caught.value)
    assert "rules.1.kind" in str(caught.value)


def test_worker_startup_checks_the_rules_and_warns_about_unsigned_webhooks(
    base_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unsigned = base_settings.model_copy(
        update={"alert_webhook_url": "https://hooks.example/x", "alert_webhook_secret": None}
    )
    with caplog.at_level(logging.WARNING, logger="shadoweval.alerts.service"):
        service.startup_checks(unsigned)
    assert "without alert_webhook_secret" in caplog.text
    caplog.clear()
    signed = unsigned.model_copy(update={"alert_webhook_secret": "s"})
    with caplog.at_level(logging.WARNING, logger="shadoweval.alerts.service"):
        service.startup_checks(signed)
    assert caplog.text == ""
    path = tmp_path / "rules.yaml"
    path.write_text(BAD_RULES)
    with pytest.raises(RuleFileError):
        service.startup_checks(signed.model_copy(update={"alert_rules_file": path}))
