"""Pure value builders of batch mode: the custom ids of a batch's items, and the column
values a batch item's result writes to its shadow run or verdict. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shadoweval.config import Settings
from shadoweval.judge import pricing as judge_pricing
from shadoweval.judge import service as judge_service
from shadoweval.judge.models import OrderResult, VerdictStatus
from shadoweval.judge.parsing import VerdictParseError, parse_verdict
from shadoweval.providers.base import BatchItemResult, ProviderError
from shadoweval.providers.pricing import ModelPrice
from shadoweval.shadow import service as shadow_service
from shadoweval.shadow.batch_rows import ORDER_CODES
from shadoweval.shadow.models import BATCH_HOLD, BatchState, WorkStatus


def shadow_items(tag: str, run_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The items of a shadow batch: one per run, `<tag>-r<run id>`."""
    return [{"custom_id": f"{tag}-r{run_id}", "item_id": run_id} for run_id in run_ids]


def judge_items(
    tag: str, stored_orders: Sequence[tuple[int, dict[str, Any] | None, dict[str, Any] | None]]
) -> list[dict[str, Any]]:
    """The items of a judge batch from (verdict id, stored cheaper-first order, stored
    stronger-first order), in verdict id order: one per order without a winner yet,
    `<tag>-v<verdict id>-c|s` (a settled order is never paid twice)."""
    items: list[dict[str, Any]] = []
    for verdict_id, cheaper_first, stronger_first in sorted(stored_orders, key=lambda r: r[0]):
        stored = {"order_cheaper_first": cheaper_first, "order_stronger_first": stronger_first}
        for order, code in ORDER_CODES.items():
            if not (stored[order] or {}).get("winner"):
                items.append(
                    {
                        "custom_id": f"{tag}-v{verdict_id}-{code}",
                        "item_id": verdict_id,
                        "order": order,
                    }
                )
    return items


def item_judge(item: Mapping[str, Any]) -> judge_service.JudgeIdentity | None:
    """The judge a judge batch item was sent to (None: not stamped yet)."""
    return judge_service.order_judge(dict(item))


def unadopted(
    rejected: Sequence[str] | None, provider_batch_id: str, now: datetime
) -> dict[str, Any]:
    """Values that put a row back to `submitting` after a wrong adoption."""
    return {
        "state": BatchState.SUBMITTING,
        "provider_batch_id": None,
        "provider_status": None,
        "submitted_at": None,
        "next_check_at": now,
        "lease_owner": None,
        "lease_until": None,
        "rejected_provider_ids": sorted({*(rejected or []), provider_batch_id}),
    }


def retry_or_fail(failure: ProviderError | None, attempts: int, settings: Settings) -> bool:
    """Whether an item that did not succeed goes into another batch."""
    if attempts >= settings.work_max_attempts:
        return False
    return failure is None or failure.worth_requeueing


def requeued(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": WorkStatus.QUEUED,
        "lease_owner": None,
        "lease_until": None,
        "next_attempt_at": BATCH_HOLD,
        **values,
    }


def run_values(
    result: BatchItemResult | None,
    attempts: int,
    settings: Settings,
    now: datetime,
    missing_detail: str,
) -> tuple[str, dict[str, Any]]:
    """(outcome, column values) of one shadow run from its batch item."""
    if result is not None and result.completion is not None:
        # A batch has a turnaround, not a per-call latency.
        return "succeeded", shadow_service.succeeded_run_values(
            result.completion, now, latency_ms=None
        )
    outcome = "missing" if result is None else result.outcome
    failure = None if result is None else result.error
    if failure is not None:
        reason, detail = failure.reason, failure.message
    else:
        reason = "batch_expired" if outcome == "expired" else f"batch_{outcome}"
        detail = missing_detail if result is None else f"the batch item was {outcome}"
    if outcome == "succeeded" or not retry_or_fail(failure, attempts, settings):
        # A succeeded item whose output is unusable (refused…) fails as a realtime call would.
        return f"{outcome}_failed", shadow_service._failed_values(reason, detail, now)
    return f"{outcome}_retried", requeued(
        {"failure_reason": reason[:64], "failure_detail": detail[:2000]}
    )


def order_from(
    previous: OrderResult, result: BatchItemResult, *, price: ModelPrice | None = None
) -> tuple[OrderResult | None, ProviderError | None]:
    """An order's new state from its batch item, or the transport failure that left it
    unanswered (None, error). With `price` (the batch's judge in the settings' table) the
    call is charged from its tokens at that price, batch discount included; without, at the
    provider's figure."""
    completion = result.completion
    if completion is None:
        failure = result.error
        if result.outcome == "succeeded" and failure is not None:
            if failure.reason not in judge_service.OUTPUT_FAILURES:
                return None, failure
            return previous.model_copy(
                update={
                    "attempts": previous.attempts + 1,
                    "error": f"{failure.reason}: {failure.message}",
                }
            ), None
        return None, failure
    order = previous.model_copy(
        update={
            "attempts": previous.attempts + 1,
            "input_tokens": previous.input_tokens + completion.input_tokens,
            "output_tokens": previous.output_tokens + completion.output_tokens,
            "cache_read_tokens": previous.cache_read_tokens + completion.cache_read_tokens,
            # Unknown stays unknown: an order stored before writes were recorded.
            "cache_write_tokens": None
            if previous.cache_write_tokens is None
            else previous.cache_write_tokens + completion.cache_write_tokens,
            "cost_usd": previous.cost_usd
            + judge_pricing.call_cost_usd(completion, price, batch=True),
        }
    )
    try:
        parsed = parse_verdict(completion.structured)
    except VerdictParseError as error:
        order.error = f"{error.reason}: {error.detail}"
        return order, None
    order.winner, order.score_a, order.score_b = parsed.winner, parsed.score_a, parsed.score_b
    order.rationale = parsed.rationale
    order.error = None
    return order, None


def verdict_values(
    row: Any,
    items: list[dict[str, Any]],
    results: Mapping[str, BatchItemResult],
    pair: judge_service.PairInput | None,
    settings: Settings,
    now: datetime,
    missing_detail: str,
) -> tuple[str, dict[str, Any], float]:
    """(outcome, column values, USD spent in this batch) of one verdict from its orders."""
    stored = {"order_cheaper_first": row[2], "order_stronger_first": row[3]}
    orders = {
        name: OrderResult.model_validate(value) if value else None for name, value in stored.items()
    }
    spent = 0.0
    failures: list[str] = []
    permanent = False
    judge = next((j for j in map(item_judge, items) if j is not None), None)
    price = judge_pricing.judge_price(settings, judge.model if judge else None)
    discarded: dict[str, None] = {}
    answered_here = {item["order"] for item in items}
    for name, value in stored.items():
        # An order settled earlier by another judge (model or rubric changed since) is not
        # combined with this batch's answer: it is asked again of this batch's judge.
        answered_by = judge_service.order_judge(value)
        if name not in answered_here and judge and answered_by and answered_by != judge:
            orders[name] = None
            discarded[name] = None
            failures.append(f"{name}: answered by {answered_by.key}, not {judge.key}")
    for item in items:
        name = item["order"]
        previous = orders[name] or OrderResult()
        result = results.get(item["custom_id"])
        if result is None:
            failures.append(f"{name}: {missing_detail}")
            continue
        updated, failure = order_from(previous, result, price=price)
        if updated is not None:
            spent += updated.cost_usd - previous.cost_usd
            orders[name] = updated
            continue
        failures.append(
            f"{name}: {failure.reason}: {failure.message}"
            if failure is not None
            else f"{name}: the batch item was {result.outcome}"
        )
        permanent = permanent or (failure is not None and not failure.worth_requeueing)
    # Orders answered here are re-dumped; the others are kept as stored (with their judge).
    order_values: dict[str, Any] = {
        name: order.model_dump(mode="json") if name in answered_here else stored[name]
        for name, order in orders.items()
        if order is not None
    }
    order_values.update(discarded)
    cheaper_first, stronger_first = orders["order_cheaper_first"], orders["order_stronger_first"]
    # An order is settled with a winner, or after two unusable answers (as in realtime).
    settled = [
        order is not None and (order.winner is not None or order.attempts >= 2)
        for order in (cheaper_first, stronger_first)
    ]
    if all(settled) and pair is not None:
        assert cheaper_first is not None
        assert stronger_first is not None
        status, values = judge_service.final_values(
            pair, cheaper_first, stronger_first, settings, now=now, judge=judge
        )
        return status, values, spent
    detail = "; ".join(failures)[:2000] or "an order needs another try"
    if permanent or int(row[1]) >= settings.work_max_attempts:
        values = judge_service._terminal(
            VerdictStatus.ERROR, now, error_detail=f"judge provider failure: {detail}"[:2000]
        )
        return VerdictStatus.ERROR, {**values, **order_values}, spent
    return "retried", requeued({"error_detail": detail, **order_values}), spent
