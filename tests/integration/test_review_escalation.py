"""Judge escalation: GET /v1/review/queue?mode=escalated within a daily budget, the queue
each label records, and /v1/judge/agreement on kept vs escalated verdicts, on both
databases."""

from __future__ import annotations

import math
from datetime import timedelta
from itertools import count

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.feedback import review
from shadoweval.feedback.models import ReviewChoice, ReviewLabel, ReviewLabelIn
from shadoweval.feedback.queue import in_review_sample
from shadoweval.judge.models import Outcome, Verdict
from shadoweval.stats.rates import wilson_interval
from tests.conftest import Keys, LiveApi, use_settings
from tests.integration.test_feedback import (
    DEFAULT_REVIEW_PROBABILITY,
    START,
    assignment_of,
    judged_pair,
    reviewer_key,
    texts_of,
)

_ids = count()


def in_sample_request_id() -> str:
    """A request id whose pair is in the uniform review sample at the default probability."""
    while True:
        request_id = f"sampled-{next(_ids)}"
        if in_review_sample("r", request_id, DEFAULT_REVIEW_PROBABILITY):
            return request_id


def served(engine: Engine, items: list[dict[str, object]]) -> list[int]:
    return [assignment_of(engine, str(item["token"])).verdict_id for item in items]


def test_escalated_queue_serves_the_least_confident_verdicts_within_the_daily_budget(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    use_settings(live_api, review_escalation_min_margin=1.0, review_escalation_daily_budget=2)
    day_2 = START + timedelta(days=1)
    kept = judged_pair(engine, outcome=Outcome.STRONGER_WINS, score_delta=3.0)
    tie = judged_pair(engine, outcome=Outcome.TIE, score_delta=0.0)  # margin 0
    inconsistent = judged_pair(engine, outcome=Outcome.INCONSISTENT, score_delta=-2.0)
    narrow = judged_pair(engine, outcome=Outcome.STRONGER_WINS, score_delta=0.5)  # margin 0.5
    # Day 2: the budget is the deployment's, so the other router's pair counts against it.
    other_router = judged_pair(engine, router="other", outcome=Outcome.TIE, ts=day_2)
    contradicted = judged_pair(
        engine, outcome=Outcome.TIE, score_delta=0.5, ts=day_2 + timedelta(hours=23)
    )
    # In the uniform review sample: left to the uniform queue, using none of the budget.
    sampled = judged_pair(
        engine, outcome=Outcome.INCONSISTENT, ts=day_2, request_id=in_sample_request_id()
    )

    ann = reviewer_key(engine, "ann")
    with live_api.client(ann) as client:
        everywhere = client.get("/v1/review/queue", params={"mode": "escalated", "limit": 100})
        assert everywhere.status_code == 200, everywhere.text
        only_r = client.get(
            "/v1/review/queue", params={"mode": "escalated", "router": "r", "limit": 100}
        ).json()["items"]
        uniform = client.get("/v1/review/queue", params={"mode": "uniform", "limit": 100})
    # Newest decision day first; per day the inconsistent, then the smallest margin (the
    # contradicted tie: −0.5, the other router's tie: 0); the narrow win (0.5) and the
    # confident one are outside the budget of two.
    assert served(engine, everywhere.json()["items"]) == [
        contradicted.id,
        other_router.id,
        inconsistent.id,
        tie.id,
    ]
    assert served(engine, only_r) == [contradicted.id, inconsistent.id, tie.id]
    assert narrow.id not in served(engine, only_r)
    assert kept.id not in served(engine, only_r)
    assert served(engine, uniform.json()["items"]) == [sampled.id]

    # The label records the queue that served its pair.
    with live_api.client(ann) as client:
        first = only_r[0]
        posted = client.post("/v1/review/labels", json={"token": first["token"], "choice": "tie"})
        assert posted.status_code == 201, posted.text
        after = client.get(
            "/v1/review/queue", params={"mode": "escalated", "router": "r", "limit": 100}
        ).json()["items"]
        stratified = client.get("/v1/review/queue", params={"limit": 100}).json()["items"]
    assert served(engine, after) == [inconsistent.id, tie.id]
    with Session(engine) as session:
        (label,) = session.scalars(select(ReviewLabel)).all()
    assert (label.verdict_id, label.queue) == (contradicted.id, "escalated")
    # Served again by another mode, the assignment (and so a later label) follows it.
    assert {assignment_of(engine, i["token"]).queue for i in stratified} == {"stratified"}
    assert sampled.id not in served(engine, stratified)

    # A budget of 0 turns escalation off.
    use_settings(live_api, review_escalation_daily_budget=0)
    with live_api.client(reviewer_key(engine, "bob")) as client:
        off = client.get("/v1/review/queue", params={"mode": "escalated"})
    assert off.status_code == 200
    assert off.json()["items"] == []


def label_as(
    session: Session,
    reviewer: str,
    verdicts: dict[int, Verdict],
    acceptable: dict[int, int],
    **queue: object,
) -> None:
    """`reviewer` labels every pair the queue serves that `acceptable` names: the served
    (cheaper, forward) answer better when acceptable, both bad when not."""
    page = review.review_queue(session=session, reviewer=reviewer, limit=100, **queue)
    for item in page.items:
        verdict_id = assignment_of(session.get_bind(), item.token).verdict_id
        if verdict_id not in acceptable:
            continue
        cheaper, _ = texts_of(verdicts[verdict_id])
        position = next(a.position for a in item.answers if a.text == cheaper)
        choice = ReviewChoice(position) if acceptable[verdict_id] else ReviewChoice.BOTH_BAD
        review.store_label(
            session=session, label=ReviewLabelIn(token=item.token, choice=choice), reviewer=reviewer
        )


def test_agreement_is_reported_on_kept_and_escalated_verdicts_apart(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    use_settings(live_api, review_escalation_min_margin=1.0)
    plan = {  # name: (outcome, score delta); forward pairs: judge "acceptable" unless stronger wins
        "k1": (Outcome.STRONGER_WINS, 3.0),  # kept, judge 0
        "k2": (Outcome.CHEAPER_WINS, -2.0),  # kept, judge 1
        "k3": (Outcome.TIE, -1.5),  # kept (margin 1.5), judge 1
        "k4": (Outcome.STRONGER_WINS, 2.0),  # kept, judge 0
        "e1": (Outcome.TIE, 0.0),  # escalated (margin 0), judge 1
        "e2": (Outcome.INCONSISTENT, 0.0),  # escalated, judge 1
        "e3": (Outcome.STRONGER_WINS, 0.5),  # escalated (margin 0.5), judge 0
    }
    pairs = {name: judged_pair(engine, outcome=o, score_delta=d) for name, (o, d) in plan.items()}
    by_id = {v.id: v for v in pairs.values() if v.id is not None}
    ids = {name: v.id for name, v in pairs.items()}
    with Session(engine) as session:
        # ann labels through the uniform queue (at probability 1 every pair is in the sample).
        uniform = {"k1": 0, "k2": 1, "k3": 1, "k4": 1, "e1": 0, "e2": 1, "e3": 1}
        label_as(
            session,
            "ann",
            by_id,
            {ids[n]: a for n, a in uniform.items()},
            mode="uniform",
            review_probability=1.0,
        )
        # bob through the escalation queue (default probability: no pair is in the sample),
        # budget 2: e2 (inconsistent), then e1 (margin 0).
        label_as(
            session,
            "bob",
            by_id,
            {ids["e2"]: 0, ids["e1"]: 1, ids["e3"]: 1},
            mode="escalated",
            escalation_daily_budget=2,
        )
        # cyd through the stratified queue: counts in κ, never in the breakdown.
        label_as(session, "cyd", by_id, {ids["k1"]: 1}, mode="stratified")
        queues = {(label.reviewer, label.queue) for label in session.scalars(select(ReviewLabel))}
    assert queues == {("ann", "uniform"), ("bob", "escalated"), ("cyd", "stratified")}

    with live_api.client(keys.read) as client:
        response = client.get("/v1/judge/agreement", params={"router": "r"})
        use_settings(live_api, review_escalation_min_margin=0.0)
        looser = client.get("/v1/judge/agreement", params={"router": "r"})
    assert response.status_code == 200, response.text
    (group,) = response.json()["items"]
    assert (group["n"], group["from_review_labels"]) == (7 + 2 + 1, 10)
    escalation = group["escalation"]
    assert escalation["min_margin_points"] == 1.0
    assert (escalation["verdicts"], escalation["escalated_verdicts"]) == (7, 3)
    share_low, share_high = wilson_interval(3 / 7, 7)
    assert escalation["escalated_share"] == pytest.approx(3 / 7)
    assert escalation["escalated_share_ci_low"] == pytest.approx(share_low)
    assert escalation["escalated_share_ci_high"] == pytest.approx(share_high)
    # Kept: judge [0, 1, 1, 0], human [0, 1, 1, 1]: agreement 3/4; p_e = .5·.25 + .5·.75 = .5,
    # κ = (.75 − .5)/(1 − .5) = .5.
    kept = escalation["kept"]
    assert (kept["labels"], kept["agreement"], kept["kappa"]) == (4, 0.75, pytest.approx(0.5))
    low, high = wilson_interval(0.75, 4)
    assert (kept["agreement_ci_low"], kept["agreement_ci_high"]) == (
        pytest.approx(low),
        pytest.approx(high),
    )
    # Escalated (uniform labels): judge [1, 1, 0], human [0, 1, 1]: agreement 1/3;
    # p_e = (1/3)(1/3) + (2/3)(2/3) = 5/9, κ = (1/3 − 5/9)/(4/9) = −.5.
    escalated = escalation["escalated"]
    assert escalated["labels"] == 3
    assert escalated["agreement"] == pytest.approx(1 / 3)
    assert escalated["kappa"] == pytest.approx(-0.5)
    assert escalated["agreement_ci_low"] < 1 / 3 < escalated["agreement_ci_high"]
    # The escalation queue's own labels: e2 judge 1 / human 0, e1 judge 1 / human 1.
    queue = escalation["escalation_queue"]
    assert (queue["labels"], queue["agreement"]) == (2, 0.5)
    # The judge said "acceptable" both times: p_e = 1 · .5 = .5 = p_o, κ = 0.
    assert queue["kappa"] == pytest.approx(0.0)
    # At a margin of 0 only the inconsistent verdict is escalated.
    (loose,) = looser.json()["items"]
    assert loose["escalation"]["escalated_verdicts"] == 1
    assert loose["escalation"]["kept"]["labels"] == 6
    assert not math.isnan(loose["escalation"]["kept"]["agreement"])
