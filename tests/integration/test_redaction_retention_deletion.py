"""Redaction before writing, payload retention, and deletion that leaves nothing behind."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval import retention
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.feedback.models import Feedback, ReviewAssignment, ReviewLabel
from shadoweval.gate.models import GateItem, GateRun
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.judge.models import Verdict
from shadoweval.shadow import service as shadow_service
from shadoweval.shadow.models import ShadowRun
from tests.conftest import Keys, LiveApi, decision


def store(engine: Engine, settings: Settings, items: list[dict[str, object]]) -> None:
    with Session(engine) as session:
        ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items)
        )


def count(engine: Engine, table: type) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_redacted_payloads_are_stored_redacted_and_not_shadowed(
    engine: Engine, base_settings: Settings
) -> None:
    settings = base_settings.model_copy(
        update={
            "store_payloads": "all",
            "sampling_rate_by_tier": {"cheap": 1.0},
            "tier_models": {"*": {"cheap": "a", "strong": "b"}},
        }
    )
    leaky = decision(
        "leak", request={"messages": [{"role": "user", "content": "I'm bob@corp.com"}]}
    )
    store(engine, settings, [leaky, decision("clean")])

    with Session(engine, expire_on_commit=False) as session:
        rows = {d.request_id: d for d in session.scalars(select(Decision))}
        payload = session.get(DecisionPayload, rows["leak"].id)
        result = shadow_service.enqueue_sampled_decisions(
            session=session, settings=settings, price_per_mtok=lambda _m: None
        )
    assert rows["leak"].payload_redacted
    assert not rows["clean"].payload_redacted
    assert payload is not None
    assert payload.request == {"messages": [{"role": "user", "content": "I'm [REDACTED:email]"}]}
    # Nothing readable was written anywhere.
    with engine.connect() as connection:
        dump = " ".join(str(r) for r in connection.execute(text("SELECT * FROM decision_payload")))
    assert "bob@corp.com" not in dump
    assert result.skipped == {"redacted": 1}
    assert result.enqueued == 1


def test_expired_payloads_are_purged(engine: Engine, base_settings: Settings) -> None:
    settings = base_settings.model_copy(update={"store_payloads": "all"})
    store(engine, settings, [decision(f"p-{i}") for i in range(5)])
    assert retention.purge_expired_payloads(engine, retention_days=30) == 0
    later = utcnow() + timedelta(days=31)
    assert retention.purge_expired_payloads(engine, retention_days=30, now=later) == 5
    assert count(engine, DecisionPayload) == 0
    with Session(engine) as session:
        assert not any(d.payload_stored for d in session.scalars(select(Decision)))


def attach_gate_items_and_reviews(engine: Engine, request_ids: list[str]) -> None:
    """A gate replay and a reviewer's assignment and label on each named decision: rows
    that go by ON DELETE CASCADE (from the decision, and from its verdict)."""
    now = utcnow()
    with Session(engine) as session:
        run = GateRun(
            router="support-router",
            candidate_model="c",
            replaced_model="a",
            sample_size=len(request_ids),
            max_drop=0.05,
            alpha=0.05,
            next_attempt_at=now,
            created_at=now,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        for request_id in request_ids:
            found = session.scalars(select(Decision).where(Decision.request_id == request_id))
            chosen = found.one()
            assert chosen.id is not None
            verdict_id = session.scalars(
                select(Verdict.id).where(Verdict.decision_id == chosen.id)
            ).one()
            assert verdict_id is not None
            session.add(
                GateItem(
                    gate_run_id=run.id,
                    decision_id=chosen.id,
                    request_id=request_id,
                    segment_value=chosen.segment_value,
                    next_attempt_at=now,
                    candidate_answer="the candidate's answer",
                )
            )
            session.add(
                ReviewAssignment(
                    token=f"t-{request_id}",
                    verdict_id=verdict_id,
                    reviewer="r",
                    presented_order="cheaper_first",
                    created_at=now,
                )
            )
            session.add(
                ReviewLabel(
                    verdict_id=verdict_id,
                    reviewer="r",
                    choice="A",
                    presented_order="cheaper_first",
                    label="cheaper",
                    served_acceptable=1,
                    created_at=now,
                )
            )
        session.commit()


def test_deletion_by_request_segment_or_router_leaves_nothing_behind(
    engine: Engine, base_settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    settings = base_settings.model_copy(
        update={
            "store_payloads": "all",
            "sampling_rate_by_tier": {"cheap": 1.0},
            "tier_models": {"*": {"cheap": "a", "strong": "b"}},
        }
    )
    store(
        engine,
        settings,
        [
            decision("keep", segment={"topic": "chat"}),
            decision("one", segment={"topic": "chat"}),
            decision("seg-1", segment={"topic": "legal"}),
            decision("seg-2", segment={"topic": "legal"}),
            decision("other", router="other-router"),
        ],
    )
    with Session(engine) as session:
        shadow_service.enqueue_sampled_decisions(
            session=session, settings=settings, price_per_mtok=lambda _m: None
        )
    assert count(engine, ShadowRun) == 5

    # Human feedback is keyed by (router, request_id): it must go with its decision.
    with live_api.client(keys.ingest) as ingest:
        for router, request_id in (
            ("support-router", "keep"),
            ("support-router", "one"),
            ("support-router", "seg-1"),
            ("other-router", "other"),
        ):
            answer = ingest.post(
                "/v1/feedback",
                json={
                    "router": router,
                    "request_id": request_id,
                    "kind": "thumbs",
                    "value": "down",
                    "comment": "my phone number is in there",
                },
            )
            assert answer.status_code in (200, 201, 202), answer.text
    assert count(engine, Feedback) == 4
    attach_gate_items_and_reviews(engine, ["keep", "one"])

    with live_api.client(keys.admin) as admin:
        by_request = admin.delete(
            "/v1/decisions", params={"router": "support-router", "request_id": "one"}
        ).json()
        by_segment = admin.delete("/v1/decisions", params={"segment": "legal"}).json()
        by_router = admin.delete("/v1/decisions", params={"router": "other-router"}).json()
        nothing_named = admin.delete("/v1/decisions")
    assert by_request == {
        "decisions": 1,
        "payloads": 1,
        "shadow_runs": 1,
        "verdicts": 1,
        "feedback": 1,
        "gate_items": 1,
    }
    assert by_segment["feedback"] == 1
    assert by_router["feedback"] == 1
    assert by_segment["decisions"] == 2
    assert by_router["decisions"] == 1
    assert nothing_named.status_code == 400
    with Session(engine) as session:
        assert [d.request_id for d in session.scalars(select(Decision))] == ["keep"]
    assert (count(engine, DecisionPayload), count(engine, ShadowRun), count(engine, Verdict)) == (
        1,
        1,
        1,
    )
    with Session(engine) as session:
        assert [f.request_id for f in session.scalars(select(Feedback))] == ["keep"]
        assert [g.request_id for g in session.scalars(select(GateItem))] == ["keep"]
        kept_verdicts = list(session.scalars(select(Verdict.id)))
        for model in (ReviewAssignment, ReviewLabel):
            assert [r.verdict_id for r in session.scalars(select(model))] == kept_verdicts


def test_payload_only_deletion_keeps_the_decision(
    engine: Engine, base_settings: Settings, live_api: LiveApi, keys: Keys
) -> None:
    store(engine, base_settings.model_copy(update={"store_payloads": "all"}), [decision("pii")])
    with live_api.client(keys.admin) as admin:
        result = admin.delete(
            "/v1/decisions", params={"request_id": "pii", "payloads_only": True}
        ).json()
    assert result["payloads"] == 1
    assert count(engine, DecisionPayload) == 0
    assert count(engine, Decision) == 1
