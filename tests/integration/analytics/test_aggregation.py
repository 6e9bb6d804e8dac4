"""Window snapshots, sequential tests and /v1/segments over verdict rows, on both databases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import snapshots
from shadoweval.analytics.models import SequentialState, VerdictWindowSnapshot
from shadoweval.config import Settings
from shadoweval.events.models import Event
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.stats.rates import hajek_rate, process_rate
from tests.conftest import Keys, LiveApi

START = datetime(2026, 11, 27, 0, tzinfo=UTC)


def add_verdicts(
    engine: Engine,
    segment: str,
    strong_needed: list[int],
    *,
    pi: float = 0.5,
    start: datetime = START,
    status: str = VerdictStatus.DONE,
    spacing: timedelta = timedelta(minutes=1),
    router: str = "r",
) -> None:
    """Decisions with finished verdicts, one per label, `spacing` apart in ts."""
    with Session(engine) as session:
        decisions = []
        for i in range(len(strong_needed)):
            ts = start + i * spacing
            d = Decision(
                router=router,
                request_id=f"{segment}-{start.isoformat()}-{i:05d}",
                ts=ts,
                received_at=ts,
                tier="cheap",
                chosen_model="m",
                served_model="m",
                segment={"topic": segment},
                segment_value=segment,
                inclusion_probability=pi,
                sampled=True,
            )
            decisions.append(d)
        # One flush for all the decisions: a flush each was a round trip per label.
        session.add_all(decisions)
        session.flush()
        done = status == VerdictStatus.DONE
        for d, label in zip(decisions, strong_needed, strict=True):
            ts = d.ts
            assert d.id is not None
            session.add(
                Verdict(
                    decision_id=d.id,
                    router=router,
                    request_id=d.request_id,
                    ts=ts,
                    segment_value=segment,
                    routed_tier="cheap",
                    direction="forward",
                    inclusion_probability=pi,
                    cheaper_tier="cheap",
                    stronger_tier="strong",
                    cheaper_model="m",
                    stronger_model="s",
                    judge_key="j#1",
                    judge_model="j",
                    prompt_hash="1",
                    status=status,
                    next_attempt_at=ts,
                    created_at=ts,
                    outcome=(Outcome.STRONGER_WINS if label else Outcome.TIE) if done else None,
                    strong_needed=label if done else None,
                    cheap_acceptable=1 - label if done else None,
                    score_delta=3.0 if label else 0.0,
                    judge_cost_usd=0.001,
                )
            )
        session.commit()


def day_snapshot(engine: Engine, segment: str) -> VerdictWindowSnapshot:
    with Session(engine) as session:
        return session.scalars(
            select(VerdictWindowSnapshot).where(
                VerdictWindowSnapshot.segment_value == segment,  # type: ignore[arg-type]
                VerdictWindowSnapshot.window == "day",  # type: ignore[arg-type]
            )
        ).one()


def test_snapshots_count_each_verdict_once(engine: Engine) -> None:
    rng = np.random.default_rng(7)
    labels = rng.binomial(1, 0.2, size=300).tolist()
    pis = [0.2 if i % 3 else 0.8 for i in range(300)]
    for i, (label, pi) in enumerate(zip(labels, pis, strict=True)):
        add_verdicts(engine, "billing", [label], pi=pi, start=START + timedelta(minutes=i))
    add_verdicts(
        engine, "billing", [0, 0], status=VerdictStatus.ERROR, start=START + timedelta(hours=9)
    )

    def aggregate_until_done() -> None:
        while snapshots.aggregate_finished_verdicts(engine, limit=37):
            pass

    # Four aggregators race over the same verdicts.
    threads = [threading.Thread(target=aggregate_until_done) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    snap = day_snapshot(engine, "billing")
    assert snap.labels == 300
    assert snap.judge_errors == 2
    direct = hajek_rate(np.array(labels), np.array(pis))
    assert snap.sum_wy / snap.sum_w == pytest.approx(direct.estimate, rel=1e-9)
    assert snapshots.aggregate_finished_verdicts(engine) == 0  # nothing is counted twice
    with Session(engine) as session:
        hours = session.scalars(
            select(VerdictWindowSnapshot).where(VerdictWindowSnapshot.window == "hour")  # type: ignore[arg-type]
        ).all()
    assert sum(h.labels for h in hours) == 300


@pytest.mark.parametrize("arl", [30_000.0, 60_000.0])
def test_change_point_detector_flags_early_and_mid_way_drops_only(
    engine: Engine, base_settings: Settings, arl: float
) -> None:
    # One alarm per change at either threshold: at A = 60,000 a detector that re-armed on G
    # itself alarmed "legal" three times (G swings by more than h/2 after only 40 labels).
    base_settings = base_settings.model_copy(update={"sequential_alarm_threshold": arl})
    rng = np.random.default_rng(11)
    # "chat" never changes; "code" rises 0.10 → 0.40 mid-way (label 301); "legal" rises
    # 0.05 → 0.50 at label 41, before any 100-label baseline could have filled.
    add_verdicts(engine, "chat", rng.binomial(1, 0.10, 600).tolist())
    code = rng.binomial(1, 0.10, 300).tolist() + rng.binomial(1, 0.40, 300).tolist()
    add_verdicts(engine, "code", code)
    legal = rng.binomial(1, 0.05, 40).tolist() + rng.binomial(1, 0.50, 300).tolist()
    add_verdicts(engine, "legal", legal)
    snapshots.aggregate_finished_verdicts(engine)

    result = snapshots.advance_sequential_tests(
        engine, base_settings, now=START + timedelta(days=2)
    )

    assert result == {"labels_fed": 1540, "new_alarms": 2}
    with Session(engine) as session:
        states = {s.segment_value: s for s in session.scalars(select(SequentialState))}
        events = {
            e.details["segment"]: e
            for e in session.scalars(select(Event).where(Event.kind == "quality_drop"))  # type: ignore[arg-type]
        }
    assert states["chat"].alarmed_at_ts is None
    assert states["chat"].statistic < states["chat"].threshold
    assert set(events) == {"code", "legal"}
    for segment, change_label in (("code", 301), ("legal", 41)):
        state, event = states[segment], events[segment]
        # The alarm and its event sit at the alarming label's decision ts, after the change.
        assert state.alarmed_at_ts == event.ts
        assert event.ts > START + timedelta(minutes=change_label - 1)
        details = event.details
        assert details["statistic"] >= details["threshold"] == state.threshold
        change_point = datetime.fromisoformat(details["change_point_ts"])
        assert abs(change_point - (START + timedelta(minutes=change_label - 1))) <= timedelta(
            minutes=60
        )
        assert details["post_change_harm_rate"] >= details["pre_change_harm_rate"] + 0.15
        assert (
            details["pre_change_labels"] + details["post_change_labels"] == details["labels_used"]
        )
        assert state.labels == len(code if segment == "code" else legal)
        assert len(state.recent_labels) == len(state.recent_ts) == state.labels
    # Consumed once: a second pass feeds nothing and raises nothing new.
    again = snapshots.advance_sequential_tests(engine, base_settings, now=START + timedelta(days=2))
    assert again == {"labels_fed": 0, "new_alarms": 0}


def test_detector_state_across_passes_equals_one_pass(
    engine: Engine, base_settings: Settings
) -> None:
    settings = base_settings.model_copy(update={"change_point_window_labels": 200})
    rng = np.random.default_rng(5)
    labels = rng.binomial(1, 0.10, 350).tolist() + rng.binomial(1, 0.35, 250).tolist()
    now = START + timedelta(days=2)
    add_verdicts(engine, "code", labels, router="one-pass")
    snapshots.advance_sequential_tests(engine, settings, now=now)
    # The same labels for another router, arriving in three passes.
    for lo, hi in ((0, 120), (120, 380), (380, 600)):
        add_verdicts(
            engine,
            "code",
            labels[lo:hi],
            router="passes",
            start=START + timedelta(minutes=lo),
        )
        snapshots.advance_sequential_tests(engine, settings, now=now)
    with Session(engine) as session:
        states = {s.router: s for s in session.scalars(select(SequentialState))}
        events = {
            e.router: e
            for e in session.scalars(select(Event).where(Event.kind == "quality_drop"))  # type: ignore[arg-type]
        }
    fields = (
        "labels",
        "positives",
        "statistic",
        "post_change_labels",
        "change_ts",
        "recent_labels",
        "recent_ts",
        "alarmed_at_ts",
        "alarm_labels",
        "baseline_rate",
    )
    one, passes = states["one-pass"], states["passes"]
    assert {f: getattr(passes, f) for f in fields} == {f: getattr(one, f) for f in fields}
    assert len(one.recent_labels) == 200  # bounded by the look-back window
    assert one.alarmed_at_ts is not None
    assert events["passes"].ts == events["one-pass"].ts
    assert events["passes"].details == {**events["one-pass"].details}


def test_labels_wait_for_the_watermark(engine: Engine, base_settings: Settings) -> None:
    add_verdicts(engine, "chat", [0] * 50)
    # A verdict still running at 00:20 holds back every label from 00:20 on.
    add_verdicts(
        engine, "late", [0], status=VerdictStatus.RUNNING, start=START + timedelta(minutes=20)
    )
    assert snapshots.watermark(engine) == START + timedelta(minutes=20)
    fed = snapshots.advance_sequential_tests(engine, base_settings)["labels_fed"]
    assert fed == 20
    with Session(engine) as session:
        state = session.scalars(select(SequentialState)).one()
    assert state.last_ts == START + timedelta(minutes=19)


def test_segments_api_reports_rates_with_intervals_and_funnel(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    rng = np.random.default_rng(3)
    harm = rng.binomial(1, 0.3, 200).tolist()
    add_verdicts(engine, "code", harm, pi=0.25)
    add_verdicts(engine, "chat", [0] * 100, pi=0.5)
    snapshots.aggregate_finished_verdicts(engine)

    with live_api.client(keys.read) as client:
        body = client.get("/v1/segments").json()
        ranged = client.get(
            "/v1/segments",
            params={"since": "2026-11-27T00:00:00Z", "until": "2026-11-27T01:00:00Z"},
        ).json()

    assert [s["segment"] for s in body] == ["code", "chat"]  # riskiest first
    code = body[0]
    # Process-level interval by default; the finite-population one beside it.
    expected = process_rate(np.array(harm), np.full(200, 0.25))
    finite = hajek_rate(np.array(harm), np.full(200, 0.25))
    assert code["label"] == "harm_rate"
    assert code["rate"]["estimate"] == pytest.approx(expected.estimate)
    assert code["rate"]["ci_low"] == pytest.approx(expected.ci_low)
    assert code["rate"]["ci_high"] == pytest.approx(expected.ci_high)
    assert code["rate_finite_population"]["ci_low"] == pytest.approx(finite.ci_low)
    assert code["rate_finite_population"]["ci_high"] == pytest.approx(finite.ci_high)
    assert code["stronger_wins"]["estimate"] == pytest.approx(expected.estimate)
    assert code["ties"]["estimate"] == pytest.approx(1 - expected.estimate)
    assert code["coverage"]["labels"] == 200
    assert body[1]["rate"]["estimate"] == 0.0
    assert body[1]["rate"]["ci_high"] > 0  # an interval, even at zero observed harm
    # One hour of ts: the first 60 labels only.
    assert {s["segment"]: s["rate"]["n"] for s in ranged} == {"code": 60, "chat": 60}


def test_segments_api_needs_read_scope(live_api: LiveApi, keys: Keys) -> None:
    with httpx.Client(base_url=live_api.url) as client:
        assert client.get("/v1/segments").status_code == 401
    with live_api.client(keys.ingest) as client:
        assert client.get("/v1/segments").status_code == 403
