"""GET /v1/review/queue?mode=uniform: the uniform review sample, and PPI reading only its
labels, on both databases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import snapshots
from shadoweval.feedback.models import ReviewLabel
from shadoweval.feedback.queue import in_review_sample, review_draw
from shadoweval.ingest.models import DecisionPayload
from shadoweval.judge.models import Outcome, Verdict
from shadoweval.stats.ppi import ppi_harm_rate
from tests.conftest import Keys, LiveApi, use_settings
from tests.integration.test_feedback import assignment_of, judged_pair, reviewer_key, texts_of

PROBABILITY = 0.3


def draw_order(verdicts: list[Verdict]) -> list[int]:
    """The ids of the pairs in the uniform review sample, lowest draw first."""
    sampled = [v for v in verdicts if in_review_sample(v.router, v.request_id, PROBABILITY)]
    ordered = sorted(sampled, key=lambda v: review_draw(v.router, v.request_id))
    return [v.id for v in ordered if v.id is not None]


def test_uniform_review_queue_serves_exactly_the_review_sample_in_draw_order(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    use_settings(live_api, review_sample_probability=PROBABILITY)
    pairs = [
        judged_pair(
            engine,
            segment=("billing", "tax")[i % 2],
            direction=("forward", "reverse")[i % 3 == 0],
            outcome=(Outcome.TIE, Outcome.STRONGER_WINS, Outcome.INCONSISTENT)[i % 3],
        )
        for i in range(40)
    ]
    elsewhere = [judged_pair(engine, router="other") for _ in range(10)]
    expected = draw_order(pairs)
    assert 4 <= len(expected) <= 25
    # A pair whose payload was purged has no answers to show: skipped, as in stratified mode.
    purged = draw_order(elsewhere + pairs)[1]
    with Session(engine) as session:
        verdict = session.get(Verdict, purged)
        assert verdict is not None
        payload = session.get(DecisionPayload, verdict.decision_id)
        assert payload is not None
        session.delete(payload)
        session.commit()
    everything = [i for i in draw_order(elsewhere + pairs) if i != purged]
    expected = [i for i in expected if i != purged]

    ann = reviewer_key(engine, "ann")
    with live_api.client(ann) as client:
        response = client.get(
            "/v1/review/queue", params={"mode": "uniform", "router": "r", "limit": 100}
        )
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        served = [assignment_of(engine, item["token"]).verdict_id for item in items]
        # Exactly the router's judged pairs in the sample, lowest draw first.
        assert served == expected
        # Blind as the stratified queue: same item shape, nothing but the texts differ.
        for item in items:
            assert set(item) == {
                "token",
                "router",
                "segment",
                "ts",
                "system",
                "messages",
                "answers",
            }
            assert [a["position"] for a in item["answers"]] == ["A", "B"]
            shown = json.dumps({k: v for k, v in item.items() if k != "token"}).lower()
            for hidden in ("cheap", "strong", "tier", "model", "judge", "verdict", "outcome"):
                assert hidden not in shown, hidden
        # Every router: the whole sample; a short page is its head, with the same tokens.
        all_routers = client.get("/v1/review/queue", params={"mode": "uniform", "limit": 100})
        assert [
            assignment_of(engine, item["token"]).verdict_id for item in all_routers.json()["items"]
        ] == everything
        head = client.get("/v1/review/queue", params={"mode": "uniform", "router": "r", "limit": 2})
        assert [item["token"] for item in head.json()["items"]] == [
            item["token"] for item in items[:2]
        ]
        # A pair ann labelled is not served to her again.
        labelled = client.post(
            "/v1/review/labels", json={"token": items[0]["token"], "choice": "tie"}
        )
        assert labelled.status_code == 201, labelled.text
        after = client.get(
            "/v1/review/queue", params={"mode": "uniform", "router": "r", "limit": 100}
        )
        assert [
            assignment_of(engine, item["token"]).verdict_id for item in after.json()["items"]
        ] == expected[1:]
        # Stratified (the default, and by name): every unlabelled pair outside the sample;
        # the sample's pairs are the uniform queue's alone, so its labelled part stays random.
        default = client.get("/v1/review/queue", params={"router": "r", "limit": 100})
        by_name = client.get(
            "/v1/review/queue", params={"mode": "stratified", "router": "r", "limit": 100}
        )
        unknown = client.get("/v1/review/queue", params={"mode": "random"})
    unlabelled = {v.id for v in pairs} - set(draw_order(pairs)) - {purged}
    for response in (default, by_name):
        assert response.status_code == 200, response.text
        ids = {assignment_of(engine, item["token"]).verdict_id for item in response.json()["items"]}
        assert ids == unlabelled
    assert unknown.status_code == 422
    # Another reviewer still gets the whole sample.
    with live_api.client(reviewer_key(engine, "bob")) as client:
        for_bob = client.get(
            "/v1/review/queue", params={"mode": "uniform", "router": "r", "limit": 100}
        )
    assert [
        assignment_of(engine, item["token"]).verdict_id for item in for_bob.json()["items"]
    ] == expected


def test_ppi_reads_uniform_review_labels_and_ignores_stratified_ones_outside_the_sample(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    use_settings(live_api, review_sample_probability=PROBABILITY)
    # The judge calls one pair in five harmful; the reviewer will call every one harmful.
    pairs = [
        judged_pair(engine, outcome=Outcome.STRONGER_WINS if i % 5 == 0 else Outcome.TIE)
        for i in range(40)
    ]
    snapshots.aggregate_finished_verdicts(engine)
    by_id = {v.id: v for v in pairs}
    in_sample = set(draw_order(pairs))
    assert 4 <= len(in_sample) <= 25

    def ppi() -> dict[str, object]:
        with live_api.client(keys.read) as client:
            response = client.get("/v1/segments")
            assert response.status_code == 200, response.text
            (row,) = response.json()
        return dict(row["ppi"])

    def harm(item: dict[str, object], verdict: Verdict) -> dict[str, object]:
        """A label choosing the stronger answer: the cheap answer served was harmful."""
        _, stronger = texts_of(verdict)
        answers = item["answers"]
        assert isinstance(answers, list)
        position = next(a["position"] for a in answers if a["text"] == stronger)
        return {"token": item["token"], "choice": position}

    before = ppi()
    assert before["human_labels"] == 0
    ann = reviewer_key(engine, "ann")
    with live_api.client(ann) as client:
        # The stratified queue's label on a pair outside the sample: PPI does not move.
        stratified = client.get("/v1/review/queue", params={"limit": 100}).json()["items"]
        item = next(
            i for i in stratified if assignment_of(engine, i["token"]).verdict_id not in in_sample
        )
        verdict = by_id[assignment_of(engine, item["token"]).verdict_id]
        assert client.post("/v1/review/labels", json=harm(item, verdict)).status_code == 201
    assert ppi() == before

    with live_api.client(ann) as client:
        uniform = client.get("/v1/review/queue", params={"mode": "uniform", "limit": 100})
        items = uniform.json()["items"]
        assert {assignment_of(engine, i["token"]).verdict_id for i in items} == in_sample
        for item in items:
            verdict = by_id[assignment_of(engine, item["token"]).verdict_id]
            posted = client.post("/v1/review/labels", json=harm(item, verdict))
            assert posted.status_code == 201, posted.text
    after = ppi()
    assert after["human_labels"] == len(in_sample)
    judge = np.array([v.strong_needed for v in pairs])
    sampled = np.array([v.id in in_sample for v in pairs]).astype(int)
    expected = ppi_harm_rate(judge, 1.0, sampled, PROBABILITY, sampled)
    assert after["estimate"] == pytest.approx(expected.estimate)
    assert after["ci_low"] == pytest.approx(expected.ci_low)
    assert after["judge_bias"] == pytest.approx(expected.judge_bias)
    assert isinstance(after["judge_bias"], float)
    assert after["judge_bias"] < 0  # the judge misses the harm the reviewer sees
    assert isinstance(after["estimate"], float)
    assert after["estimate"] > judge.mean()


def test_ppi_reads_only_labels_the_uniform_queue_served(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    """Labels on pairs of the sample count only when the uniform queue served them: not
    when the serving queue is unknown (labels older than migration 0020), nor when another
    queue served the pair (possible after the sample probability was raised)."""
    use_settings(live_api, review_sample_probability=PROBABILITY)
    pairs = [judged_pair(engine, outcome=Outcome.TIE) for _ in range(30)]
    snapshots.aggregate_finished_verdicts(engine)
    in_sample = draw_order(pairs)
    assert len(in_sample) >= 3

    def human_labels() -> int:
        with live_api.client(keys.read) as client:
            (row,) = client.get("/v1/segments").json()
        return int(row["ppi"]["human_labels"])

    with live_api.client(reviewer_key(engine, "ann")) as client:
        items = client.get("/v1/review/queue", params={"mode": "uniform", "limit": 100})
        for item in items.json()["items"]:
            posted = client.post("/v1/review/labels", json={"token": item["token"], "choice": "A"})
            assert posted.status_code == 201, posted.text
    assert human_labels() == len(in_sample)
    for queue in (None, "stratified", "escalated", "uniform"):
        with Session(engine) as session:
            session.execute(update(ReviewLabel).values(queue=queue))
            session.commit()
        assert human_labels() == (len(in_sample) if queue == "uniform" else 0), queue
