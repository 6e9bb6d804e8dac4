"""Allocation for detection (issue 13): a segment whose labels show a rise is sampled more.

Hourly sampling over a seeded 30-hour stream with two segments; the judge is stood in for by
labels drawn from a known truth (a seeded function of the request), written as finished
verdicts after each planner pass. In one stream the small segment's harm rises from 0.1 to
0.6 at hour 10; in the other it stays at 0.1. With `sampling_suspect_priority` the planner
recomputes the detector from labels of decisions before the period minus the label lag, and a
segment with part of the evidence for a rise gets a raised floor, paid first. Clock: decision
time throughout; the stream is weeks old.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.sampling import periods, planning
from shadoweval.sampling.models import SamplingPeriodStratum
from tests.conftest import _empty_tables

START = datetime(2026, 9, 14, tzinfo=UTC)
ROUTER = "suspect-router"
HOURS = 30
PER_HOUR = 60
CHANGE_HOUR = 10
SMALL = "small"


def _settings(base: Settings, suspect: bool) -> Settings:
    return base.model_copy(
        update={
            "sampling_mode": "hourly",
            "store_payloads": "all",
            "sampling_period_minutes": 60,
            "sampling_close_lateness_seconds": 120,
            "sampling_label_lag_minutes": 120,
            "sampling_idle_close_seconds": 10**7,
            "daily_shadow_budget_usd": 0.3,  # ~300 samples a day at the default cost
            "reverse_shadow_share": 0.05,
            "default_cost_per_sample_usd": 0.001,
            "sampling_cost_min_samples": 10**6,  # reserve the default cost throughout
            "sampling_threshold_band_share": 0.0,
            "planner_traffic_days": 1.0,
            "sampling_suspect_priority": suspect,
            "sampling_suspect_fraction": 1 / 3,
            "sampling_suspect_hours": 6.0,
            "sampling_priority_share": 0.6,
        }
    )


def _stream(seed: int = 13) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = []
    for hour in range(HOURS):
        for i in range(PER_HOUR):
            score = round(rng.random(), 4)
            tier = "strong" if score >= 0.8 else "cheap"
            segment = SMALL if rng.random() < 0.25 else "large"
            items.append(
                {
                    "request_id": f"s{hour}-{i}",
                    "router": ROUTER,
                    "tier": tier,
                    "chosen_model": f"{tier}-model",
                    "ts": (START + timedelta(hours=hour, seconds=rng.uniform(0, 3599))).isoformat(),
                    "router_score": score,
                    "threshold": 0.8,
                    "segment": {"topic": segment},
                    "cost_usd": 0.002 if tier == "strong" else 0.0002,
                }
            )
    return sorted(items, key=lambda item: item["ts"])


def _truth(decision: Decision, rise: bool) -> int:
    """Strong needed, drawn once per request (the same in every run)."""
    digest = hashlib.sha256(f"truth\x00{decision.request_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    risen = rise and decision.segment_value == SMALL
    risen = risen and decision.ts >= START + timedelta(hours=CHANGE_HOUR)
    return int(u < (0.6 if risen else 0.1))


def _label(engine: Engine, rise: bool) -> int:
    """The judge's stand-in: a finished verdict for every sampled decision without one."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        waiting = session.scalars(
            select(Decision).where(
                col(Decision.sampled).is_(True),
                ~select(col(Verdict.id))
                .where(col(Verdict.decision_id) == col(Decision.id))
                .exists(),
            )
        ).all()
        for d in waiting:
            assert d.id is not None
            session.add(
                Verdict(
                    decision_id=d.id,
                    router=d.router,
                    request_id=d.request_id,
                    ts=d.ts,
                    segment_value=d.segment_value,
                    routed_tier=d.tier,
                    direction="reverse" if d.tier == "strong" else "forward",
                    inclusion_probability=d.inclusion_probability,
                    router_score=d.router_score,
                    cheaper_tier="cheap",
                    stronger_tier="strong",
                    cheaper_model="cheap-model",
                    stronger_model="strong-model",
                    judge_key="judge-1",
                    judge_model="judge",
                    prompt_hash="p",
                    status=VerdictStatus.DONE,
                    next_attempt_at=now,
                    created_at=now,
                    finished_at=now,
                    strong_needed=_truth(d, rise),
                    judge_cost_usd=0.001,
                )
            )
        session.commit()
        return len(waiting)


def _ingest(engine: Engine, settings: Settings, items: list[dict[str, Any]]) -> None:
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items)
        )
    assert not outcome.errors, outcome.errors


def _plan(engine: Engine, settings: Settings, rise: bool) -> None:
    for _ in range(500):
        with Session(engine) as session:
            result = periods.sample_closed_periods(session=session, settings=settings)
        labelled = _label(engine, rise)
        if result.waiting != "labels" and not labelled and not result.periods:
            return
    raise AssertionError("the planner did not catch up")


def _run(
    engine: Engine, settings: Settings, *, rise: bool, live: bool
) -> tuple[dict[str, tuple[bool, float]], dict[datetime, float]]:
    """(request id → (sampled, π), period start → π of the small segment's cheap stratum)."""
    stream = _stream()
    sentinel = {
        **stream[-1],
        "request_id": "sentinel",
        "ts": (START + timedelta(hours=HOURS + 1)).isoformat(),
    }
    if live:
        for i in range(0, len(stream), PER_HOUR):
            _ingest(engine, settings, stream[i : i + PER_HOUR])
            _plan(engine, settings, rise)
    else:
        _ingest(engine, settings, stream)
    _ingest(engine, settings, [sentinel])
    _plan(engine, settings, rise)
    with Session(engine) as session:
        decisions = {
            d.request_id: (bool(d.sampled), float(d.inclusion_probability or 0.0))
            for d in session.scalars(select(Decision))
            if d.request_id != "sentinel"
        }
        small = {
            row.period_start: row.inclusion_probability
            for row in session.scalars(
                select(SamplingPeriodStratum).where(
                    col(SamplingPeriodStratum.segment_value) == SMALL,
                    col(SamplingPeriodStratum.tier) == "cheap",
                )
            )
        }
    _empty_tables(engine)
    return decisions, small


def test_a_rising_segment_gets_more_labels_and_replay_samples_alike(
    engine: Engine, base_settings: Settings
) -> None:
    on, off = _settings(base_settings, suspect=True), _settings(base_settings, suspect=False)
    live, pi_on = _run(engine, on, rise=True, live=True)
    _, pi_off = _run(engine, off, rise=True, live=True)
    replay, _ = _run(engine, on, rise=True, live=False)

    # Live and as a fast replay: the same π and the same samples per decision.
    assert replay == live
    # Until labels after the change are older than the lag, the plans are the same; then
    # the suspect segment's floor is raised and paid first, at most for a few hours (it
    # alarms, and an alarmed segment is no longer a suspect).
    seen = START + timedelta(hours=CHANGE_HOUR + 2)
    assert all(pi_on[t] == pi_off[t] for t in pi_on if t <= seen)
    raised = [t for t in pi_on if pi_on[t] > 1.5 * pi_off[t]]
    assert raised, (pi_on, pi_off)
    assert min(raised) > seen


def test_suspects_are_read_as_of_the_labels_the_plan_may_use(
    engine: Engine, base_settings: Settings
) -> None:
    """Labels of decisions at or after `labels_before` (a worker ahead of the plan) change
    nothing; labels of a rise before it make the segment suspect, with a raised floor."""
    settings = _settings(base_settings, suspect=True)
    _ingest(engine, settings, _stream())
    with Session(engine) as session:
        for d in session.scalars(select(Decision).where(col(Decision.tier) == "cheap")):
            d.sampled = True
            session.add(d)
        session.commit()
    _label(engine, rise=True)
    change = START + timedelta(hours=CHANGE_HOUR)
    cut = change + timedelta(hours=1)
    with Session(engine) as session:
        assert planning.suspect_segments(session, settings, change) == {}
        with_later_labels = planning.suspect_segments(session, settings, cut)
        session.execute(delete(Verdict).where(col(Verdict.ts) >= cut))
        session.commit()
        assert planning.suspect_segments(session, settings, cut) == with_later_labels
    assert set(with_later_labels) == {(ROUTER, SMALL)}
    suspect = with_later_labels[(ROUTER, SMALL)]
    assert suspect.statistic >= settings.sampling_suspect_fraction * suspect.threshold
    assert suspect.labels_needed > 0
    assert suspect.floor_per_day >= planning.detection_floor_per_day(settings)
    _empty_tables(engine)
