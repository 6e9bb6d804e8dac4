"""Drift reports: Evidently over stored decisions, stored once per window, served by the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import drift_service
from shadoweval.analytics.models import DriftReport
from shadoweval.ingest.models import Decision
from tests.conftest import Keys, LiveApi

DAY = datetime(2026, 11, 26, tzinfo=UTC)


def add_decisions(engine: Engine, day: datetime, tokens_mean: float, n: int = 400) -> None:
    rng = np.random.default_rng(int(tokens_mean))
    with Session(engine) as session:
        for i in range(n):
            ts = day + timedelta(seconds=i * 60)
            session.add(
                Decision(
                    router="r",
                    request_id=f"{day.date()}-{i}",
                    ts=ts,
                    received_at=ts,
                    tier="cheap",
                    chosen_model="m",
                    served_model="m",
                    segment_value="all",
                    inclusion_probability=0.1,
                    sampled=False,
                    router_score=float(rng.beta(2, 5)),
                    features={
                        "input_tokens": float(rng.normal(tokens_mean, 50)),
                        "language": "en" if rng.random() < 0.8 else "de",
                    },
                )
            )
        session.commit()


def test_drift_of_a_day_is_computed_once_and_served(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    add_decisions(engine, DAY - timedelta(days=1), tokens_mean=400)
    add_decisions(engine, DAY, tokens_mean=900)  # prompts got much longer

    with Session(engine) as session:
        made = drift_service.check_completed_days(
            session=session, now=DAY + timedelta(days=1, hours=3)
        )
        again = drift_service.check_completed_days(
            session=session, now=DAY + timedelta(days=1, hours=4)
        )
        count = session.scalar(select(func.count()).select_from(DriftReport))
    assert (made, again, count) == (1, 0, 1)

    with live_api.client(keys.read) as client:
        (report,) = client.get("/v1/drift", params={"router": "r"}).json()
        html = client.get(f"/v1/drift/{report['id']}/report.html")
    assert report["status"] == "ok"
    columns = report["result"]["columns"]
    assert columns["input_tokens"]["drifted"] is True
    assert columns["router_score"]["drifted"] is False
    assert report["window_start"].startswith("2026-11-26")
    assert html.status_code == 200
    assert "<html" in html.text.lower()
