"""GET /v1/economics?by=day: one grouped read gives, per UTC day of decision ts, what a
read of that day alone gave (the routing page's "Savings per day" used to make one call a
day), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import calibration_service, economics_days
from shadoweval.analytics.calibration_service import DailyEconomics
from shadoweval.config import Settings
from shadoweval.providers.pricing import PricingTable
from tests.conftest import Keys, LiveApi
from tests.integration.test_sql_aggregation import CHEAP, START, _seed, assert_same


def _midnight(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.parametrize(
    ("window", "strong_model"),
    [
        ((None, None), None),
        # starts and ends inside a day: the first and last days are clipped to the window
        ((START + timedelta(hours=20), START + timedelta(hours=50)), None),
        ((None, None), CHEAP),
    ],
)
def test_each_day_equals_a_read_of_that_day(
    engine: Engine,
    base_settings: Settings,
    window: tuple[datetime | None, datetime | None],
    strong_model: str | None,
) -> None:
    _seed(engine)
    pricing = PricingTable.from_settings(base_settings)
    since, until = window
    with Session(engine) as session:
        days = economics_days.economics_per_day(
            session=session,
            pricing=pricing,
            router="agg",
            since=since,
            until=until,
            strong_model=strong_model,
        )
        expected = []
        day = _midnight(since or START)
        while day < (until or START + timedelta(days=5)):
            one = calibration_service.router_economics_report(
                session=session,
                pricing=pricing,
                router="agg",
                since=max(day, since) if since else day,
                until=min(day + timedelta(days=1), until) if until else day + timedelta(days=1),
                strong_model=strong_model,
            )
            if one.n_requests:
                figures = one.model_dump()
                expected.append(
                    {name: figures.get(name) for name in DailyEconomics.model_fields} | {"day": day}
                )
            day += timedelta(days=1)
    assert len(days) == len(expected) >= 2
    assert [d.day for d in days] == [e["day"] for e in expected]
    assert_same([d.model_dump() for d in days], expected)
    assert sum(d.n_requests for d in days) == sum(e["n_requests"] for e in expected)


def test_the_route_answers_days_only_when_asked(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    _seed(engine)
    with live_api.client(keys.read) as client:
        plain = client.get("/v1/economics", params={"router": "agg"}).json()
        by_day = client.get("/v1/economics", params={"router": "agg", "by": "day"}).json()
        empty = client.get("/v1/economics", params={"router": "nobody", "by": "day"}).json()
        refused = client.get("/v1/economics", params={"router": "agg", "by": "hour"})
    assert plain["days"] is None
    assert [day["day"][:10] for day in by_day["days"]] == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert sum(day["n_requests"] for day in by_day["days"]) == by_day["n_requests"] == 2400
    # Not exactly the window's savings: a decision without its router cost stands at the
    # mean of its own day's reported ones.
    assert sum(day["savings_total_usd"] for day in by_day["days"]) == pytest.approx(
        by_day["savings_total_usd"], rel=1e-3
    )
    # The window's figures come from its days' sums added up: the same to float rounding.
    assert_same(
        {key: value for key, value in by_day.items() if key != "days"},
        {key: value for key, value in plain.items() if key != "days"},
    )
    assert empty["n_requests"] == 0
    assert empty["days"] is None
    assert refused.status_code == 422
