"""Reverse shadows in the threshold advisor's score band (issue 16, sampling/threshold_band.py).

A seeded router logs a P(strong needed) score with t₀ = 0.5 and is cautious (true P(strong
needed) = 0.3·s², so harm at t is 0.1·t³ and ε = 0.05 allows t ≈ 0.79), but its reverse
shadows are few: the advisor cannot test a step up. The hourly planner runs with the real
advisor; the judge is stood in for by labels drawn from the known truth (a seeded function
of the request), written as finished verdicts after each planner pass. Clock: decision time
throughout; the stream is weeks old.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from shadoweval.analytics import thresholds as advisor
from shadoweval.analytics.threshold_band_advice import band_advice
from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.sampling import periods, policy, threshold_band
from shadoweval.sampling.models import BudgetDay, SamplingPeriodStratum, SamplingThresholdBand
from tests.conftest import _empty_tables

START = datetime(2026, 9, 7, tzinfo=UTC)
ROUTER = "band-router"
BUDGET = 0.2  # USD a day: ~200 samples at the default cost, 3 % of it for reverse shadows
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _settings(base: Settings, band_share: float) -> Settings:
    return base.model_copy(
        update={
            "sampling_mode": "hourly",
            "store_payloads": "all",
            "sampling_period_minutes": 60,
            "sampling_close_lateness_seconds": 120,
            "sampling_label_lag_minutes": 120,
            "sampling_idle_close_seconds": 10**7,
            "daily_shadow_budget_usd": BUDGET,
            "reverse_shadow_share": 0.03,
            "default_cost_per_sample_usd": 0.001,
            "sampling_cost_min_samples": 10**6,  # reserve the default cost throughout
            "sampling_rate_by_tier": {"cheap": 0.4, "strong": 0.01},
            "planner_traffic_days": 1.0,
            "threshold_min_labels": 50,
            "threshold_min_band_labels": 10,
            "threshold_bootstrap_replicates": 100,
            "threshold_harm_budget": 0.05,
            "threshold_delta": 0.1,
            "sampling_threshold_band_share": band_share,
        }
    )


def _stream(days: int, per_hour: int, seed: int = 16) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = []
    for hour in range(days * 24):
        for i in range(per_hour):
            score = round(rng.random(), 4)
            tier = "strong" if score >= 0.5 else "cheap"
            items.append(
                {
                    "request_id": f"b{hour}-{i}",
                    "router": ROUTER,
                    "tier": tier,
                    "chosen_model": f"{tier}-model",
                    "ts": (START + timedelta(hours=hour, seconds=rng.uniform(0, 3599))).isoformat(),
                    "router_score": score,
                    "threshold": 0.5,
                    "segment": {"topic": "support"},
                    "cost_usd": 0.002 if tier == "strong" else 0.0002,
                }
            )
    return sorted(items, key=lambda item: item["ts"])


def _truth(request_id: str, score: float) -> int:
    """Strong needed, drawn once per request from P = 0.3·s² (the same in every run)."""
    digest = hashlib.sha256(f"truth\x00{request_id}".encode()).digest()
    return int(int.from_bytes(digest[:8], "big") / 2**64 < 0.3 * score**2)


def _ingest(engine: Engine, settings: Settings, items: list[dict[str, Any]]) -> None:
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items)
        )
    assert not outcome.errors, outcome.errors


def _label(engine: Engine) -> int:
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
            assert d.router_score is not None
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
                    strong_needed=_truth(d.request_id, d.router_score),
                    judge_cost_usd=0.001,
                )
            )
        session.commit()
        return len(waiting)


def _plan(engine: Engine, settings: Settings) -> None:
    """Planner passes, labelling after each, until nothing closed waits for a plan."""
    for _ in range(500):
        with Session(engine) as session:
            result = periods.sample_closed_periods(
                session=session, settings=settings, threshold_advisor=band_advice
            )
        labelled = _label(engine)
        if result.waiting != "labels" and not labelled and not result.periods:
            return
    raise AssertionError("the planner did not catch up")


def _run(engine: Engine, settings: Settings, stream: list[dict[str, Any]], live: bool) -> None:
    end = START + timedelta(days=len(stream) // (24 * 30) + 1)
    sentinel = {**stream[-1], "request_id": "sentinel", "ts": end.isoformat()}
    if live:
        for hour in range(0, len(stream), 30):
            _ingest(engine, settings, stream[hour : hour + 30])
            _plan(engine, settings)
    else:
        for i in range(0, len(stream), 1000):
            _ingest(engine, settings, stream[i : i + 1000])
    _ingest(engine, settings, [sentinel])
    _plan(engine, settings)


def _advice(engine: Engine, settings: Settings, until: datetime) -> advisor.SegmentThresholds:
    with Session(engine) as session:
        report = advisor.advise_thresholds(
            session=session,
            settings=settings,
            router=ROUTER,
            harm_budget=settings.threshold_harm_budget,
            delta=settings.threshold_delta,
            until=until,
        )
    assert report.applicable, report.not_applicable_reason
    (segment,) = report.segments
    return segment


def _band_labels(engine: Engine, low: float, high: float) -> int:
    with Session(engine) as session:
        return len(
            session.scalars(
                select(col(Verdict.id)).where(
                    col(Verdict.routed_tier) == "strong",
                    col(Verdict.router_score) >= low,
                    col(Verdict.router_score) < high,
                )
            ).all()
        )


def _empty(engine: Engine) -> None:
    _empty_tables(engine)  # as between tests: every table (PostgreSQL's dedup keys too)


def test_band_shadows_let_the_advisor_step_up_within_budget_with_exact_pi(
    engine: Engine, base_settings: Settings
) -> None:
    stream = _stream(days=5, per_hour=30)
    until = START + timedelta(days=5) - timedelta(microseconds=1)

    off = _settings(base_settings, band_share=0.0)
    _run(engine, off, stream, live=False)
    without = _advice(engine, off, until)
    labels_off = _band_labels(engine, 0.5, 0.7)
    _empty(engine)

    on = _settings(base_settings, band_share=0.3)
    _run(engine, on, stream, live=False)
    with_band = _advice(engine, on, until)
    labels_on = _band_labels(engine, 0.5, 0.7)

    # Without the band the advisor cannot move: too few reverse labels above t₀.
    assert without.recommendation.change == "keep", without.recommendation
    assert without.recommendation.shortfall is not None
    assert labels_off < 20
    # With it, labels grow in the band and the recommendation steps up (ε holds: 0.1·t³).
    assert labels_on >= 3 * max(labels_off, 10), (labels_on, labels_off)
    assert with_band.recommendation.change == "raise", with_band.recommendation
    assert with_band.recommendation.threshold is not None
    assert 0.5 < with_band.recommendation.threshold <= 0.79

    with Session(engine) as session:
        asked = session.scalars(
            select(SamplingThresholdBand).where(SamplingThresholdBand.labels_more > 0)  # type: ignore[arg-type]
        ).all()
        strata = session.scalars(select(SamplingPeriodStratum)).all()
        decisions = session.scalars(select(Decision).where(Decision.request_id != "sentinel")).all()  # type: ignore[arg-type]
        verdicts = {v.decision_id: v for v in session.scalars(select(Verdict))}
        budget = session.scalars(select(BudgetDay)).all()
    assert asked
    assert all(a.score_low == 0.5 and (a.score_high or 0) > 0.5 for a in asked)
    banded = [s for s in strata if s.band_inclusion_probability > 0]
    assert banded
    assert all(s.tier == "strong" for s in banded)

    # Spend within the daily budget, every day, and the band's extra samples (hash between
    # π_stratum and the combined π) within its share of it (≤ 60 a day at $0.001, plus
    # Poisson noise): without the set-aside the band would take every decision in it.
    for spent in budget:
        assert spent.reserved_usd <= spent.budget_usd + 1e-9, spent
    band_only: dict[str, int] = {}

    # π on every decision is the rule: 1 − (1 − π_stratum)(1 − π_band) in the band.
    plan = {(s.period_start, s.tier): s for s in strata}
    in_band = 0
    for d in decisions:
        stratum = plan.get((periods.period_start_of(d.ts, 60), d.tier))
        if stratum is None:
            continue  # the first hours, planned without traffic before them
        expected = stratum.inclusion_probability
        if (
            stratum.band_score_low is not None
            and stratum.band_score_high is not None
            and stratum.band_score_low <= (d.router_score or -1) < stratum.band_score_high
        ):
            base = expected
            expected = threshold_band.combined_probability(base, stratum.band_inclusion_probability)
            in_band += 1
            if d.sampled and policy.sampling_hash(ROUTER, d.request_id) >= base:
                day = d.ts.strftime("%Y-%m-%d")
                band_only[day] = band_only.get(day, 0) + 1
        if d.sampling_skip_reason != "budget_exhausted":
            assert d.inclusion_probability == pytest.approx(expected, rel=1e-12), d.request_id
        if d.id in verdicts:
            assert verdicts[d.id].inclusion_probability == d.inclusion_probability
    assert in_band > 100
    assert band_only, "the band should buy samples the stratum alone would not"
    assert max(band_only.values()) <= 0.3 * BUDGET / 0.001 + 3 * (0.3 * BUDGET / 0.001) ** 0.5

    # The Hájek estimate at t₀ is still the observed harm rate of the cheap-routed labels.
    cheap = [v for v in verdicts.values() if v.routed_tier == "cheap"]
    observed = sum((v.strong_needed or 0) / v.inclusion_probability for v in cheap) / sum(
        1 / v.inclusion_probability for v in cheap
    )
    window = [d for d in decisions if d.ts > until - timedelta(days=7)]
    cheap_share = sum(d.tier == "cheap" for d in window) / len(window)
    at_t0 = next(p for p in with_band.curve if p.threshold == 0.5)
    assert at_t0.harm_rate == pytest.approx(observed * cheap_share, rel=1e-9)


def test_a_replay_buys_the_same_band_shadows_as_the_live_stream(
    engine: Engine, base_settings: Settings
) -> None:
    settings = _settings(base_settings, band_share=0.3)
    stream = _stream(days=3, per_hour=30)

    _run(engine, settings, stream, live=True)
    live = _outcome(engine)
    _empty(engine)
    _run(engine, settings, stream, live=False)
    replay = _outcome(engine)

    assert any(row[5] > 0 for row in live["plans"]), "a band should be bought"
    for part in ("decisions", "plans", "bands", "budget"):
        assert replay[part] == live[part], part


def _outcome(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        return {
            "decisions": {
                d.request_id: (round(d.inclusion_probability, 12), d.sampled)
                for d in session.scalars(select(Decision))
            },
            "plans": sorted(
                (
                    s.period_start,
                    s.tier,
                    round(s.inclusion_probability, 12),
                    s.band_score_low,
                    s.band_score_high,
                    round(s.band_inclusion_probability, 12),
                )
                for s in session.scalars(select(SamplingPeriodStratum))
            ),
            "bands": sorted(
                (b.as_of, b.segment_value, b.score_low, b.score_high, b.labels_now, b.labels_more)
                for b in session.scalars(select(SamplingThresholdBand))
            ),
            "budget": sorted(
                (b.day, b.account, b.sampled, b.refused, round(b.reserved_usd, 9))
                for b in session.scalars(select(BudgetDay))
            ),
        }
