"""/v1/calibration and /v1/economics over stored verdicts and decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.stats import calibration
from tests.conftest import Keys, LiveApi, decision

START = datetime(2026, 11, 20, tzinfo=UTC)


def scored_verdicts(
    engine: Engine, scores: np.ndarray, labels: np.ndarray, start: datetime, pi: float = 0.5
) -> None:
    with Session(engine) as session:
        decisions = []
        for i, score in enumerate(scores):
            ts = start + timedelta(minutes=i)
            d = Decision(
                router="r",
                request_id=f"cal-{start.date()}-{i}",
                ts=ts,
                received_at=ts,
                tier="cheap",
                chosen_model="m",
                served_model="m",
                segment_value="all",
                inclusion_probability=pi,
                sampled=True,
                router_score=float(score),
            )
            decisions.append(d)
        # One flush for all: a flush per decision was ~1,600 round trips a test.
        session.add_all(decisions)
        session.flush()
        for d, score, label in zip(decisions, scores, labels, strict=True):
            ts = d.ts
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
                    inclusion_probability=pi,
                    router_score=float(score),
                    cheaper_tier="cheap",
                    stronger_tier="strong",
                    cheaper_model="m",
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


def test_calibration_report_matches_the_statistics_and_flags_drift(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    rng = np.random.default_rng(5)
    ref_scores = rng.beta(2, 5, 800)
    ref_labels = rng.binomial(1, ref_scores)
    cur_scores = rng.beta(2, 5, 800)
    # The router became over-confident: the truth moved towards 0.5.
    cur_labels = rng.binomial(1, 0.5 * cur_scores + 0.25)
    scored_verdicts(engine, ref_scores, ref_labels, START)
    scored_verdicts(engine, cur_scores, cur_labels, START + timedelta(days=2))

    with live_api.client(keys.read) as client:
        (report,) = client.get(
            "/v1/calibration",
            params={
                "router": "r",
                "since": "2026-11-22T00:00:00Z",
                "reference_since": "2026-11-20T00:00:00Z",
                "reference_until": "2026-11-22T00:00:00Z",
            },
        ).json()

    assert report["n"] == 800
    assert report["judge_key"] == "j#1"
    direct = calibration.brier_decomposition(cur_scores, cur_labels, np.full(800, 2.0))
    assert report["brier"]["brier"] == pytest.approx(direct.brier)
    assert len(report["reliability_curve"]) == 10
    assert report["drift_against_reference"]["p_value"] < 0.01
    assert report["against_perfect_calibration"]["p_value"] < 0.01
    assert report["cox"]["slope"] < 1.0


def test_economics_against_the_always_strong_baseline(
    engine: Engine, base_settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    items = [
        decision(
            f"e-{i}",
            tier="cheap",
            chosen_model="claude-haiku-4-5",
            cost_usd=0.002,
            usage={"input_tokens": 500, "output_tokens": 300},
            router_cost_usd=0.0001,
            latency_ms=400.0,
        )
        for i in range(30)
    ] + [
        decision(
            f"s-{i}",
            tier="strong",
            chosen_model="claude-sonnet-4-6",
            cost_usd=0.006,
            usage={"input_tokens": 500, "output_tokens": 300},
            router_cost_usd=0.0001,
            latency_ms=1500.0,
            escalated_from="cheap" if i < 5 else None,
        )
        for i in range(10)
    ]
    with Session(engine) as session:
        ingest_service.ingest_decisions(
            session=session, settings=base_settings, parsed=ParsedBody(items=items)
        )

    with live_api.client(keys.read) as client:
        report = client.get("/v1/economics", params={"router": "support-router"}).json()

    assert report["n_requests"] == 40
    assert report["strong_model"] == "claude-sonnet-4-6"
    # Sonnet 4.6 at $3/$15 per Mtok: 500 in + 300 out = $0.006 per request.
    assert report["always_strong_cost_per_request_usd"] == pytest.approx(0.006)
    assert report["realized_cost_per_request_usd"] == pytest.approx(
        (30 * 0.002 + 10 * 0.006) / 40 + 0.0001
    )
    assert report["savings_total_usd"] == pytest.approx(30 * (0.006 - 0.002) - 40 * 0.0001)
    assert report["break_even"]["router_pays_for_itself"] is True
    assert report["escalation"]["share"] == pytest.approx(5 / 40)
    assert report["strong_share"]["share"] == pytest.approx(10 / 40)
    with live_api.client(keys.read) as client:
        empty = client.get("/v1/economics", params={"router": "nobody"}).json()
    assert empty["n_requests"] == 0


def test_calibration_windows_answer_what_one_call_per_window_gives(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    """The calibration page's series in one call: each window's report equals
    /v1/calibration for that window with the first window as reference."""
    rng = np.random.default_rng(7)
    scores = rng.beta(2, 5, 600)
    labels = rng.binomial(1, scores)
    scored_verdicts(engine, scores, labels, START)

    with live_api.client(keys.read) as client:
        answer = client.get("/v1/calibration/windows", params={"router": "r", "windows": 3})
        assert answer.status_code == 200, answer.text
        windows = answer.json()["windows"]
        assert len(windows) == 3
        assert windows[-1]["until"] is None  # the last window stays open
        for window in windows:
            params = {
                "router": "r",
                "since": window["since"],
                "reference_since": windows[0]["since"],
                "reference_until": windows[0]["until"],
            }
            if window["until"] is not None:
                params["until"] = window["until"]
            one = client.get("/v1/calibration", params=params).json()
            assert window["reports"] == one
            assert sum(r["n"] for r in window["reports"]) > 0
        assert sum(w["reports"][0]["n"] for w in windows) == 600
        assert windows[2]["reports"][0]["reference_window"] == {
            "since": windows[0]["since"],
            "until": windows[0]["until"],
        }
