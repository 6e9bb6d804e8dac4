"""Process-level intervals, human-corrected (PPI) and expected harm on /v1/segments and
/v1/segments/{segment}/estimates, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import snapshots
from shadoweval.feedback.models import ReviewLabel
from shadoweval.feedback.queue import in_review_sample, uniform_sample
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.stats.ppi import ppi_harm_rate
from shadoweval.stats.rates import process_rate, wilson_interval
from tests.conftest import Keys, LiveApi, use_settings

START = datetime(2026, 11, 27, 0, tzinfo=UTC)
REVIEW_PROBABILITY = 0.25


def add_pairs(
    engine: Engine,
    segment: str,
    judge: list[int],
    scores: list[float],
    *,
    pi: float = 1.0,
    start: datetime = START,
    spacing: timedelta = timedelta(minutes=1),
) -> None:
    """Cheap-routed decisions with router scores and finished forward verdicts."""
    with Session(engine) as session:
        decisions = []
        for i, score in enumerate(scores):
            ts = start + i * spacing
            decisions.append(
                Decision(
                    router="r",
                    request_id=f"{segment}-{start.isoformat()}-{i:05d}",
                    ts=ts,
                    received_at=ts,
                    tier="cheap",
                    chosen_model="m",
                    served_model="m",
                    router_score=score,
                    segment={"topic": segment},
                    segment_value=segment,
                    inclusion_probability=pi,
                    sampled=True,
                )
            )
        session.add_all(decisions)
        session.flush()
        for decision, label in zip(decisions, judge, strict=True):
            assert decision.id is not None
            session.add(
                Verdict(
                    decision_id=decision.id,
                    router="r",
                    request_id=decision.request_id,
                    ts=decision.ts,
                    segment_value=segment,
                    routed_tier="cheap",
                    direction="forward",
                    inclusion_probability=pi,
                    router_score=decision.router_score,
                    cheaper_tier="cheap",
                    stronger_tier="strong",
                    cheaper_model="m",
                    stronger_model="s",
                    judge_key="j#1",
                    judge_model="j",
                    prompt_hash="1",
                    status=VerdictStatus.DONE,
                    next_attempt_at=decision.ts,
                    created_at=decision.ts,
                    outcome=Outcome.STRONGER_WINS if label else Outcome.TIE,
                    strong_needed=label,
                    cheap_acceptable=1 - label,
                    judge_cost_usd=0.001,
                )
            )
        session.commit()


def label_review_sample(engine: Engine, human: dict[str, int]) -> int:
    """Human labels (1 = harm) on every pair of the uniform review sample; returns how many."""
    with Session(engine) as session:
        verdicts = session.scalars(select(Verdict)).all()
        pairs = [(v.id, v.router, v.request_id, v.segment_value) for v in verdicts if v.id]
        sampled = uniform_sample(pairs, REVIEW_PROBABILITY)
        for item in sampled:
            harm = human[item.request_id]
            session.add(
                ReviewLabel(
                    verdict_id=item.verdict_id,
                    reviewer="alice",
                    choice="B" if harm else "A",
                    presented_order="cheaper_first",
                    label="stronger" if harm else "cheaper",
                    served_acceptable=1 - harm,
                    created_at=START,
                    queue="uniform",
                )
            )
        # A stratified-queue label on a pair outside the sample must not enter PPI.
        outside = next(
            v for v in verdicts if not in_review_sample(v.router, v.request_id, REVIEW_PROBABILITY)
        )
        assert outside.id is not None
        session.add(
            ReviewLabel(
                verdict_id=outside.id,
                reviewer="bob",
                choice="B",
                presented_order="cheaper_first",
                label="stronger",
                served_acceptable=0,
                created_at=START,
                queue="stratified",
            )
        )
        session.commit()
        return len(sampled)


def test_census_segment_has_a_process_interval_and_ppi_beside_it(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    use_settings(live_api, review_sample_probability=REVIEW_PROBABILITY)
    rng = np.random.default_rng(21)
    n = 400
    truth = rng.random(n) < 0.3
    # The judge misses 30 % of the harm: its rate is biased low.
    judge = (truth & (rng.random(n) > 0.3)).astype(int).tolist()
    add_pairs(engine, "code", judge, rng.random(n).tolist(), pi=1.0)
    snapshots.aggregate_finished_verdicts(engine)
    requests = [f"code-{START.isoformat()}-{i:05d}" for i in range(n)]
    reviewed = label_review_sample(
        engine, dict(zip(requests, truth.astype(int).tolist(), strict=True))
    )
    assert 50 < reviewed < 150

    with live_api.client(keys.read) as client:
        body = client.get("/v1/segments").json()
    (row,) = body
    # Every decision judged (π = 1): the process interval is Wilson on 400, not a point.
    judge_rate = float(np.mean(judge))
    assert row["rate"]["estimate"] == pytest.approx(judge_rate)
    assert (row["rate"]["ci_low"], row["rate"]["ci_high"]) == pytest.approx(
        wilson_interval(judge_rate, n)
    )
    assert row["rate_finite_population"]["ci_low"] == row["rate_finite_population"]["ci_high"]

    in_sample = np.array([in_review_sample("r", r, REVIEW_PROBABILITY) for r in requests])
    expected = ppi_harm_rate(
        judge, 1.0, (truth & in_sample).astype(int), REVIEW_PROBABILITY, in_sample.astype(int)
    )
    ppi = row["ppi"]
    assert ppi["human_labels"] == reviewed  # bob's label outside the sample is left out
    assert ppi["estimate"] == pytest.approx(expected.estimate)
    assert ppi["ci_low"] == pytest.approx(expected.ci_low)
    assert ppi["judge_bias"] == pytest.approx(expected.judge_bias)
    assert ppi["judge_bias"] < 0  # the judge misses harm
    assert (
        ppi["ci_high"] - ppi["ci_low"] < ppi["human_only"]["ci_high"] - ppi["human_only"]["ci_low"]
    )
    assert ppi["effective_human_labels"] > reviewed
    assert row["expected"] is None  # expected harm needs a window


def test_estimates_series_tracks_a_score_shift_and_flags_a_calibration_change(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    use_settings(live_api, expected_harm_bootstrap=40)
    rng = np.random.default_rng(5)
    # Day 1: scores ~ Beta(2, 8), calibrated (P(harm | s) = s). Day 2, hours 0–5: scores move
    # up (Beta(4, 6)) and stay calibrated. Day 2, hours 6–11: same scores, harm doubled.
    before = rng.beta(2, 8, 360)
    add_pairs(
        engine,
        "chat",
        (rng.random(360) < before).astype(int).tolist(),
        before.tolist(),
        spacing=timedelta(minutes=4),
    )
    day2 = START + timedelta(days=1)
    shifted = rng.beta(4, 6, 180)
    add_pairs(
        engine,
        "chat",
        (rng.random(180) < shifted).astype(int).tolist(),
        shifted.tolist(),
        start=day2,
        spacing=timedelta(minutes=2),
    )
    changed = rng.beta(4, 6, 180)
    harm_changed = (rng.random(180) < np.minimum(1.0, 2 * changed)).astype(int)
    add_pairs(
        engine,
        "chat",
        harm_changed.tolist(),
        changed.tolist(),
        start=day2 + timedelta(hours=6),
        spacing=timedelta(minutes=2),
    )
    snapshots.aggregate_finished_verdicts(engine)

    with live_api.client(keys.read) as client:
        shift_only = client.get(
            "/v1/segments/chat/estimates",
            params={
                "router": "r",
                "since": day2.isoformat(),
                "until": (day2 + timedelta(hours=6)).isoformat(),
            },
        )
        with_change = client.get(
            "/v1/segments/chat/estimates",
            params={
                "router": "r",
                "since": (day2 + timedelta(hours=6)).isoformat(),
                "until": (day2 + timedelta(hours=12)).isoformat(),
            },
        ).json()
        default_window = client.get("/v1/segments/chat/estimates", params={"router": "r"}).json()
        bad = client.get(
            "/v1/segments/chat/estimates",
            params={"router": "r", "since": day2.isoformat(), "until": day2.isoformat()},
        )
        unknown = client.get("/v1/segments/nope/estimates", params={"router": "r"})
        window = {"since": day2.isoformat(), "until": (day2 + timedelta(hours=6)).isoformat()}
        (segment_row,) = client.get("/v1/segments", params={**window, "expected": "true"}).json()
        (without,) = client.get("/v1/segments", params=window).json()
    assert shift_only.status_code == 200
    body = shift_only.json()
    assert len(body["points"]) == 6
    for point in body["points"]:
        expected = point["expected"]
        assert expected["decisions"] == 30
        assert expected["calibration_scope"] == "segment"
        assert expected["ci_low"] <= expected["estimate"] <= expected["ci_high"]
        assert point["judge_only"]["n"] == 30
    # Expected harm moved with the scores (≈ 0.4, from ≈ 0.2 the day before), and the map
    # still fits: no gap.
    mean_expected = np.mean([p["expected"]["estimate"] for p in body["points"]])
    assert 0.33 < mean_expected < 0.47
    assert body["gap"]["significant"] is False
    assert body["gap"]["reference_labels"] == 360  # day 1: the labels before the window
    # Harm doubled at unchanged scores: the gap test flags concept drift.
    assert with_change["gap"]["significant"] is True
    assert with_change["gap"]["gap"] > 0.2
    # Default: the 24 hours up to the newest decision's hour (decision time).
    assert default_window["until"].startswith("2026-11-28T12:00:00")
    assert len(default_window["points"]) == 24
    # /v1/segments?expected=true: the window's expected harm, the map fitted on every label
    # up to the window's end (so not the series' figure exactly, but close to it).
    assert without["expected"] is None
    assert segment_row["expected"]["decisions"] == 180
    assert segment_row["expected"]["estimate"] == pytest.approx(mean_expected, abs=0.05)
    assert bad.status_code == 400
    assert "since" in bad.text
    assert unknown.status_code == 404


def test_process_interval_of_a_sampled_segment_matches_the_stats_function(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    rng = np.random.default_rng(9)
    labels = rng.binomial(1, 0.2, 200)
    add_pairs(engine, "legal", labels.tolist(), rng.random(200).tolist(), pi=0.4)
    snapshots.aggregate_finished_verdicts(engine)
    with live_api.client(keys.read) as client:
        (row,) = client.get("/v1/segments").json()
    expected = process_rate(labels, 0.4)
    assert (row["rate"]["ci_low"], row["rate"]["ci_high"]) == pytest.approx(
        (expected.ci_low, expected.ci_high)
    )
    assert row["ppi"]["human_labels"] == 0
    assert row["ppi"]["estimate"] is None
