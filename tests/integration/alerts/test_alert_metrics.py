"""/metrics quality gauges on seeded data: harm rate with its interval, calibration, alert
states and freshness, with the values the statistics modules compute."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from shadoweval import gauges
from shadoweval.alerts import service
from shadoweval.alerts.rules import RuleSet
from shadoweval.analytics.models import TrafficWindowSnapshot, VerdictWindowSnapshot
from shadoweval.db import utcnow
from shadoweval.ingest.models import Decision
from shadoweval.sampling.models import BudgetDay
from shadoweval.stats import calibration
from shadoweval.stats.rates import WeightedSums, hajek_rate_from_sums
from tests.conftest import LiveApi
from tests.integration.alerts.stream import hour_traffic, move_decision_time
from tests.integration.alerts.verdicts import judged_verdict

SCORES = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
LABELS = [0, 0, 1, 0, 1, 1, 0, 1]
LAGS_S = [60, 120, 180, 240, 300, 360, 420, 480]


@pytest.fixture(autouse=True)
def _fresh_calibration_cache() -> Iterator[None]:
    # The cache spans scrapes of the same database; each test seeds its own verdicts.
    gauges._calibration_cache.clear()
    yield
    gauges._calibration_cache.clear()


def scrape(live_api: LiveApi) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with live_api.client() as client:
        text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def seed_verdicts(session: Session, start: datetime | None = None) -> None:
    """Judged decisions from `start` (default: 30 min ago), counted as ingest counts them:
    the router's log, whose latest ts is its decision-time clock."""
    start = start or utcnow() - timedelta(minutes=30)
    session.add(
        TrafficWindowSnapshot(
            router="support-router",
            segment_value="billing",
            tier="cheap",
            window_start=start.replace(minute=0, second=0, microsecond=0),
            decisions=len(SCORES),
        )
    )
    for i, (score, label, lag) in enumerate(zip(SCORES, LABELS, LAGS_S, strict=True)):
        ts = start + timedelta(seconds=i)
        decision = Decision(
            router="support-router",
            request_id=f"r{i}",
            ts=ts,
            received_at=ts,
            tier="cheap",
            chosen_model="haiku",
            served_model="haiku",
            router_score=score,
            segment={"topic": "billing"},
            segment_value="billing",
            inclusion_probability=1.0,
            sampled=True,
        )
        session.add(decision)
        session.flush()
        session.add(
            judged_verdict(
                decision,
                score=score,
                strong_needed=label,
                finished_at=ts + timedelta(seconds=lag),
            )
        )
    session.commit()


def harm_snapshot(
    hour: datetime, judge_key: str = "judge-a", labels: int = 40
) -> VerdictWindowSnapshot:
    # π = 0.5 for 40 labels with 10 harmful: w = 2, v = (1 − π) w² = 2.
    return VerdictWindowSnapshot(
        router="support-router",
        segment_value="billing",
        direction="forward",
        judge_key=judge_key,
        window="hour",
        window_start=hour,
        labels=labels,
        sum_w=80.0,
        sum_w2=160.0,
        sum_wy=20.0,
        sum_vw=80.0,
        sum_vwy=20.0,
        updated_at=hour,
    )


def test_harm_rate_gauges_match_the_hajek_estimate(live_api: LiveApi, session: Session) -> None:
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    seed_verdicts(session, hour)
    session.add(harm_snapshot(hour))
    session.commit()
    expected = hajek_rate_from_sums(WeightedSums(40, 80.0, 160.0, 20.0, 80.0, 20.0, 20.0))
    values = scrape(live_api)
    labels = (("judge", "judge-a"), ("router", "support-router"), ("segment", "billing"))
    assert values[("shadoweval_harm_ratio", labels)] == pytest.approx(0.25)
    assert values[("shadoweval_harm_ci_low_ratio", labels)] == pytest.approx(expected.ci_low)
    assert values[("shadoweval_harm_ci_high_ratio", labels)] == pytest.approx(expected.ci_high)
    assert expected.ci_low < 0.25 < expected.ci_high
    assert values[("shadoweval_harm_labels", labels)] == 40


def test_the_judge_label_is_the_model_and_the_prompt_hash_is_an_info_metric(
    live_api: LiveApi, session: Session
) -> None:
    """A rubric edit mid-window must not fork every segment's series: the gauges keep one
    `judge` series per model (the prompt with more labels), the hashes go to judge_info."""
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    seed_verdicts(session, hour)
    session.add(harm_snapshot(hour, judge_key="judge-a#old-rubric", labels=40))
    session.add(harm_snapshot(hour, judge_key="judge-a#new-rubric", labels=4))
    session.commit()
    values = scrape(live_api)
    harm = {
        labels: value
        for (name, labels), value in values.items()
        if name == "shadoweval_harm_labels"
    }
    assert harm == {
        (("judge", "judge-a"), ("router", "support-router"), ("segment", "billing")): 40
    }
    info = {labels for (name, labels), _ in values.items() if name == "shadoweval_judge_info"}
    assert {dict(labels)["prompt_hash"] for labels in info} >= {"old-rubric", "new-rubric"}
    assert {dict(labels)["judge"] for labels in info} == {"judge-a"}
    assert not [name for name, _ in values if name.endswith("_created")]


def test_calibration_and_freshness_gauges(live_api: LiveApi, session: Session) -> None:
    seed_verdicts(session)
    values = scrape(live_api)
    labels = (("judge", "judge-a"), ("router", "support-router"))
    score, label = np.array(SCORES), np.array(LABELS, dtype=float)
    weights = np.ones_like(score)
    assert values[("shadoweval_calibration_brier", labels)] == pytest.approx(
        float(np.mean((score - label) ** 2))
    )
    assert values[("shadoweval_calibration_ece", labels)] == pytest.approx(
        calibration.expected_calibration_error(score, label, weights, n_bins=10)
    )
    assert values[("shadoweval_calibration_labels", labels)] == len(SCORES)
    assert values[("shadoweval_verdict_lag_seconds", (("quantile", "0.5"),))] == 300
    assert values[("shadoweval_verdict_lag_seconds", (("quantile", "1"),))] == 480
    # Every sampled decision has its verdict: nothing holds the watermark back.
    assert values[("shadoweval_label_watermark_lag_seconds", ())] == 0


def test_a_replayed_logs_gauges_read_its_decision_day(live_api: LiveApi, session: Session) -> None:
    """Weeks after it was recorded, a log's "last 24 h" and "today" are its decision time:
    the wall clock's day has no labels and no budget."""
    day = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(weeks=5)
    seed_verdicts(session, day + timedelta(hours=9, minutes=30))
    session.add(harm_snapshot(day + timedelta(hours=9)))
    session.add(
        BudgetDay(day=day.strftime("%Y-%m-%d"), account="shadow", budget_usd=20.0, reserved_usd=7.5)
    )
    session.commit()

    values = scrape(live_api)

    router_judge = (("judge", "judge-a"), ("router", "support-router"))
    segment = (("judge", "judge-a"), ("router", "support-router"), ("segment", "billing"))
    assert values[("shadoweval_harm_labels", segment)] == 40
    assert values[("shadoweval_calibration_labels", router_judge)] == len(SCORES)
    assert values[("shadoweval_budget_reserved_usd", (("account", "shadow"),))] == 7.5
    assert values[("shadoweval_budget_limit_usd", (("account", "shadow"),))] == 20.0


def test_alert_state_gauges(live_api: LiveApi, session: Session) -> None:
    service.put_rules(
        session=session,
        rule_set=RuleSet.model_validate(
            {
                "rules": [
                    {
                        "name": "escalation",
                        "kind": "cascade_escalation_rate",
                        "warn": 0.25,
                        "alert": 0.3,
                        "severity": "critical",
                    }
                ]
            }
        ),
        updated_by=None,
    )
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    for segment, escalated in (("billing", 40), ("refunds", 27), ("chat", 1)):
        hour_traffic(session, hour=hour, decisions=100, escalated=escalated, segment=segment)
    move_decision_time(session, now)
    service.evaluate_alerts(session=session, settings=live_api.app.state.settings, now=now)
    values = scrape(live_api)
    count = "shadoweval_alerts_firing"
    assert (
        values[(count, (("level", "alert"), ("rule", "escalation"), ("severity", "critical")))] == 1
    )
    assert (
        values[(count, (("level", "warn"), ("rule", "escalation"), ("severity", "warning")))] == 1
    )
    firing = {
        dict(labels)["segment"]: value
        for (name, labels), value in values.items()
        if name == "shadoweval_alert_firing"
    }
    assert firing == {"billing": 1.0, "refunds": 1.0}
