"""Human feedback, the blind review queue, reviewer labels and /v1/judge/agreement."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Scope
from shadoweval.config import Settings
from shadoweval.feedback import review
from shadoweval.feedback.models import (
    Feedback,
    ReviewAssignment,
    ReviewChoice,
    ReviewLabel,
    ReviewLabelIn,
)
from shadoweval.feedback.queue import in_review_sample
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.shadow.models import RunKind, ShadowRun, WorkStatus
from tests.conftest import Keys, LiveApi, decision

START = datetime(2026, 11, 27, 8, tzinfo=UTC)
_sequence = count()
# Pairs of the uniform review sample are served by the uniform queue only; judged_pair's
# default ids stay outside the sample at the default probability, so the tests of the
# other modes see every pair whatever the test order.
DEFAULT_REVIEW_PROBABILITY = Settings.model_fields["review_sample_probability"].default


def judged_pair(
    engine: Engine,
    *,
    outcome: str = Outcome.TIE,
    segment: str = "billing",
    direction: str = "forward",
    judge_key: str = "judge-a#h1",
    router: str = "r",
    ts: datetime = START,
    finished_at: datetime | None = None,
    request_id: str | None = None,
    score_delta: float = 0.0,
) -> Verdict:
    """A sampled decision with its payload, shadow answer and a finished verdict."""
    n = next(_sequence)
    while request_id is None and in_review_sample(router, f"pair-{n}", DEFAULT_REVIEW_PROBABILITY):
        n = next(_sequence)
    request_id = request_id or f"pair-{n}"
    forward = direction == "forward"
    routed_tier, routed_model = ("cheap", "cheap-model") if forward else ("strong", "strong-model")
    with Session(engine, expire_on_commit=False) as session:
        row = Decision(
            router=router,
            request_id=request_id,
            ts=ts,
            received_at=ts,
            tier=routed_tier,
            chosen_model=routed_model,
            served_model=routed_model,
            segment={"topic": segment},
            segment_value=segment,
            inclusion_probability=1.0,
            sampled=True,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        routed_text = f"routed answer {n}"
        shadow_text = f"shadow answer {n}"
        session.add(
            DecisionPayload(
                decision_id=row.id,
                request={"messages": [{"role": "user", "content": f"question {n}"}]},
                response={"text": routed_text},
                stored_at=ts,
            )
        )
        session.add(
            ShadowRun(
                decision_id=row.id,
                kind=RunKind.SHADOW,
                direction=direction,
                routed_tier=routed_tier,
                target_tier="strong" if forward else "cheap",
                target_model="strong-model" if forward else "cheap-model",
                ts=ts,
                status=WorkStatus.SUCCEEDED,
                next_attempt_at=ts,
                created_at=ts,
                response_text=shadow_text,
            )
        )
        strong_needed = 1 if outcome == Outcome.STRONGER_WINS else 0
        model, _, prompt_hash = judge_key.partition("#")
        verdict = Verdict(
            decision_id=row.id,
            router=router,
            request_id=request_id,
            ts=ts,
            segment_value=segment,
            routed_tier=routed_tier,
            direction=direction,
            inclusion_probability=1.0,
            cheaper_tier="cheap",
            stronger_tier="strong",
            cheaper_model="cheap-model",
            stronger_model="strong-model",
            judge_key=judge_key,
            judge_model=model,
            prompt_hash=prompt_hash,
            status=VerdictStatus.DONE,
            next_attempt_at=ts,
            created_at=ts,
            finished_at=finished_at or ts,
            outcome=outcome,
            consistent=outcome != Outcome.INCONSISTENT,
            strong_needed=strong_needed,
            cheap_acceptable=1 - strong_needed,
            score_delta=score_delta,
        )
        session.add(verdict)
        session.commit()
        return verdict


def texts_of(verdict: Verdict) -> tuple[str, str]:
    """(cheaper answer, stronger answer) as judged_pair stored them."""
    n = verdict.request_id.removeprefix("pair-")
    routed, shadow = f"routed answer {n}", f"shadow answer {n}"
    return (routed, shadow) if verdict.direction == "forward" else (shadow, routed)


def assignment_of(engine: Engine, token: str) -> ReviewAssignment:
    with Session(engine) as session:
        found = session.get(ReviewAssignment, token)
        assert found is not None
        return found


# --- feedback ------------------------------------------------------------------------------


def test_feedback_stores_valid_items_reports_invalid_ones_and_is_idempotent(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    with live_api.client(keys.ingest) as client:
        assert client.post("/v1/decisions", json=decision("known-1")).status_code == 202
        batch = [
            {"router": "support-router", "request_id": "known-1", "kind": "thumbs", "value": "up"},
            {"router": "support-router", "request_id": "known-1", "kind": "grade", "value": 7},
            {
                "router": "support-router",
                "request_id": "not-logged-yet",
                "kind": "grade",
                "value": 2,
                "source": "reviewer",
                "reviewer": "ann",
                "comment": "misses the refund policy",
            },
            {
                "router": "support-router",
                "request_id": "known-1",
                "kind": "thumbs",
                "value": "down",
                "source": "reviewer",
            },
            "not an object",
        ]
        first = client.post("/v1/feedback", json=batch)
        again = client.post("/v1/feedback", json=batch)
        valid_only = client.post("/v1/feedback", json=[batch[0], batch[2]])

    assert first.status_code == 422
    body = first.json()
    assert (body["stored"], body["duplicates"], body["invalid"]) == (2, 0, 3)
    assert [r["status"] for r in body["results"]] == [
        "stored",
        "invalid",
        "stored",
        "invalid",
        "invalid",
    ]
    assert [r["decision_known"] for r in body["results"][:3:2]] == [True, False]
    errors = {(e["index"], tuple(e["loc"])): e["msg"] for e in body["detail"]}
    assert "integer from 1 to 5" in errors[(1, ())]
    assert "names the reviewer" in errors[(3, ())]
    assert (4, ()) in errors
    # Resending the batch stores nothing twice; the invalid items are still reported.
    assert again.status_code == 422
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 2)
    assert valid_only.status_code == 202
    assert [r["status"] for r in valid_only.json()["results"]] == ["duplicate", "duplicate"]
    assert [r["id"] for r in valid_only.json()["results"]] == [
        body["results"][0]["id"],
        body["results"][2]["id"],
    ]

    with Session(engine) as session:
        rows = session.scalars(select(Feedback).order_by(Feedback.id)).all()  # type: ignore[arg-type]
    assert [(f.request_id, f.kind, f.value, f.acceptable, f.source, f.reviewer) for f in rows] == [
        ("known-1", "thumbs", 1, 1, "end_user", ""),
        ("not-logged-yet", "grade", 2, 0, "reviewer", "ann"),  # 2 < the default cut-off 3
    ]
    assert [f.decision_known for f in rows] == [True, False]
    assert rows[1].comment == "misses the refund policy"


def test_feedback_field_errors_name_the_field(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.ingest) as client:
        response = client.post(
            "/v1/feedback",
            json={"router": "r", "kind": "stars", "value": 3, "surprise": True},
        )
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert {("request_id",), ("kind",), ("surprise",)} <= locs


# --- review queue --------------------------------------------------------------------------


def reviewer_key(engine: Engine, name: str) -> str:
    """An operate key named after its reviewer: a key reviews as itself."""
    with Session(engine) as session:
        return auth_service.create_key(session=session, scopes=[Scope.OPERATE], name=name).key


def test_review_queue_is_blind_and_randomises_the_order_per_reviewer(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    verdict = judged_pair(engine)
    cheaper_text, stronger_text = texts_of(verdict)
    orders = set()
    for i in range(24):
        with live_api.client(reviewer_key(engine, f"rev-{i}")) as client:
            response = client.get("/v1/review/queue")
            assert response.status_code == 200, response.text
            (item,) = response.json()["items"]
            orders.add(tuple(a["text"] for a in item["answers"]))
            # Nothing but the answers' text tells them apart.
            shown = json.dumps({k: v for k, v in item.items() if k != "token"}).lower()
            for hidden in ("cheap", "strong", "tier", "model", "judge", "verdict", "outcome"):
                assert hidden not in shown, hidden
            fields = {"token", "router", "segment", "ts", "system", "messages", "answers"}
            assert set(item) == fields
            assert [a["position"] for a in item["answers"]] == ["A", "B"]
    with live_api.client(reviewer_key(engine, "rev-x")) as client:
        again = client.get("/v1/review/queue").json()["items"][0]
        first = client.get("/v1/review/queue", params={"reviewer": "rev-x"}).json()["items"][0]
    # 24 reviewers with one fair coin each: both orders appear (all alike has p = 2^-23).
    assert orders == {(cheaper_text, stronger_text), (stronger_text, cheaper_text)}
    # The same reviewer sees the same token and order again.
    assert again == first


def test_review_queue_represents_disagreements_inconsistent_pairs_and_every_segment(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    routine = [judged_pair(engine, segment="billing") for _ in range(30)]
    rare_segment = judged_pair(engine, segment="tax")
    inconsistent = judged_pair(engine, outcome=Outcome.INCONSISTENT)
    # The judge says the cheap answer was beaten; its user gave it a thumbs up.
    disagreement = judged_pair(engine, outcome=Outcome.STRONGER_WINS)
    with live_api.client(keys.ingest) as client:
        posted = client.post(
            "/v1/feedback",
            json={
                "router": "r",
                "request_id": disagreement.request_id,
                "kind": "thumbs",
                "value": "up",
            },
        )
        assert posted.status_code == 202
    wanted = {rare_segment.id, inconsistent.id, disagreement.id}
    reviewers = {name: reviewer_key(engine, name) for name in ("ann", "bob", "cyd")}
    for reviewer, key in reviewers.items():
        with live_api.client(key) as client:
            items = client.get("/v1/review/queue", params={"limit": 4}).json()["items"]
            served = {assignment_of(engine, item["token"]).verdict_id for item in items}
            assert len(served) == 4
            assert wanted <= served, reviewer
            assert {item["segment"] for item in items} == {"billing", "tax"}

    # A pair the reviewer labelled is not served to them again, but still to others.
    with live_api.client(reviewers["ann"]) as client:
        token = next(
            item["token"]
            for item in client.get("/v1/review/queue").json()["items"]
            if assignment_of(engine, item["token"]).verdict_id == rare_segment.id
        )
        labelled = client.post(
            "/v1/review/labels", json={"token": token, "reviewer": "ann", "choice": "tie"}
        )
        assert labelled.status_code == 201, labelled.text
        for_ann = client.get("/v1/review/queue", params={"limit": 100})
    with live_api.client(reviewers["bob"]) as client:
        for_bob = client.get("/v1/review/queue", params={"limit": 100})
    ann_ids = {assignment_of(engine, i["token"]).verdict_id for i in for_ann.json()["items"]}
    bob_ids = {assignment_of(engine, i["token"]).verdict_id for i in for_bob.json()["items"]}
    assert rare_segment.id not in ann_ids
    assert len(ann_ids) == len(routine) + 2
    assert rare_segment.id in bob_ids


def test_a_key_cannot_review_or_label_as_someone_else(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    judged_pair(engine)
    ann = reviewer_key(engine, "ann")
    with live_api.client(ann) as client:
        (item,) = client.get("/v1/review/queue").json()["items"]
        queue = client.get("/v1/review/queue", params={"reviewer": "bob"})
        label = client.post(
            "/v1/review/labels", json={"token": item["token"], "reviewer": "bob", "choice": "A"}
        )
        prefix = "_".join(ann.split("_")[:2])
        # The key's prefix names the same reviewer as its name: one key is one reviewer.
        by_prefix = client.get("/v1/review/queue", params={"reviewer": prefix})
    for response in (queue, label):
        assert response.status_code == 403, response.text
        assert response.json()["field"] == "reviewer"
        assert "cannot act as reviewer 'bob'" in response.json()["detail"]
    assert by_prefix.status_code == 200
    with Session(engine) as session:
        assert {a.reviewer for a in session.scalars(select(ReviewAssignment))} == {"ann"}
        assert session.scalars(select(ReviewLabel)).all() == []


def test_labels_map_back_to_the_tier_whatever_order_was_shown(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    forward = judged_pair(engine, outcome=Outcome.STRONGER_WINS)
    reverse = judged_pair(engine, outcome=Outcome.STRONGER_WINS, direction="reverse")
    texts = {forward.id: texts_of(forward), reverse.id: texts_of(reverse)}
    orders_seen = set()
    stranger_key = reviewer_key(engine, "someone-else")
    for i in range(12):
        reviewer = f"rev-{i}"
        with live_api.client(reviewer_key(engine, reviewer)) as client:
            items = client.get("/v1/review/queue").json()["items"]
            assert len(items) == 2
            for item in items:
                verdict_id = assignment_of(engine, item["token"]).verdict_id
                stronger_text = texts[verdict_id][1]
                # Every reviewer prefers the stronger tier's answer, wherever it is shown.
                position = next(
                    a["position"] for a in item["answers"] if a["text"] == stronger_text
                )
                orders_seen.add(position)
                response = client.post(
                    "/v1/review/labels",
                    json={"token": item["token"], "reviewer": reviewer, "choice": position},
                )
                assert response.status_code == 201, response.text
                assert response.json()["status"] == "stored"
                duplicate = client.post(
                    "/v1/review/labels",
                    json={"token": item["token"], "reviewer": reviewer, "choice": "tie"},
                )
                assert duplicate.status_code == 200
                assert duplicate.json()["status"] == "duplicate"
                assert duplicate.json()["choice"] == position  # the first label is kept
                with live_api.client(stranger_key) as stranger_client:
                    stranger = stranger_client.post(
                        "/v1/review/labels", json={"token": item["token"], "choice": "A"}
                    )
                assert stranger.status_code == 404
                assert stranger.json()["field"] == "token"

    assert orders_seen == {"A", "B"}
    with Session(engine) as session:
        labels = session.scalars(select(ReviewLabel)).all()
    assert len(labels) == 24
    assert {(label.verdict_id, label.label) for label in labels} == {
        (forward.id, "stronger"),
        (reverse.id, "stronger"),
    }
    assert {label.presented_order for label in labels} == {"cheaper_first", "stronger_first"}
    # Served answer: the cheaper one on the forward pair (beaten), the stronger on the reverse.
    served = {(label.verdict_id, label.served_acceptable) for label in labels}
    assert served == {(forward.id, 0), (reverse.id, 1)}


# --- agreement -----------------------------------------------------------------------------


def test_agreement_equals_the_hand_computed_kappa_per_judge(
    live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    # (direction, judge outcome, human says served answer acceptable, how the human said it)
    # Judge "served acceptable": forward pairs unless stronger wins; reverse unless cheaper wins.
    plan = [
        ("forward", Outcome.TIE, 1, "thumbs"),  # judge 1, human 1
        ("forward", Outcome.CHEAPER_WINS, 1, "grade"),  # judge 1, human 1
        ("reverse", Outcome.STRONGER_WINS, 1, "label"),  # judge 1, human 1
        ("forward", Outcome.INCONSISTENT, 1, "label"),  # judge 1, human 1
        ("forward", Outcome.TIE, 0, "label"),  # judge 1, human 0 (both bad)
        ("forward", Outcome.STRONGER_WINS, 1, "thumbs"),  # judge 0, human 1
        ("reverse", Outcome.CHEAPER_WINS, 1, "grade"),  # judge 0, human 1
        ("forward", Outcome.STRONGER_WINS, 0, "thumbs"),  # judge 0, human 0
        ("reverse", Outcome.CHEAPER_WINS, 0, "grade"),  # judge 0, human 0
        ("forward", Outcome.STRONGER_WINS, 0, "label"),  # judge 0, human 0
    ]
    verdicts = [judged_pair(engine, outcome=o, direction=d) for d, o, _, _ in plan]
    # A second judge on other pairs, in full agreement with its humans.
    other = [
        judged_pair(engine, outcome=o, judge_key="judge-b#h2")
        for o in (Outcome.TIE, Outcome.STRONGER_WINS, Outcome.CHEAPER_WINS)
    ]
    feedback: list[dict[str, object]] = []
    for verdict, (_, _, human, how) in zip(verdicts, plan, strict=True):
        if how == "thumbs":
            feedback.append({"kind": "thumbs", "value": "up" if human else "down"})
        elif how == "grade":
            feedback.append({"kind": "grade", "value": 5 if human else 1})
        else:
            continue
        feedback[-1].update(router="r", request_id=verdict.request_id)
    feedback += [
        {"router": "r", "request_id": v.request_id, "kind": "thumbs", "value": value}
        for v, value in zip(other, ("up", "down", "up"), strict=True)
    ]
    with live_api.client(keys.ingest) as client:
        assert client.post("/v1/feedback", json=feedback).status_code == 202

    # Reviewer labels through the blind queue: the served answer better, or both bad.
    with Session(engine) as session:
        queue = review.review_queue(
            session=session, reviewer="ann", limit=100, rng=random.Random(3)
        )
        for item in queue.items:
            verdict_id = assignment_of(engine, item.token).verdict_id
            index = next((i for i, v in enumerate(verdicts) if v.id == verdict_id), None)
            if index is None or plan[index][3] != "label":
                continue
            direction, _, human, _ = plan[index]
            cheaper_text, stronger_text = texts_of(verdicts[index])
            served_text = cheaper_text if direction == "forward" else stronger_text
            position = next(a.position for a in item.answers if a.text == served_text)
            choice = ReviewChoice(position) if human else ReviewChoice.BOTH_BAD
            review.store_label(
                session=session,
                label=ReviewLabelIn(token=item.token, choice=choice),
                reviewer="ann",
            )

    with live_api.client(keys.read) as client:
        response = client.get("/v1/judge/agreement", params={"router": "r"})
        later = client.get(
            "/v1/judge/agreement", params={"since": (START + timedelta(days=1)).isoformat()}
        )
    assert response.status_code == 200, response.text
    first, second = response.json()["items"]
    # Judge × human: [[4, 1], [2, 3]] over n = 10; p_o = .7, p_e = .5·.6 + .5·.4 = .5, κ = .4.
    # Var = [.4(1 − 1.1·.6)² + .3(1 − .9·.6)² + .36(.1·1.1² + .2·.9²) − .1²] / (10 · .25)
    #     = .2016 / 2.5 = .08064
    assert (first["judge_model"], first["prompt_hash"]) == ("judge-a", "h1")
    assert (first["n"], first["verdicts"]) == (10, 10)
    assert (first["from_review_labels"], first["from_feedback"]) == (4, 6)
    assert first["observed_agreement"] == pytest.approx(0.7)
    assert first["expected_agreement"] == pytest.approx(0.5)
    assert first["kappa"] == pytest.approx(0.4)
    assert first["kappa_std_error"] == pytest.approx(math.sqrt(0.08064))
    assert first["kappa_ci_low"] == pytest.approx(0.4 - 1.959964 * math.sqrt(0.08064), abs=1e-5)
    assert first["kappa_ci_high"] == pytest.approx(0.4 + 1.959964 * math.sqrt(0.08064), abs=1e-5)
    assert (first["judge_acceptable_rate"], first["human_acceptable_rate"]) == (0.5, 0.6)
    assert (second["judge_key"], second["n"], second["kappa"]) == ("judge-b#h2", 3, 1.0)
    assert later.json()["items"] == []


def test_old_disagreements_and_inconsistent_pairs_are_found_beyond_the_newest_pairs(
    live_api: LiveApi, keys: Keys, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review, "QUEUE_CANDIDATES", 3)
    inconsistent = judged_pair(engine, outcome=Outcome.INCONSISTENT)
    disagreement = judged_pair(engine, outcome=Outcome.TIE)
    for _ in range(10):
        judged_pair(engine)
    with live_api.client(keys.ingest) as client:
        body = {"router": "r", "request_id": disagreement.request_id, "kind": "grade", "value": 1}
        assert client.post("/v1/feedback", json=body).status_code == 202
    with live_api.client(keys.operate) as client:
        items = client.get("/v1/review/queue", params={"limit": 3}).json()
    served = {assignment_of(engine, item["token"]).verdict_id for item in items["items"]}
    assert {inconsistent.id, disagreement.id} <= served


# --- deletion ------------------------------------------------------------------------------


def add_feedback(session: Session, request_id: str, router: str = "r") -> None:
    session.add(
        Feedback(
            router=router,
            request_id=request_id,
            kind="thumbs",
            value=1,
            acceptable=1,
            source="end_user",
            created_at=START,
        )
    )
