"""Batch mode's pure value builders on small inputs (no database, no provider)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shadoweval.config import Settings
from shadoweval.judge.models import OrderResult
from shadoweval.providers.base import BatchItemResult, Completion, ProviderError
from shadoweval.shadow.batch_values import (
    judge_items,
    order_from,
    run_values,
    shadow_items,
    unadopted,
)
from shadoweval.shadow.models import BATCH_HOLD, BatchState, WorkStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(work_max_attempts=3)


def completion(structured: dict[str, object] | None = None, cost: float = 0.01) -> Completion:
    return Completion(
        text="ok",
        served_model="m",
        provider="anthropic",
        input_tokens=100,
        output_tokens=20,
        cost_usd=cost,
        structured=structured,
    )


def test_shadow_items_name_each_run() -> None:
    assert shadow_items("se-t", [4, 7]) == [
        {"custom_id": "se-t-r4", "item_id": 4},
        {"custom_id": "se-t-r7", "item_id": 7},
    ]


def test_judge_items_skip_settled_orders_and_follow_verdict_ids() -> None:
    settled = {"winner": "A"}
    items = judge_items("se-t", [(9, None, None), (3, settled, {"winner": None})])
    assert [item["custom_id"] for item in items] == ["se-t-v3-s", "se-t-v9-c", "se-t-v9-s"]
    assert items[0] == {"custom_id": "se-t-v3-s", "item_id": 3, "order": "order_stronger_first"}


def test_unadopted_rejects_the_id_once_and_frees_the_row() -> None:
    values = unadopted(("b-1",), "b-2", NOW)
    assert values["state"] == BatchState.SUBMITTING
    assert values["rejected_provider_ids"] == ["b-1", "b-2"]
    assert values["provider_batch_id"] is None
    assert values["lease_owner"] is None
    assert unadopted(None, "b-1", NOW)["rejected_provider_ids"] == ["b-1"]
    assert unadopted(["b-1"], "b-1", NOW)["rejected_provider_ids"] == ["b-1"]


def test_a_missing_item_goes_into_another_batch_until_attempts_run_out() -> None:
    outcome, values = run_values(None, 1, SETTINGS, NOW, "missing from the batch results")
    assert outcome == "missing_retried"
    assert values["status"] == WorkStatus.QUEUED
    assert values["next_attempt_at"] == BATCH_HOLD
    assert values["failure_detail"] == "missing from the batch results"
    outcome, values = run_values(None, 3, SETTINGS, NOW, "missing from the batch results")
    assert outcome == "missing_failed"
    assert values["status"] == WorkStatus.FAILED


def test_an_expired_item_is_retried_a_refused_one_fails() -> None:
    expired = BatchItemResult("se-t-r1", "expired")
    outcome, values = run_values(expired, 1, SETTINGS, NOW, "-")
    assert (outcome, values["failure_reason"]) == ("expired_retried", "batch_expired")
    refused = ProviderError("refused", reason="refused", provider="anthropic")
    outcome, values = run_values(
        BatchItemResult("se-t-r1", "succeeded", error=refused), 1, SETTINGS, NOW, "-"
    )
    assert outcome == "succeeded_failed"
    assert values["status"] == WorkStatus.FAILED


def test_a_completed_item_succeeds_with_its_batch_price() -> None:
    outcome, values = run_values(
        BatchItemResult("se-t-r1", "succeeded", completion=completion(cost=0.02)),
        1,
        SETTINGS,
        NOW,
        "-",
    )
    assert outcome == "succeeded"
    assert values["status"] == WorkStatus.SUCCEEDED
    assert values["cost_usd"] == pytest.approx(0.02)


def test_order_from_parses_the_verdict_and_adds_up_tokens_and_cost() -> None:
    previous = OrderResult(attempts=1, input_tokens=50, cost_usd=0.005)
    verdict = {"winner": "B", "score_a": 3, "score_b": 8, "reasoning": "B is right"}
    order, failure = order_from(
        previous, BatchItemResult("x", "succeeded", completion=completion(verdict))
    )
    assert failure is None
    assert order is not None
    assert (order.winner, order.score_a, order.score_b) == ("B", 3, 8)
    assert order.attempts == 2
    assert order.input_tokens == 150
    assert order.cost_usd == pytest.approx(0.015)


def test_order_from_keeps_an_unparseable_answer_as_an_attempt() -> None:
    order, failure = order_from(
        OrderResult(), BatchItemResult("x", "succeeded", completion=completion({"winner": "C"}))
    )
    assert failure is None
    assert order is not None
    assert order.winner is None
    assert order.attempts == 1
    assert order.error is not None
    assert order.error.startswith("invalid_winner")


def test_order_from_reports_a_transport_failure_without_an_order() -> None:
    error = ProviderError("overloaded", reason="overloaded", provider="anthropic")
    assert order_from(OrderResult(), BatchItemResult("x", "errored", error=error)) == (None, error)
