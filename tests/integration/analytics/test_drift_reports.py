"""Drift reports: Evidently over stored decisions, stored once per window, served by the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import drift_service
from shadoweval.analytics.models import DriftReport
from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.parsing import ParsedBody
from tests.conftest import Keys, LiveApi, decision

# Weeks before the wall clock: a historical stream replayed through ingest.
DAY = datetime(2026, 11, 2, tzinfo=UTC)


def add_decisions(
    engine: Engine, settings: Settings, day: datetime, tokens_mean: float, n: int = 400
) -> None:
    rng = np.random.default_rng(int(tokens_mean))
    items = [
        decision(
            f"{day.date()}-{i}",
            router="r",
            ts=(day + timedelta(seconds=i * 60)).isoformat(),
            router_score=float(rng.beta(2, 5)),
            features={
                "input_tokens": float(rng.normal(tokens_mean, 50)),
                "language": "en" if rng.random() < 0.8 else "de",
            },
        )
        for i in range(n)
    ]
    with Session(engine) as session:
        ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items)
        )


def reported_days(engine: Engine) -> list[datetime]:
    with Session(engine) as session:
        reports = drift_service.list_reports(session=session, router="r")
    return sorted(r.window_start for r in reports)


def test_drift_of_a_decision_day_is_computed_once_and_served(
    engine: Engine, base_settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    add_decisions(engine, base_settings, DAY - timedelta(days=1), tokens_mean=400)
    add_decisions(engine, base_settings, DAY, tokens_mean=900)  # prompts got much longer

    with Session(engine) as session:
        # The router's log is still in DAY: only the day before it is complete.
        first = drift_service.check_completed_days(session=session, settings=base_settings)
    assert reported_days(engine) == [DAY - timedelta(days=1)]
    # The log moves into the next decision day: DAY is complete, weeks after the wall clock.
    add_decisions(engine, base_settings, DAY + timedelta(days=1), tokens_mean=900, n=1)
    with Session(engine) as session:
        made = drift_service.check_completed_days(session=session, settings=base_settings)
        again = drift_service.check_completed_days(session=session, settings=base_settings)
        count = session.scalar(select(func.count()).select_from(DriftReport))
    assert (first, made, again, count) == (1, 1, 0, 2)

    with live_api.client(keys.read) as client:
        report, earliest = client.get("/v1/drift", params={"router": "r"}).json()
        html = client.get(f"/v1/drift/{report['id']}/report.html")
    assert report["status"] == "ok"
    columns = report["result"]["columns"]
    assert columns["input_tokens"]["drifted"] is True
    assert columns["router_score"]["drifted"] is False
    assert report["window_start"].startswith("2026-11-02")
    assert earliest["status"] == "insufficient_data"  # nothing before it to compare with
    assert html.status_code == 200
    assert "<html" in html.text.lower()
