"""GET /v1/thresholds (and `shadoweval advise-threshold`) over a small seeded history, on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner, Result

from shadoweval.analytics import thresholds as thresholds_service
from shadoweval.cli import app as cli_app
from shadoweval.config import Settings, get_settings
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.shadow.models import ShadowMode, ShadowRun, WorkStatus
from shadoweval.stats import rates
from tests.conftest import Keys, LiveApi, use_settings

START = datetime(2026, 11, 20, tzinfo=UTC)
THRESHOLD = 0.5


def seeded_history(engine: Engine, *, requests: int = 1200, seed: int = 11) -> dict[str, float]:
    """A router over two segments, a decision every 2 minutes: scores, tiers at t₀ = 0.5, forward
    shadows at π 0.3 and reverse at π 0.2 (a quarter of them in batch mode, billed at half
    price). Returns the observed Hájek harm rate of each segment's cheap-routed labels."""
    rng = np.random.default_rng(seed)
    score = rng.beta(2.0, 2.5, requests)
    needed = rng.binomial(1, 0.4 * score**2)
    cheap_cost = rng.lognormal(np.log(0.0008), 0.4, requests)
    segment = np.where(rng.random(requests) < 0.6, "billing", "code")
    strong = score >= THRESHOLD
    pi = np.where(strong, 0.2, 0.3)
    sampled = rng.random(requests) < pi
    harm_labels: dict[str, tuple[list[float], list[float]]] = {
        "billing": ([], []),
        "code": ([], []),
    }
    with Session(engine) as session:
        decisions = []
        for i in range(requests):
            ts = START + timedelta(minutes=2 * i)
            decisions.append(
                Decision(
                    router="adv",
                    request_id=f"adv-{i}",
                    ts=ts,
                    received_at=ts,
                    tier="strong" if strong[i] else "cheap",
                    chosen_model="big" if strong[i] else "small",
                    served_model="big" if strong[i] else "small",
                    segment={"topic": str(segment[i])},
                    segment_value=str(segment[i]),
                    router_score=float(score[i]),
                    threshold=THRESHOLD,
                    cost_usd=float(cheap_cost[i] * (9.0 if strong[i] else 1.0)),
                    inclusion_probability=float(pi[i]) if sampled[i] else 0.0,
                    sampled=bool(sampled[i]),
                )
            )
        session.add_all(decisions)
        session.flush()
        for i, d in enumerate(decisions):
            if not sampled[i]:
                continue
            assert d.id is not None
            other_cost = float(cheap_cost[i] * (1.0 if strong[i] else 9.0))
            batch = i % 4 == 0
            session.add(
                ShadowRun(
                    decision_id=d.id,
                    kind="shadow",
                    direction="reverse" if strong[i] else "forward",
                    routed_tier=d.tier,
                    target_tier="cheap" if strong[i] else "strong",
                    target_model="small" if strong[i] else "big",
                    ts=d.ts,
                    status=WorkStatus.SUCCEEDED,
                    next_attempt_at=d.ts,
                    created_at=d.ts,
                    cost_usd=other_cost / 2 if batch else other_cost,
                    mode=ShadowMode.BATCH if batch else ShadowMode.REALTIME,
                )
            )
            session.add(
                Verdict(
                    decision_id=d.id,
                    router="adv",
                    request_id=d.request_id,
                    ts=d.ts,
                    segment_value=d.segment_value,
                    routed_tier=d.tier,
                    direction="reverse" if strong[i] else "forward",
                    inclusion_probability=float(pi[i]),
                    router_score=float(score[i]),
                    cheaper_tier="cheap",
                    stronger_tier="strong",
                    cheaper_model="small",
                    stronger_model="big",
                    judge_key="j#1",
                    judge_model="j",
                    prompt_hash="1",
                    status=VerdictStatus.DONE,
                    next_attempt_at=d.ts,
                    created_at=d.ts,
                    outcome=Outcome.STRONGER_WINS if needed[i] else Outcome.TIE,
                    strong_needed=int(needed[i]),
                    cheap_acceptable=1 - int(needed[i]),
                )
            )
            if not strong[i]:
                harm_labels[str(segment[i])][0].append(float(needed[i]))
                harm_labels[str(segment[i])][1].append(float(pi[i]))
        # Two routers the advisor cannot serve.
        for name, fields in (
            ("litellm-group", {"router_score": None}),
            ("complexity", {"router_score": 0.7, "score_semantics": "complexity"}),
        ):
            session.add(
                Decision(
                    router=name,
                    request_id="only",
                    ts=START,
                    received_at=START,
                    tier="cheap",
                    chosen_model="small",
                    served_model="small",
                    segment_value="all",
                    inclusion_probability=0.0,
                    sampled=False,
                    **fields,
                )
            )
        session.commit()
    return {
        name: rates.harm_rate(labels, pis).estimate for name, (labels, pis) in harm_labels.items()
    }


def test_advise_threshold_cli_gives_the_api_answer(
    engine: Engine, base_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded_history(engine)
    monkeypatch.setenv("SHADOWEVAL_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("SHADOWEVAL_THRESHOLD_BOOTSTRAP_REPLICATES", "100")
    get_settings.cache_clear()
    runner = CliRunner()
    root = logging.getLogger()

    def advise(*args: str) -> Result:
        # The CLI logs onto CliRunner's stream, closed after the call: put the handlers back
        # at once, so a late log line of the shared live API's thread cannot hit it.
        handlers, level = root.handlers[:], root.level
        try:
            return runner.invoke(cli_app, ["advise-threshold", *args])
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)

    try:
        as_json = advise("--router", "adv", "--json")
        text = advise("--router", "adv", "--segment", "code")
        complexity = advise("--router", "complexity")
        unknown = advise("--router", "nobody")
    finally:
        get_settings.cache_clear()
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    with Session(engine) as session:
        direct = thresholds_service.advise_thresholds(
            session=session,
            settings=base_settings.model_copy(update={"threshold_bootstrap_replicates": 100}),
            router="adv",
        )
    assert report == json.loads(direct.model_dump_json())
    assert text.exit_code == 0
    assert "code:" in text.stdout
    assert "threshold in force 0.500" in text.stdout
    assert complexity.exit_code == 0
    assert "not applicable: router_score means 'complexity'" in complexity.stdout
    assert unknown.exit_code == 1
    assert "has no decisions" in unknown.stderr


def test_threshold_advice_through_the_api(engine: Engine, live_api: LiveApi, keys: Keys) -> None:
    use_settings(live_api, threshold_bootstrap_replicates=100)
    observed = seeded_history(engine)
    with live_api.client(keys.read) as client:
        response = client.get("/v1/thresholds", params={"router": "adv", "harm_budget": 0.05})
        assert response.status_code == 200, response.text
        report = response.json()
        litellm = client.get("/v1/thresholds", params={"router": "litellm-group"}).json()
        complexity = client.get("/v1/thresholds", params={"router": "complexity"}).json()
        one = client.get("/v1/thresholds", params={"router": "adv", "segment": "code"}).json()
        bad = client.get("/v1/thresholds", params={"router": "adv", "harm_budget": 1.5})
        exported = client.get("/v1/exports/training", params={"router": "adv"})
        unknown = client.get("/v1/thresholds", params={"router": "nobody"})

    assert report["applicable"] is True
    assert report["threshold_in_force"] == THRESHOLD
    assert report["judge_key"] == "j#1"
    assert (report["cheap_tier"], report["strong_tier"]) == ("cheap", "strong")
    # The window ends at the router's decision-time watermark: its latest decision.
    last = START + timedelta(minutes=2 * (1200 - 1))
    assert report["window_until"].startswith(last.strftime("%Y-%m-%dT%H:%M:%S"))
    by_segment = {s["segment"]: s for s in report["segments"]}
    assert set(by_segment) == {"billing", "code", None}
    for name in ("billing", "code"):
        segment = by_segment[name]
        at_threshold = next(p for p in segment["curve"] if p["threshold"] == THRESHOLD)
        assert at_threshold["harm_rate_among_cheap"] == pytest.approx(observed[name], rel=1e-9)
        assert at_threshold["savings_vs_in_force_usd"] == pytest.approx(0.0, abs=1e-12)
        assert segment["requests_per_day"] == pytest.approx(segment["n_requests"] / 7)
        always_strong = segment["curve"][0]
        assert always_strong["threshold"] == 0.0
        assert always_strong["strong_share"] == 1.0
        assert always_strong["harm_rate"] == 0.0
        for point in segment["curve"]:
            assert point["harm_low"] <= point["harm_rate"] <= point["harm_high"]
    pooled = by_segment[None]
    assert (
        pooled["n_requests"]
        == by_segment["billing"]["n_requests"] + by_segment["code"]["n_requests"]
    )
    # Enough labels in the pooled window: a recommendation with a USD-per-day forecast.
    advice = pooled["recommendation"]
    assert advice["threshold"] is not None
    assert advice["change"] in {"raise", "keep", "lower"}
    assert advice["savings_usd_per_day_low"] <= advice["savings_usd_per_day"]
    assert advice["savings_usd_per_day"] <= advice["savings_usd_per_day_high"]
    assert advice["harm_high"] is not None

    assert litellm["applicable"] is False
    assert "router_score" in litellm["not_applicable_reason"]
    assert complexity["applicable"] is False
    assert "'complexity'" in complexity["not_applicable_reason"]
    assert [s["segment"] for s in one["segments"]] == ["code"]
    # The training export carries each segment's recommendation, so a retrain can use it.
    pairs = [json.loads(line) for line in exported.text.splitlines()]
    assert pairs
    for pair in pairs:
        segment = by_segment[pair["segment_value"]]
        assert (
            pair["threshold_advice"]["recommended_threshold"]
            == (segment["recommendation"]["threshold"])
        )
        assert pair["threshold_advice"]["threshold_in_force"] == THRESHOLD
    assert bad.status_code == 422
    assert "harm_budget" in bad.text
    assert unknown.status_code == 404


def test_too_few_labels_gives_no_recommendation(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    seeded_history(engine, requests=200, seed=3)
    with live_api.client(keys.read) as client:
        report = client.get("/v1/thresholds", params={"router": "adv", "segment": "billing"}).json()
    (segment,) = report["segments"]
    assert segment["n_labels"] < 100
    assert segment["recommendation"]["threshold"] is None
    assert segment["recommendation"]["shortfall"]["labels_more"] == 100 - segment["n_labels"]
