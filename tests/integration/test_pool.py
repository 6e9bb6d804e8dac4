"""The model watcher, the pool API, and calibration windows that start at a model change."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from shadoweval.jobs import scheduler
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.events.models import Event
from shadoweval.gate.models import GateRun
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.pool import service as pool_service
from shadoweval.pool import watcher as model_watcher
from shadoweval.pool.models import ModelWatchState, PoolIn, RouterModel
from shadoweval.runtime.worker import WorkerRuntime
from shadoweval.sampling.models import SamplingStratum
from tests.conftest import Keys, LiveApi, decision

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ROUTER = "support-router"


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    # Tests ingest and watch within the same second: read decisions as soon as they commit.
    return base_settings.model_copy(update={"model_watch_settle_seconds": 0})


def ingest(engine: Engine, settings: Settings, items: list[dict[str, object]]) -> None:
    with Session(engine) as session:
        ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items)
        )


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def model_events(engine: Engine) -> list[Event]:
    with Session(engine) as session:
        return list(
            session.scalars(select(Event).where(Event.kind == "model_change").order_by(Event.id))  # type: ignore[arg-type]
        )


def pool_of(engine: Engine, router: str = ROUTER) -> dict[tuple[str, str], tuple[str, bool]]:
    with Session(engine) as session:
        rows = session.scalars(select(RouterModel).where(RouterModel.router == router))  # type: ignore[arg-type]
        return {(r.tier, r.model): (r.source, r.active) for r in rows}


def add_stratum(engine: Engine, tier: str, segment: str = "billing") -> None:
    with Session(engine) as session:
        session.add(
            SamplingStratum(
                router=ROUTER,
                segment_value=segment,
                tier=tier,
                inclusion_probability=0.1,
                updated_at=T0,
            )
        )
        session.commit()


def stratum(engine: Engine, tier: str) -> SamplingStratum:
    with Session(engine) as session:
        found = session.scalars(
            select(SamplingStratum).where(SamplingStratum.tier == tier)  # type: ignore[arg-type]
        ).one()
        session.expunge(found)
        return found


def first_models(n: int = 3) -> list[dict[str, object]]:
    return [decision(f"c-{i}", ts=at(i)) for i in range(n)] + [
        decision(f"s-{i}", ts=at(i), tier="strong", chosen_model="claude-sonnet-4-6")
        for i in range(n)
    ]


def test_a_new_routers_first_models_only_establish_its_pool(
    engine: Engine, settings: Settings
) -> None:
    ingest(engine, settings, first_models())

    result = model_watcher.watch_models(engine=engine, settings=settings)

    assert result.scanned == 6
    assert result.new_models == 2
    assert result.events == 0
    assert model_events(engine) == []
    assert pool_of(engine) == {
        ("cheap", "claude-haiku-4-5"): ("observed", True),
        ("strong", "claude-sonnet-4-6"): ("observed", True),
    }


def test_a_model_change_records_one_event_and_boosts_the_tier(
    engine: Engine, settings: Settings
) -> None:
    add_stratum(engine, "cheap")
    add_stratum(engine, "strong")
    ingest(engine, settings, first_models())
    model_watcher.watch_models(engine=engine, settings=settings)
    # The router moves its cheap tier to a new model; later decisions keep using it.
    ingest(
        engine,
        settings,
        [decision(f"n-{i}", ts=at(60 + i), chosen_model="claude-haiku-5") for i in range(3)],
    )

    first = model_watcher.watch_models(engine=engine, settings=settings)
    ingest(engine, settings, [decision("n-late", ts=at(200), chosen_model="claude-haiku-5")])
    again = model_watcher.watch_models(engine=engine, settings=settings)

    assert (first.events, first.new_models, first.boosted_strata) == (1, 1, 1)
    assert (again.events, again.new_models, again.scanned) == (0, 0, 1)
    (event,) = model_events(engine)
    assert event.dedup_key == f"{ROUTER}|cheap|claude-haiku-5"
    assert event.router == ROUTER
    assert event.ts == T0 + timedelta(minutes=60)  # decision time of the first new decision
    assert event.details == {
        "tier": "cheap",
        "model": "claude-haiku-5",
        "previous_models": ["claude-haiku-4-5"],
        "source": "observed",
        "announced_by_pool_put": False,
        "export_url": f"/v1/exports/training?router={ROUTER}"
        "&since=2026-11-27T13%3A00%3A00%2B00%3A00",
    }
    boosted = stratum(engine, "cheap")
    assert boosted.boost_factor == settings.model_change_boost_factor
    assert boosted.boosted_until == T0 + timedelta(minutes=60, hours=24)
    assert stratum(engine, "strong").boost_factor == 1.0
    assert pool_of(engine)[("cheap", "claude-haiku-5")] == ("observed", True)


def test_provider_failover_is_not_a_model_change(engine: Engine, settings: Settings) -> None:
    ingest(engine, settings, first_models())
    model_watcher.watch_models(engine=engine, settings=settings)
    ingest(
        engine,
        settings,
        [
            decision(
                f"f-{i}",
                ts=at(30 + i),
                served_model="gpt-4o-mini",
                failover=True,
            )
            for i in range(5)
        ],
    )

    result = model_watcher.watch_models(engine=engine, settings=settings)

    assert (result.scanned, result.new_models, result.events) == (5, 0, 0)
    assert model_events(engine) == []
    assert ("cheap", "gpt-4o-mini") not in pool_of(engine)


def test_the_worker_runs_the_watcher_as_a_leader_job(engine: Engine, settings: Settings) -> None:
    ingest(engine, settings, first_models())

    def no_provider(model: str) -> Any:
        raise AssertionError("the watcher calls no provider")

    runtime = WorkerRuntime(
        engine=engine, settings=settings, provider_for_model=no_provider, price_per_mtok=no_provider
    )
    (job,) = [job for job in scheduler.PERIODIC_JOBS if job.name == "watch_models"]
    first = asyncio.run(runtime.run_job(job.name, job.run))
    ingest(engine, settings, [decision("n-0", ts=at(60), chosen_model="claude-haiku-5")])
    result = asyncio.run(runtime.run_job(job.name, job.run))

    assert first == {"scanned": 6, "new_models": 2, "events": 0, "boosted_strata": 0}
    assert job.leader_only
    assert job in scheduler.ONE_PASS
    assert runtime.stats["watch_models"].last_error is None
    assert result == {"scanned": 1, "new_models": 1, "events": 1, "boosted_strata": 0}


def test_racing_and_repeated_watchers_record_one_event(engine: Engine, settings: Settings) -> None:
    ingest(engine, settings, first_models())
    model_watcher.watch_models(engine=engine, settings=settings)
    ingest(
        engine,
        settings,
        [decision(f"n-{i}", ts=at(60 + i), chosen_model="claude-haiku-5") for i in range(20)],
    )
    start = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def watcher() -> None:
        try:
            start.wait()
            results.append(model_watcher.watch_models(engine=engine, settings=settings))
        except BaseException as error:  # surfaced below: a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=watcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r.events for r in results) == 1
    # A watcher that crashed before moving its watermark reads everything again: no repeat.
    with Session(engine) as session:
        session.execute(update(ModelWatchState).values(last_decision_id=0))
        session.commit()
    rerun = model_watcher.watch_models(engine=engine, settings=settings)
    assert (rerun.scanned, rerun.events, rerun.new_models) == (26, 0, 0)
    assert len(model_events(engine)) == 1


def add_decision(engine: Engine, *, id: int, request_id: str, model: str, ts: datetime) -> None:
    with Session(engine) as session:
        session.add(
            Decision(
                id=id,
                router=ROUTER,
                request_id=request_id,
                ts=ts,
                received_at=T0,  # long ago: a settle lag on receipt time would not wait for it
                tier="cheap",
                chosen_model=model,
                served_model=model,
                segment_value="billing",
                inclusion_probability=0.1,
                sampled=False,
            )
        )
        session.commit()


def test_a_lower_id_that_commits_late_is_still_read(
    engine: Engine, base_settings: Settings
) -> None:
    """On PostgreSQL a decision can commit after a pass read higher ids: it must not be lost."""
    now = datetime.now(UTC)
    add_decision(engine, id=10, request_id="a", model="m", ts=T0)
    add_decision(engine, id=11, request_id="b", model="m", ts=T0)
    first = model_watcher.watch_models(engine=engine, settings=base_settings, now=now)
    assert (first.scanned, first.watermark) == (2, 0)  # read, but not settled yet

    # id 5 was drawn before the pass but committed after it.
    add_decision(engine, id=5, request_id="late", model="m-new", ts=T0 + timedelta(hours=1))
    soon = now + timedelta(seconds=base_settings.model_watch_settle_seconds / 2)
    second = model_watcher.watch_models(engine=engine, settings=base_settings, now=soon)
    assert (second.scanned, second.new_models, second.events) == (3, 1, 1)
    (event,) = model_events(engine)
    assert event.dedup_key == f"{ROUTER}|cheap|m-new"

    settled = now + timedelta(seconds=base_settings.model_watch_settle_seconds + 1)
    third = model_watcher.watch_models(engine=engine, settings=base_settings, now=settled)
    assert third.watermark == 11  # the first pass's checkpoint has settled
    later = settled + timedelta(seconds=base_settings.model_watch_settle_seconds + 1)
    assert model_watcher.watch_models(engine=engine, settings=base_settings, now=later).scanned == 0


def test_backfilled_older_decisions_of_another_model_are_no_change(
    engine: Engine, settings: Settings
) -> None:
    ingest(engine, settings, first_models())
    model_watcher.watch_models(engine=engine, settings=settings)
    # Older logs shipped late: the router used another model before the pool was seen.
    ingest(
        engine,
        settings,
        [decision(f"old-{i}", ts=at(-600 + i), chosen_model="claude-2-haiku") for i in range(3)],
    )

    result = model_watcher.watch_models(engine=engine, settings=settings)

    assert (result.new_models, result.events) == (1, 0)
    assert model_events(engine) == []
    assert pool_of(engine)[("cheap", "claude-2-haiku")] == ("observed", True)


def test_a_router_using_two_models_in_a_tier_from_day_one_has_no_change(
    engine: Engine, settings: Settings
) -> None:
    ingest(
        engine,
        settings,
        [decision("a", ts=at(0)), decision("b", ts=at(1), chosen_model="claude-haiku-4-6")],
    )

    result = model_watcher.watch_models(engine=engine, settings=settings)

    assert (result.new_models, result.events) == (2, 0)
    assert model_events(engine) == []


def test_put_pool_replaces_the_pool_and_announces_models_without_an_event(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    body = {"router": "r2", "tiers": {"cheap": ["m-small"], "strong": ["m-large"]}}
    with live_api.client(keys.admin) as client:
        created = client.put("/v1/pool", json=body)
        changed = client.put(
            "/v1/pool",
            json={"router": "r2", "tiers": {"cheap": ["m-small-2"], "strong": ["m-large"]}},
        )
        again = client.put(
            "/v1/pool",
            json={"router": "r2", "tiers": {"cheap": ["m-small-2"], "strong": ["m-large"]}},
        )
        new_tier = client.put(
            "/v1/pool",
            json={
                "router": "r2",
                "tiers": {"cheap": ["m-small-2"], "strong": ["m-large"], "mid": ["m-mid"]},
            },
        )
    with live_api.client(keys.read) as client:
        listed = client.get("/v1/pool", params={"router": "r2"}).json()
        first_page = client.get("/v1/pool", params={"router": "r2", "limit": 2}).json()
        second_page = client.get(
            "/v1/pool", params={"router": "r2", "limit": 2, "cursor": first_page["next_cursor"]}
        ).json()

    assert created.status_code == 200, created.text
    assert changed.status_code == 200, changed.text
    result = changed.json()
    assert [(m["tier"], m["model"]) for m in result["added"]] == [("cheap", "m-small-2")]
    assert [(m["tier"], m["model"], m["active"]) for m in result["removed"]] == [
        ("cheap", "m-small", False)
    ]
    # A PUT is no decision: the change happens when the router first chooses m-small-2.
    assert model_events(engine) == []
    assert {(m["tier"], m["model"]) for m in result["announced"]} == {
        ("cheap", "m-small-2"),
        ("strong", "m-large"),
    }
    assert "events" not in result
    assert again.json()["added"] == []
    assert {(m["tier"], m["model"]) for m in new_tier.json()["announced"]} == {
        ("cheap", "m-small-2"),
        ("strong", "m-large"),
        ("mid", "m-mid"),
    }
    assert {
        (m["tier"], m["model"], m["source"], m["active"], m["first_seen_ts"])
        for m in listed["items"]
    } == {
        ("cheap", "m-small", "pool_put", False, None),
        ("cheap", "m-small-2", "pool_put", True, None),
        ("strong", "m-large", "pool_put", True, None),
        ("mid", "m-mid", "pool_put", True, None),
    }
    assert listed["next_cursor"] is None
    assert first_page["items"] + second_page["items"] == listed["items"]
    assert second_page["next_cursor"] is None


# Weeks before the wall clock: a recorded log replayed through POST /v1/decisions.
HISTORY = datetime(2026, 10, 5, tzinfo=UTC)
SWAP = HISTORY + timedelta(days=2, hours=9)


def replayed_stream() -> list[dict[str, object]]:
    """Three decision days, one cheap and one strong decision an hour; the cheap model is
    swapped for gpt-5.4-mini at SWAP (day 3, 09:00)."""
    items: list[dict[str, object]] = []
    for hour in range(72):
        ts = HISTORY + timedelta(hours=hour)
        cheap = "gpt-5.4-mini" if ts >= SWAP else "claude-haiku-4-5"
        items.append(decision(f"c-{hour}", ts=ts.isoformat(), chosen_model=cheap))
        items.append(
            decision(
                f"s-{hour}",
                ts=(ts + timedelta(minutes=1)).isoformat(),
                tier="strong",
                chosen_model="claude-sonnet-4-6",
            )
        )
    return items


@pytest.mark.parametrize("batches", [1, 6], ids=["whole-log-then-one-pass", "pass-per-half-day"])
def test_a_pool_put_then_a_replayed_swap_gives_one_event_at_the_swap(
    engine: Engine, settings: Settings, batches: int
) -> None:
    add_stratum(engine, "cheap")
    with Session(engine) as session:
        put = pool_service.put_pool(
            session=session,
            pool=PoolIn(
                router=ROUTER,
                tiers={"cheap": ["claude-haiku-4-5"], "strong": ["claude-sonnet-4-6"]},
            ),
        )
    assert {m.model for m in put.announced} == {"claude-haiku-4-5", "claude-sonnet-4-6"}
    stream = replayed_stream()
    # However far the watcher gets between batches, the result is the same.
    size = len(stream) // batches
    for start in range(0, len(stream), size):
        ingest(engine, settings, stream[start : start + size])
        model_watcher.watch_models(engine=engine, settings=settings)

    (event,) = model_events(engine)
    assert event.ts == SWAP
    assert event.dedup_key == f"{ROUTER}|cheap|gpt-5.4-mini"
    assert event.details["previous_models"] == ["claude-haiku-4-5"]
    assert event.details["announced_by_pool_put"] is False
    # The boost runs a day of decision time from the swap, not from the wall clock.
    assert stratum(engine, "cheap").boosted_until == SWAP + timedelta(
        hours=settings.model_change_boost_hours
    )
    with Session(engine) as session:
        first_seen = {
            r.model: r.first_seen_ts
            for r in session.scalars(select(RouterModel).where(RouterModel.router == ROUTER))  # type: ignore[arg-type]
        }
    # The announced models took their first decision's ts, not the PUT's wall time.
    assert first_seen == {
        "claude-haiku-4-5": HISTORY,
        "claude-sonnet-4-6": HISTORY + timedelta(minutes=1),
        "gpt-5.4-mini": SWAP,
    }


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"router": "r2", "tiers": {}}, ["body", "tiers"]),
        ({"router": "r2", "tiers": {"cheap": ["a", "a"]}}, ["body", "tiers"]),
        ({"router": "r2", "tiers": {"cheap": []}}, ["body", "tiers", "cheap"]),
        ({"router": "", "tiers": {"cheap": ["a"]}}, ["body", "router"]),
        ({"router": "r2", "tiers": {"cheap": ["a"]}, "extra": 1}, ["body", "extra"]),
    ],
)
def test_put_pool_names_the_invalid_field(
    live_api: LiveApi, keys: Keys, body: dict[str, Any], loc: list[str]
) -> None:
    with live_api.client(keys.admin) as client:
        response = client.put("/v1/pool", json=body)
    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]]


def labelled_decisions(
    engine: Engine, model: str, scores: np.ndarray, labels: np.ndarray, start: datetime
) -> None:
    """Decisions of router `r` (cheap tier) with judged verdicts, received long ago."""
    with Session(engine) as session:
        for i, (score, label) in enumerate(zip(scores, labels, strict=True)):
            ts = start + timedelta(minutes=i)
            d = Decision(
                router="r",
                request_id=f"{model}-{i}",
                ts=ts,
                received_at=ts,
                tier="cheap",
                chosen_model=model,
                served_model=model,
                segment_value="all",
                inclusion_probability=0.5,
                sampled=True,
                router_score=float(score),
            )
            session.add(d)
            session.flush()
            assert d.id is not None
            session.add(
                Verdict(
                    decision_id=d.id,
                    router="r",
                    request_id=d.request_id,
                    ts=ts,
                    segment_value="all",
                    routed_tier="cheap",
                    direction="forward",
                    inclusion_probability=0.5,
                    router_score=float(score),
                    cheaper_tier="cheap",
                    stronger_tier="strong",
                    cheaper_model=model,
                    stronger_model="s",
                    judge_key="j#1",
                    judge_model="j",
                    prompt_hash="1",
                    status=VerdictStatus.DONE,
                    next_attempt_at=ts,
                    created_at=ts,
                    outcome=Outcome.STRONGER_WINS if label else Outcome.TIE,
                    strong_needed=int(label),
                    cheap_acceptable=1 - int(label),
                )
            )
        session.commit()


def test_the_calibration_window_starts_at_the_model_change(
    engine: Engine, settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    rng = np.random.default_rng(7)
    before = datetime(2026, 11, 20, tzinfo=UTC)
    change = datetime(2026, 11, 22, tzinfo=UTC)
    ref_scores = rng.beta(2, 5, 600)
    labelled_decisions(engine, "m-old", ref_scores, rng.binomial(1, ref_scores), before)
    # The first pass establishes the pool; the change is seen on a later one.
    assert model_watcher.watch_models(engine=engine, settings=settings).events == 0
    # The new cheap model is worse: the old scores now under-state how often strong is needed.
    cur_scores = rng.beta(2, 5, 400)
    labelled_decisions(engine, "m-new", cur_scores, rng.binomial(1, 0.5 * cur_scores + 0.3), change)
    assert model_watcher.watch_models(engine=engine, settings=settings).events == 1

    (event,) = model_events(engine)
    with live_api.client(keys.read) as client:
        (report,) = client.get("/v1/calibration", params={"router": "r"}).json()
        # The event's link (the retrain trigger sends it) exports the pairs since the change.
        exported = client.get(event.details["export_url"])
        (requested,) = client.get(
            "/v1/calibration", params={"router": "r", "since": "2026-11-20T00:00:00Z"}
        ).json()

    assert exported.status_code == 200
    assert len(exported.text.splitlines()) == 400
    assert report["window_starts_at"] == "model_change"
    assert report["model_change"]["event_id"] == event.id
    assert report["model_change"]["model"] == "m-new"
    assert report["model_change"]["previous_models"] == ["m-old"]
    assert datetime.fromisoformat(report["window"]["since"]) == change
    assert datetime.fromisoformat(report["reference_window"]["until"]) == change
    assert report["reference_window"]["since"] is None
    assert report["n"] == 400
    assert report["drift_against_reference"]["p_value"] < 0.01
    assert report["against_perfect_calibration"]["p_value"] < 0.01
    # An explicit window is served as asked.
    assert requested["window_starts_at"] == "requested"
    assert requested["n"] == 1000
    assert requested["model_change"] is None


def test_get_pool_refuses_a_cursor_it_did_not_issue(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.read) as client:
        response = client.get("/v1/pool", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["field"] == "cursor"


# --- a model change can start a gate run (gate_on_model_change) -----------------------------


def gate_runs(engine: Engine) -> list[GateRun]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(GateRun).order_by(GateRun.id)))  # type: ignore[arg-type]


def two_cheap_models_then_a_change(engine: Engine, settings: Settings, new_model: str) -> None:
    """The cheap tier starts on two models, claude-3-5-haiku chosen last; then `new_model`."""
    ingest(
        engine,
        settings,
        first_models()
        + [decision(f"h-{i}", ts=at(10 + i), chosen_model="claude-3-5-haiku") for i in range(3)],
    )
    model_watcher.watch_models(engine=engine, settings=settings)
    ingest(
        engine,
        settings,
        [decision(f"n-{i}", ts=at(60 + i), chosen_model=new_model) for i in range(3)],
    )


def test_a_model_change_queues_one_gate_run_when_enabled(
    engine: Engine, settings: Settings
) -> None:
    settings = settings.model_copy(
        update={
            "gate_on_model_change": True,
            "gate_on_model_change_sample": 50,
            "gate_on_model_change_max_drop": 0.08,
        }
    )
    two_cheap_models_then_a_change(engine, settings, "gpt-5.4-mini")

    first = model_watcher.watch_models(engine=engine, settings=settings)
    # A watcher that crashed before moving its watermark reads everything again: no repeat.
    with Session(engine) as session:
        session.execute(update(ModelWatchState).values(last_decision_id=0))
        session.commit()
    rerun = model_watcher.watch_models(engine=engine, settings=settings)

    assert (first.events, rerun.events) == (1, 0)
    (run,) = gate_runs(engine)
    assert run.status == "queued"
    assert (run.router, run.candidate_model) == (ROUTER, "gpt-5.4-mini")
    # Of the tier's previous models, the one the router chose most recently is replaced.
    assert run.replaced_model == "claude-3-5-haiku"
    assert (run.sample_size, run.max_drop) == (50, 0.08)
    assert run.requested_by == "model_change"
    (event,) = model_events(engine)
    assert event.details["previous_models"] == ["claude-3-5-haiku", "claude-haiku-4-5"]
    assert event.details["gate_run_id"] == run.id
    assert event.details["gate_replaced_model"] == "claude-3-5-haiku"
    # Three logged requests of the replaced model: no sample can make this gate pass, and
    # the event says so instead of leaving on-call to wait for a pass.
    assert "fewer decisions than that" in event.details["gate_underpowered"]


def test_a_model_change_gate_too_small_to_pass_is_sized_up(
    engine: Engine, settings: Settings
) -> None:
    settings = settings.model_copy(
        update={
            "gate_on_model_change": True,
            "gate_on_model_change_sample": 10,
            "gate_on_model_change_max_drop": 0.08,
        }
    )
    ingest(engine, settings, first_models())
    model_watcher.watch_models(engine=engine, settings=settings)
    ingest(
        engine,
        settings,
        [decision(f"h-{i}", ts=at(10 + i % 40), chosen_model="claude-haiku-4-5") for i in range(80)]
        + [decision(f"n-{i}", ts=at(60 + i), chosen_model="gpt-5.4-mini") for i in range(3)],
    )
    model_watcher.watch_models(engine=engine, settings=settings)

    (run,) = gate_runs(engine)
    (event,) = model_events(engine)
    # 10 pairs cannot pass at margin 0.08; the fewest that can, even if all tie.
    needed = event.details["gate_sample"]
    assert run.sample_size == needed > 10
    assert "pairs per segment" in event.details["gate_power"]
    assert "gate_underpowered" not in event.details


def test_a_model_a_pool_put_announced_changes_when_first_chosen_and_is_gated(
    engine: Engine, settings: Settings
) -> None:
    settings = settings.model_copy(update={"gate_on_model_change": True})
    ingest(engine, settings, first_models())
    model_watcher.watch_models(engine=engine, settings=settings)
    swap = PoolIn(router=ROUTER, tiers={"cheap": ["gpt-5.4-mini"], "strong": ["claude-sonnet-4-6"]})

    with Session(engine) as session:
        put = pool_service.put_pool(session=session, pool=swap, now=T0 + timedelta(hours=2))
    assert [(m.tier, m.model, m.first_seen_ts) for m in put.announced] == [
        ("cheap", "gpt-5.4-mini", None)
    ]
    assert (model_events(engine), gate_runs(engine)) == ([], [])
    # The router switches an hour (of decision time) before the PUT's wall time: the
    # decision, not the PUT, says when the change happened.
    ingest(
        engine,
        settings,
        [decision(f"n-{i}", ts=at(60 + i), chosen_model="gpt-5.4-mini") for i in range(3)],
    )
    result = model_watcher.watch_models(engine=engine, settings=settings)

    assert result.events == 1
    (event,) = model_events(engine)
    assert event.ts == T0 + timedelta(minutes=60)
    assert event.details["announced_by_pool_put"] is True
    (run,) = gate_runs(engine)
    # The PUT deactivated claude-haiku-4-5 first; it is still the model being replaced.
    assert (run.candidate_model, run.replaced_model) == ("gpt-5.4-mini", "claude-haiku-4-5")
    assert event.details["gate_run_id"] == run.id
    assert pool_of(engine)[("cheap", "gpt-5.4-mini")] == ("pool_put", True)


def test_no_gate_run_when_the_option_is_off(engine: Engine, settings: Settings) -> None:
    assert settings.gate_on_model_change is False  # the default
    two_cheap_models_then_a_change(engine, settings, "gpt-5.4-mini")

    result = model_watcher.watch_models(engine=engine, settings=settings)

    assert result.events == 1
    assert gate_runs(engine) == []
    (event,) = model_events(engine)
    assert "gate_run_id" not in event.details


def test_a_gate_that_cannot_run_does_not_hold_back_the_event(
    engine: Engine, settings: Settings
) -> None:
    settings = settings.model_copy(update={"gate_on_model_change": True})
    add_stratum(engine, "cheap")
    two_cheap_models_then_a_change(engine, settings, "no-such-model-7")

    result = model_watcher.watch_models(engine=engine, settings=settings)

    assert (result.events, result.boosted_strata) == (1, 1)
    assert gate_runs(engine) == []
    (event,) = model_events(engine)
    assert "no-such-model-7" in event.details["gate_error"]
    assert "gate_run_id" not in event.details
