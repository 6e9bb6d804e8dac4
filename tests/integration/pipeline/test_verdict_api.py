"""Read API over judged pairs: verdicts side by side, shadow runs, spend, judge quality, metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shadoweval.auth import service as auth_service
from shadoweval.auth.models import ApiKey, Scope
from shadoweval.config import Settings
from shadoweval.judge.models import Verdict
from shadoweval.testing.fake_provider import FakeProviderServer
from tests.conftest import LiveApi, _empty_tables, decision
from tests.integration.pipeline.conftest import JUDGE, STRONG, drain, ingest

JUDGED_ITEMS = [
    decision("d1-billing-0", ts="2026-11-26T10:00:00Z"),
    decision("d1-billing-1", ts="2026-11-26T11:00:00Z"),
    decision("d1-code-0", ts="2026-11-26T12:00:00Z", segment={"topic": "code"}),
    decision("d2-billing-0", ts="2026-11-27T09:00:00Z"),
    decision("d2-code-0", ts="2026-11-27T10:00:00Z", segment={"topic": "code"}),
]


def _judge_pairs(engine: Engine, settings: Settings, fake: FakeProviderServer) -> str:
    """Empty tables, then five judged pairs over two days and two segments, one pair with a
    position-biased judge. Returns a read key."""
    _empty_tables(engine)
    fake.configure(judge_prefers=f"[{STRONG}]")
    with Session(engine) as session:
        key = auth_service.create_key(session=session, scopes=[Scope.READ]).key
    ingest(engine, settings, JUDGED_ITEMS)
    drain(engine, settings)
    return key


def _still_judged(engine: Engine) -> bool:
    """True while nothing has emptied or added to what `_judge_pairs` built."""
    with Session(engine) as session:
        keys = len(session.exec(select(ApiKey)).all())
        verdicts = len(session.exec(select(Verdict)).all())
    return keys == 1 and verdicts == len(JUDGED_ITEMS)


@pytest.fixture(scope="module")
def _judged_read_key(shared_engine: Engine) -> Iterator[dict[str, str]]:
    # The judged pairs cost a worker drain (13–24 s a test on a loaded PostgreSQL): the tests
    # that only read share one build per backend; emptied at the end like `engine` does.
    built: dict[str, str] = {}
    yield built
    _empty_tables(shared_engine)


@pytest.fixture
def judged(
    _judged_read_key: dict[str, str],
    shared_engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    shared_live_api: LiveApi,
) -> httpx.Client:
    """The five judged pairs (built again if a test emptied or changed them), read key."""
    if "read" not in _judged_read_key or not _still_judged(shared_engine):
        _judged_read_key["read"] = _judge_pairs(shared_engine, settings, fake)
    return shared_live_api.client(_judged_read_key["read"])


@pytest.fixture
def freshly_judged(
    _judged_read_key: dict[str, str],
    shared_engine: Engine,
    settings: Settings,
    fake: FakeProviderServer,
    shared_live_api: LiveApi,
) -> httpx.Client:
    """The judged pairs built for this test, so the worker's heartbeat is recent."""
    _judged_read_key["read"] = _judge_pairs(shared_engine, settings, fake)
    return shared_live_api.client(_judged_read_key["read"])


def test_verdicts_list_with_both_answers_side_by_side(judged: httpx.Client) -> None:
    page = judged.get("/v1/verdicts", params={"include_answers": True, "limit": 2})
    assert page.status_code == 200, page.text
    body = page.json()
    assert len(body["items"]) == 2
    assert body["next_cursor"]
    first = body["items"][0]
    assert first["request_id"] == "d1-billing-0"
    assert first["cheaper_answer"] == "answer d1-billing-0"
    assert first["stronger_answer"].startswith(f"[{STRONG}]")
    assert first["request"]["messages"][0]["content"] == "question d1-billing-0"
    assert first["order_cheaper_first"]["winner"] == "B"
    assert first["order_stronger_first"]["winner"] == "A"
    rest = judged.get("/v1/verdicts", params={"cursor": body["next_cursor"]}).json()
    assert [v["request_id"] for v in rest["items"]] == ["d1-code-0", "d2-billing-0", "d2-code-0"]
    assert rest["items"][0]["cheaper_answer"] is None  # answers only on request


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"segment": "code"}, ["d1-code-0", "d2-code-0"]),
        ({"since": "2026-11-27T00:00:00Z"}, ["d2-billing-0", "d2-code-0"]),
        (
            {"strong_needed": 1, "segment": "billing"},
            ["d1-billing-0", "d1-billing-1", "d2-billing-0"],
        ),
        ({"strong_needed": 0}, []),
        ({"direction": "reverse"}, []),
    ],
)
def test_verdict_filters(
    judged: httpx.Client, params: dict[str, object], expected: list[str]
) -> None:
    items = judged.get("/v1/verdicts", params=params).json()["items"]
    assert [v["request_id"] for v in items] == expected


def test_one_verdict_in_full(judged: httpx.Client) -> None:
    first = judged.get("/v1/verdicts", params={"limit": 1}).json()["items"][0]
    full = judged.get(f"/v1/verdicts/{first['id']}").json()
    assert full["stronger_answer"].startswith(f"[{STRONG}]")
    assert judged.get("/v1/verdicts/99999999").status_code == 404


def test_shadow_runs_listing(judged: httpx.Client) -> None:
    runs = judged.get("/v1/shadow-runs", params={"status": "succeeded"}).json()["items"]
    assert len(runs) == 5
    assert {r["target_model"] for r in runs} == {STRONG}
    assert all(r["cost_usd"] > 0 for r in runs)


def test_spend_per_utc_day(judged: httpx.Client) -> None:
    days = judged.get("/v1/spend").json()
    assert [d["day"] for d in days] == ["2026-11-26", "2026-11-27"]
    assert [(d["shadow_runs"], d["verdicts"]) for d in days] == [(3, 3), (2, 2)]
    for day in days:
        assert day["total_usd"] == pytest.approx(day["shadow_usd"] + day["judge_usd"])
        assert day["shadow_usd"] > 0
        assert day["judge_usd"] > 0


def test_judge_quality_per_judge_and_prompt(judged: httpx.Client) -> None:
    (report,) = judged.get("/v1/judge/quality").json()
    assert report["judge_model"] == JUDGE
    assert report["verdicts_done"] == 5
    consistency = report["swap_consistency"]
    assert consistency["estimate"] == 1.0
    assert consistency["n"] == 5
    assert 0 < consistency["ci_low"] < 1.0
    # A position-independent judge picks A in exactly half of its decisive calls.
    assert report["position_a_preference"]["estimate"] == 0.5
    assert report["judge_cost_usd"] > 0


def test_metrics_show_queue_depth_and_worker_heartbeat(
    freshly_judged: httpx.Client, shared_live_api: LiveApi
) -> None:
    text = httpx.get(f"{shared_live_api.url}/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("shadoweval_queue_depth", (("queue", "verdict"), ("status", "done")))] == 5
    assert (
        samples[("shadoweval_queue_depth", (("queue", "shadow_run"), ("status", "succeeded")))] == 5
    )
    ages = [
        v for (name, _), v in samples.items() if name == "shadoweval_worker_heartbeat_age_seconds"
    ]
    assert len(ages) == 1
    assert 0 <= ages[0] < 60


def test_spend_of_one_router(judged: httpx.Client, engine: Engine, settings: Settings) -> None:
    """The routing page shows the monitoring cost of its own router, not everyone's."""
    # Placed after the tests that share the judged pairs: it adds to them (`engine` empties).
    ingest(
        engine, settings, [decision("sales-0", router="sales-router", ts="2026-11-28T09:00:00Z")]
    )
    drain(engine, settings)
    everyone = judged.get("/v1/spend").json()
    support = judged.get("/v1/spend", params={"router": "support-router"}).json()
    sales = judged.get("/v1/spend", params={"router": "sales-router"}).json()
    assert [d["day"] for d in everyone] == ["2026-11-26", "2026-11-27", "2026-11-28"]
    assert [d["day"] for d in support] == ["2026-11-26", "2026-11-27"]
    assert [(d["shadow_runs"], d["verdicts"]) for d in support] == [(3, 3), (2, 2)]
    (sales_day,) = sales
    assert (sales_day["day"], sales_day["shadow_runs"], sales_day["verdicts"]) == (
        "2026-11-28",
        1,
        1,
    )
    assert sales_day["total_usd"] == pytest.approx(everyone[2]["total_usd"])
    assert judged.get("/v1/spend", params={"router": "no-such-router"}).json() == []
