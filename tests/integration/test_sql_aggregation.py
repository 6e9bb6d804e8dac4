"""SQL-side aggregation (issue 19 §4) gives today's figures: the snapshot fold and rebuild,
/v1/economics and /v1/thresholds, each against the Python path it replaced
(`test_sql_aggregation_reference.py`), on a seeded log, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import calibration_service, snapshots
from shadoweval.analytics import thresholds as thresholds_service
from shadoweval.analytics.models import (
    SNAPSHOT_SUMS,
    TRAFFIC_SUMS,
    TrafficWindowSnapshot,
    VerdictWindowSnapshot,
)
from shadoweval.config import Settings
from shadoweval.db import aware_utc
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.providers.pricing import PricingTable
from shadoweval.shadow.models import ShadowMode, ShadowRun, WorkStatus
from shadoweval.sql import percentiles, table_of, take_and_fold
from tests.integration import test_sql_aggregation_reference as reference

START = datetime(2026, 11, 20, 0, 17, tzinfo=UTC)
STRONG, CHEAP = "claude-sonnet-4-6", "claude-haiku-4-5"


def _seed(engine: Engine, *, requests: int = 2400, seed: int = 5) -> None:
    """Three segments over ~3 decision days, with every case the sums must carry: costs,
    tokens, router costs and latencies missing on some decisions, escalations, fallbacks,
    failovers, a served model without a price, scores without the usable meaning, a
    threshold that changes, verdicts of two judges that finished, failed or were skipped
    for each reason, and shadow runs in both modes, some failed."""
    rng = np.random.default_rng(seed)
    score = rng.beta(2.0, 2.5, requests)
    segment = rng.choice(["alpha", "beta", "gamma"], size=requests, p=[0.5, 0.3, 0.2])
    threshold = np.where(np.arange(requests) < requests // 2, 0.45, 0.5)
    strong = score >= threshold
    needed = rng.binomial(1, 0.5 * score**2)
    pi = np.where(strong, 0.2, 0.3)
    sampled = rng.random(requests) < pi
    with Session(engine) as session:
        decisions = []
        for i in range(requests):
            ts = START + timedelta(minutes=1.7 * i, microseconds=int(rng.integers(0, 10**6)))
            tokens = rng.random() < 0.7
            served = (STRONG if strong[i] else CHEAP) if rng.random() > 0.05 else "mystery-1"
            decisions.append(
                Decision(
                    router="agg",
                    request_id=f"agg-{i:05d}",
                    ts=ts,
                    received_at=ts,
                    tier="strong" if strong[i] else "cheap",
                    chosen_model=STRONG if strong[i] else CHEAP,
                    served_model=served,
                    segment={"topic": str(segment[i])},
                    segment_value=str(segment[i]),
                    router_score=None if i % 97 == 0 else float(score[i]),
                    score_semantics="p_cheap_ok" if i % 89 == 0 else "p_strong_needed",
                    threshold=float(threshold[i]) if i % 13 else None,
                    cost_usd=None
                    if rng.random() < 0.05
                    else float(rng.lognormal(np.log(0.004 if strong[i] else 0.001), 0.5)),
                    input_tokens=int(rng.integers(50, 4000)) if tokens else None,
                    output_tokens=int(rng.integers(10, 900)) if tokens else None,
                    router_cost_usd=float(rng.uniform(0, 2e-5)) if rng.random() < 0.6 else None,
                    latency_ms=None if rng.random() < 0.03 else float(rng.gamma(2.0, 400.0)),
                    escalated_from="cheap" if strong[i] and rng.random() < 0.2 else None,
                    fallback=bool(rng.random() < 0.05),
                    failover=bool(rng.random() < 0.03),
                    inclusion_probability=float(pi[i]) if sampled[i] else 0.0,
                    sampled=bool(sampled[i]),
                )
            )
        session.add_all(decisions)
        session.flush()
        for i, d in enumerate(decisions):
            if sampled[i]:
                _label(session, rng, d, strong=bool(strong[i]), needed=int(needed[i]), pi=pi[i])
        session.commit()


def _label(
    session: Session, rng: np.random.Generator, d: Decision, *, strong: bool, needed: int, pi: float
) -> None:
    assert d.id is not None
    roll = rng.random()
    status, reason = VerdictStatus.DONE, None
    if roll < 0.04:
        status = VerdictStatus.ERROR
    elif roll < 0.10:
        status = VerdictStatus.SKIPPED
        reason = rng.choice(["no_payload", "provider_failure", "redacted", "other"])
    outcome = Outcome.STRONGER_WINS if needed else Outcome.TIE
    if status == VerdictStatus.DONE and rng.random() < 0.1:
        outcome = Outcome.INCONSISTENT if rng.random() < 0.5 else Outcome.CHEAPER_WINS
    other = float(rng.lognormal(np.log(0.001 if strong else 0.004), 0.4))
    batch = rng.random() < 0.25
    session.add(
        ShadowRun(
            decision_id=d.id,
            kind="shadow",
            direction="reverse" if strong else "forward",
            routed_tier=d.tier,
            target_tier="cheap" if strong else "strong",
            target_model=CHEAP if strong else STRONG,
            ts=d.ts,
            status=WorkStatus.SUCCEEDED if rng.random() > 0.05 else WorkStatus.FAILED,
            next_attempt_at=d.ts,
            created_at=d.ts,
            cost_usd=other / 2 if batch else other,
            mode=ShadowMode.BATCH if batch else ShadowMode.REALTIME,
        )
    )
    done = status == VerdictStatus.DONE
    session.add(
        Verdict(
            decision_id=d.id,
            router=d.router,
            request_id=d.request_id,
            ts=d.ts,
            segment_value=d.segment_value,
            routed_tier=d.tier,
            direction="reverse" if strong else "forward",
            inclusion_probability=float(pi),
            router_score=d.router_score,
            score_semantics=d.score_semantics,
            cheaper_tier="cheap",
            stronger_tier="strong",
            cheaper_model=CHEAP,
            stronger_model=STRONG,
            judge_key="j#2" if rng.random() < 0.1 else "j#1",
            judge_model="j",
            prompt_hash="1",
            status=status,
            skip_reason=reason,
            next_attempt_at=d.ts,
            created_at=d.ts,
            outcome=outcome if done else None,
            strong_needed=needed if done else None,
            cheap_acceptable=1 - needed if done else None,
            score_delta=(float(rng.normal(needed, 1.0)) if rng.random() < 0.9 else None)
            if done
            else None,
            judge_cost_usd=float(rng.uniform(0, 0.003)),
        )
    )


def assert_same(ours: Any, theirs: Any, path: str = "") -> None:
    """Equal, numbers to float rounding (relative 1e-9), recursively."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), path
        assert set(ours) == set(theirs), path
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list | tuple):
        assert isinstance(ours, list | tuple), path
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float) and not isinstance(theirs, bool):
        assert isinstance(ours, float | int), path
        if math.isnan(theirs):
            assert math.isnan(ours), path
        else:
            assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12), path
    else:
        assert ours == theirs, path


def test_verdict_fold_and_traffic_rebuild_equal_the_python_sums(engine: Engine) -> None:
    _seed(engine)
    verdict = table_of(Verdict)
    terminal = (VerdictStatus.DONE, VerdictStatus.ERROR, VerdictStatus.SKIPPED)
    with engine.connect() as connection:
        finished = [
            dict(row)
            for row in connection.execute(
                select(verdict).where(verdict.c.status.in_(terminal))
            ).mappings()
        ]
        decisions = connection.execute(select(table_of(Decision))).mappings().all()
    expected = reference.reference_verdict_snapshots(finished)
    folded = 0
    while batch := snapshots.aggregate_finished_verdicts(engine, limit=97):
        folded += batch
    assert folded == len(finished)
    assert snapshots.aggregate_finished_verdicts(engine) == 0  # each verdict counted once

    keys = ("router", "segment_value", "direction", "judge_key", "window", "window_start")
    with engine.connect() as connection:
        rows = connection.execute(select(table_of(VerdictWindowSnapshot))).mappings().all()
    got = {
        tuple(aware_utc(r[k]) if k == "window_start" else r[k] for k in keys): {
            name: float(r[name]) for name in SNAPSHOT_SUMS
        }
        for r in rows
    }
    assert_same(got, expected)

    assert snapshots.rebuild_traffic_snapshots(engine) > 0
    python: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0.0] * len(TRAFFIC_SUMS))
    for d in decisions:
        ts = aware_utc(d["ts"])
        assert ts is not None
        total = python[(d["router"], d["segment_value"], d["tier"], snapshots._hour(ts))]
        for position, value in enumerate(
            (
                1,
                d["sampled"],
                d["sampling_skip_reason"] == "budget_exhausted",
                d["has_request"],
                d["failover"],
                d["fallback"],
                d["escalated_from"] is not None,
                d["cost_usd"] or 0.0,
                d["router_cost_usd"] or 0.0,
            )
        ):
            total[position] += float(value)
    with engine.connect() as connection:
        rows = connection.execute(select(table_of(TrafficWindowSnapshot))).mappings().all()
    got_traffic = {
        (r["router"], r["segment_value"], r["tier"], aware_utc(r["window_start"])): [
            float(r[name]) for name in TRAFFIC_SUMS
        ]
        for r in rows
    }
    assert_same(got_traffic, dict(python))


@pytest.mark.parametrize(
    ("window", "strong_model"),
    [
        ((None, None), None),
        ((START + timedelta(hours=20), START + timedelta(hours=50)), None),
        ((None, None), CHEAP),  # a strong model priced like the cheap one: savings ≤ 0
        ((START - timedelta(days=9), START - timedelta(days=8)), None),  # empty window
    ],
)
def test_economics_equal_the_per_decision_python(
    engine: Engine,
    base_settings: Settings,
    window: tuple[datetime | None, datetime | None],
    strong_model: str | None,
) -> None:
    _seed(engine)
    pricing = PricingTable.from_settings(base_settings)
    since, until = window
    with Session(engine) as session:
        arguments: dict[str, Any] = {
            "session": session,
            "pricing": pricing,
            "router": "agg",
            "since": since,
            "until": until,
            "strong_model": strong_model,
        }
        ours = calibration_service.router_economics_report(**arguments)
        theirs = reference.reference_router_economics_report(**arguments)
    assert_same(ours.model_dump(), theirs.model_dump())
    if since is None:
        assert ours.n_requests == 2400
        assert ours.latency_escalated_ms is not None
        assert ours.latency_escalated_ms.n > 0


@pytest.mark.parametrize("fetch_rows", [20_000, 40, 3])
def test_latency_percentiles_equal_numpy_however_the_range_is_narrowed(
    engine: Engine, fetch_rows: int
) -> None:
    """SQLite narrows to buckets of the value range before it fetches rows (PostgreSQL's
    percentile_cont needs none): ties, a far outlier that squeezes the rest into one bucket,
    a one-value group and an empty group still give numpy's quantiles."""
    rng = np.random.default_rng(11)
    latency = np.concatenate(
        [
            rng.gamma(2.0, 400.0, 500),
            np.full(120, 812.5),  # ties across the median
            rng.integers(0, 30, 200).astype(float),  # many equal small values
            [1e9],  # everything else lands in the histogram's first bucket
        ]
    )
    rng.shuffle(latency)
    escalated = rng.random(latency.size) < 0.3
    with Session(engine) as session:
        session.add_all(
            Decision(
                router="pct",
                request_id=f"pct-{i:04d}",
                ts=START + timedelta(seconds=i),
                received_at=START + timedelta(seconds=i),
                tier="strong" if escalated[i] else "cheap",
                chosen_model=STRONG,
                served_model=STRONG,
                segment={"topic": "a"},
                segment_value="a",
                latency_ms=float(latency[i]),
                escalated_from="cheap" if escalated[i] else None,
                inclusion_probability=0.0,
                sampled=False,
            )
            for i in range(latency.size)
        )
        session.add(
            Decision(
                router="pct",
                request_id="pct-lonely",
                ts=START,
                received_at=START,
                tier="strong",
                chosen_model=STRONG,
                served_model=STRONG,
                segment={"topic": "b"},
                segment_value="b",
                latency_ms=431.0,
                inclusion_probability=0.0,
                sampled=False,
            )
        )
        session.commit()
        c = table_of(Decision).c
        quantiles = (0.0, 0.01, 0.5, 0.9, 0.99, 1.0)
        found = percentiles(
            session,
            c.latency_ms,
            where=[c.router == "pct"],
            groups={
                "a": c.segment_value == "a",
                "escalated": (c.segment_value == "a") & c.escalated_from.is_not(None),
                "b": c.segment_value == "b",
                "none": c.segment_value == "z",
            },
            quantiles=quantiles,
            fetch_rows=fetch_rows,
        )
    expected = {
        "a": latency,
        "escalated": latency[escalated],
        "b": np.array([431.0]),
    }
    for name, values in expected.items():
        count, got = found[name]
        assert count == values.size, name
        assert got is not None
        assert got == pytest.approx(list(np.quantile(values, quantiles)), rel=1e-12, abs=0), name
    assert found["none"] == (0, None)


@pytest.mark.parametrize("segment", [None, "beta"])
def test_threshold_advice_equals_the_per_decision_python(
    engine: Engine, base_settings: Settings, segment: str | None
) -> None:
    _seed(engine)
    settings = base_settings.model_copy(
        update={"threshold_window_days": 2.0, "threshold_bootstrap_replicates": 200}
    )
    with Session(engine) as session:
        arguments: dict[str, Any] = {
            "session": session,
            "settings": settings,
            "router": "agg",
            "segment": segment,
        }
        ours = thresholds_service.advise_thresholds(**arguments)
        theirs = reference.reference_advise_thresholds(**arguments)
    assert theirs.applicable
    assert theirs.segments
    assert [s.segment for s in ours.segments] == [s.segment for s in theirs.segments]
    assert_same(ours.model_dump(), theirs.model_dump())


def _verdicts(engine: Engine, statuses: list[str]) -> list[int]:
    """One decision and one forward verdict (π = 0.5, strong needed) per status; their ids."""
    ids = []
    with Session(engine) as session:
        for i, status in enumerate(statuses):
            ts = START + timedelta(minutes=i)
            decision = Decision(
                router="fold",
                request_id=f"fold-{i}",
                ts=ts,
                received_at=ts,
                tier="cheap",
                chosen_model=CHEAP,
                served_model=CHEAP,
                segment={"topic": "alpha"},
                segment_value="alpha",
                router_score=0.5,
                inclusion_probability=0.5,
                sampled=True,
            )
            session.add(decision)
            session.flush()
            assert decision.id is not None
            done = status == VerdictStatus.DONE
            verdict = Verdict(
                decision_id=decision.id,
                router="fold",
                request_id=decision.request_id,
                ts=ts,
                segment_value="alpha",
                routed_tier="cheap",
                direction="forward",
                inclusion_probability=0.5,
                cheaper_tier="cheap",
                stronger_tier="strong",
                cheaper_model=CHEAP,
                stronger_model=STRONG,
                judge_key="j#1",
                judge_model="j",
                prompt_hash="1",
                status=status,
                next_attempt_at=ts,
                created_at=ts,
                outcome=Outcome.STRONGER_WINS if done else None,
                strong_needed=1 if done else None,
                cheap_acceptable=0 if done else None,
            )
            session.add(verdict)
            session.flush()
            assert verdict.id is not None
            ids.append(verdict.id)
        session.commit()
    return ids


def _day_labels(engine: Engine) -> tuple[int, float]:
    """Labels and Σw of the one day snapshot (0, 0 before any fold)."""
    snapshot = table_of(VerdictWindowSnapshot)
    with engine.connect() as connection:
        row = connection.execute(
            select(snapshot.c.labels, snapshot.c.sum_w).where(snapshot.c.window == "day")
        ).one_or_none()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


def _finish(engine: Engine, verdict_id: int, **values: Any) -> None:
    verdict = table_of(Verdict)
    with engine.begin() as connection:
        connection.execute(verdict.update().where(verdict.c.id == verdict_id).values(**values))


def test_verdicts_finishing_out_of_id_order_are_folded_once(engine: Engine) -> None:
    """A verdict with a lower id that finishes after a higher one was folded still gets
    folded, once; updating a finished verdict again (a re-priced judge cost) folds nothing."""
    first, second, third = _verdicts(
        engine, [VerdictStatus.RUNNING, VerdictStatus.DONE, VerdictStatus.QUEUED]
    )
    assert snapshots.aggregate_finished_verdicts(engine) == 1
    assert _day_labels(engine) == (1, 2.0)

    _finish(engine, third, status=VerdictStatus.SKIPPED, skip_reason="no_payload")
    _finish(
        engine,
        first,
        status=VerdictStatus.DONE,
        outcome=Outcome.STRONGER_WINS,
        strong_needed=1,
        cheap_acceptable=0,
    )
    assert snapshots.aggregate_finished_verdicts(engine) == 2
    assert _day_labels(engine) == (2, 4.0)

    _finish(engine, second, status=VerdictStatus.DONE, judge_cost_usd=0.5)
    _finish(engine, first, lease_owner="nobody")
    assert snapshots.aggregate_finished_verdicts(engine) == 0
    assert _day_labels(engine) == (2, 4.0)


def test_a_fold_that_dies_loses_and_double_counts_nothing(engine: Engine) -> None:
    _verdicts(engine, [VerdictStatus.DONE] * 5)

    class Died(Exception):
        pass

    def fold_three_then_die() -> None:
        with engine.begin() as connection:
            taken = take_and_fold(
                connection,
                queue=snapshots.FOLD_QUEUE_TABLE,
                key="verdict_id",
                source=snapshots.VERDICT_TABLE,
                columns=snapshots.CONTRIBUTION_COLUMNS,
                limit=3,
                fold=lambda rows: snapshots._fold_into_snapshots(connection, rows, START),
            )
            assert taken == 3
            raise Died  # after the fold's statements, before its commit

    with pytest.raises(Died):
        fold_three_then_die()

    assert _day_labels(engine) == (0, 0.0)
    assert snapshots.aggregate_finished_verdicts(engine, limit=3) == 3
    assert snapshots.aggregate_finished_verdicts(engine, limit=3) == 2
    assert snapshots.aggregate_finished_verdicts(engine) == 0
    assert _day_labels(engine) == (5, 10.0)
