"""Every row the training export builds validates against its documented model (no field
missing, none undocumented), and the OpenAPI document names those models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError

from shadoweval.judge.service import JudgeIdentity
from shadoweval.pool import export
from shadoweval.pool.export_schema import RoutellmBattle, ThresholdAdvice, TrainingPair
from shadoweval.pool.router import router as pool_router
from shadoweval.shadow.models import RunKind

JUDGE = JudgeIdentity("gpt-5", "abc123")
ORDER = {
    "winner": "B",
    "score_a": 4,
    "score_b": 8,
    "rationale": "B is right",
    "error": None,
    "attempts": 1,
    "input_tokens": 900,
    "output_tokens": 60,
    "cache_read_tokens": 400,
    "cache_write_tokens": 0,
    "cost_usd": 0.0012,
    "latency_ms": 800.0,
}


def verdict(**changes: Any) -> SimpleNamespace:
    """A joined verdict + decision row as export.iter_pairs selects it."""
    row: dict[str, Any] = {
        "id": 7,
        "decision_id": 70,
        "router": "support",
        "request_id": "req-7",
        "ts": datetime(2026, 11, 27, 12, tzinfo=UTC),
        "segment_value": "billing",
        "routed_tier": "cheap",
        "direction": "forward",
        "cheaper_tier": "cheap",
        "stronger_tier": "strong",
        "cheaper_model": "claude-haiku-4-5",
        "stronger_model": "claude-sonnet-4-6",
        "outcome": "stronger_wins",
        "consistent": True,
        "strong_needed": 1,
        "cheap_acceptable": 0,
        "judge_model": JUDGE.model,
        "prompt_hash": JUDGE.prompt_hash,
        "judge_key": JUDGE.key,
        "order_cheaper_first": JUDGE.stamp({**ORDER, "batch": "jb-1"}),
        # Stored before cache writes were recorded (migration 0021).
        "order_stronger_first": JUDGE.stamp({**ORDER, "winner": "A", "cache_write_tokens": None}),
        "score_cheaper": 4.0,
        "score_stronger": 8.0,
        "score_delta": 4.0,
        "router_score": 0.7,
        "score_semantics": "p_strong_needed",
        "inclusion_probability": 0.05,
        "simulated": False,
        "router_version": "v3",
        "segment": {"topic": "billing"},
        "threshold": 0.5,
        "cost_usd": 0.0004,
    }
    row.update(changes)
    return SimpleNamespace(**row)


PAYLOAD = {
    "request": {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Refund?"}]}],
        "system": "Be brief.",
    },
    "response": {"text": "No."},
}
RUNS = {RunKind.SHADOW: export.judge_answers.RunAnswer("Yes, within 30 days.", 0.003)}
ADVICE = ThresholdAdvice(
    recommended_threshold=0.42,
    change="lower",
    threshold_in_force=0.5,
    harm_budget=0.05,
    delta=0.1,
    window_until="2026-11-27T12:00:00+00:00",
    labels=120,
).model_dump(mode="json")


def exported(row: SimpleNamespace, payload: Any = PAYLOAD, runs: Any = RUNS) -> dict[str, Any]:
    # Through JSON, as a client reads the line.
    return dict(json.loads(json.dumps(export._pair(row, row, payload, runs))))


@pytest.mark.parametrize(
    ("row", "payload", "runs", "advice"),
    [
        (verdict(), PAYLOAD, RUNS, ADVICE),
        (verdict(), PAYLOAD, RUNS, None),
        # A reverse pair whose payload was purged: no conversation, no routed answer.
        (
            verdict(direction="reverse", outcome="tie", strong_needed=0, cheap_acceptable=1),
            None,
            {},
            None,
        ),
        (verdict(consistent=False, outcome="inconsistent", router_score=None), PAYLOAD, RUNS, None),
    ],
)
def test_every_jsonl_and_routellm_row_validates(
    row: SimpleNamespace, payload: Any, runs: Any, advice: dict[str, Any] | None
) -> None:
    line = exported(row, payload, runs)
    line["threshold_advice"] = advice
    pair = TrainingPair.model_validate(line)
    assert pair.model_dump(mode="json", exclude_unset=True).keys() == line.keys()
    RoutellmBattle.model_validate(json.loads(json.dumps(export.routellm_row(line))))


def test_a_row_with_an_undocumented_field_or_wrong_label_does_not_validate() -> None:
    line = exported(verdict())
    with pytest.raises(ValidationError):
        TrainingPair.model_validate({**line, "surprise": 1})
    with pytest.raises(ValidationError):
        TrainingPair.model_validate({**line, "winner": "model_c"})
    with pytest.raises(ValidationError):
        TrainingPair.model_validate({k: v for k, v in line.items() if k != "weight"})


def test_the_openapi_document_names_the_row_models() -> None:
    app = FastAPI()
    app.include_router(pool_router)
    document = get_openapi(title="t", version="1", routes=app.routes)
    answer = document["paths"]["/v1/exports/training"]["get"]["responses"]["200"]["content"]
    refs = {ref["$ref"] for ref in answer["application/x-ndjson"]["schema"]["anyOf"]}
    assert refs == {
        "#/components/schemas/TrainingPair",
        "#/components/schemas/RoutellmBattle",
    }
    assert "notdiamond" in answer["text/csv"]["schema"]["description"]
    schemas = document["components"]["schemas"]
    assert set(schemas["TrainingPair"]["properties"]) == set(TrainingPair.model_fields)
    assert schemas["TrainingPair"]["additionalProperties"] is False
