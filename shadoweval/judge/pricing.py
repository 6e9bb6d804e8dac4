"""What a judge call costs: its tokens at the prices of the settings it was judged under (a
gate run's recorded prices, `gate.create.settings_for_run`), not at the table of whichever
worker's provider made the call; the way gate answers are priced (`gate.items._answer`)."""

from __future__ import annotations

from shadoweval.config import Settings
from shadoweval.judge.models import OrderResult
from shadoweval.providers.base import Completion
from shadoweval.providers.pricing import ModelPrice, PricingTable


def judge_price(settings: Settings, model: str | None = None) -> ModelPrice | None:
    """The price of the judge `model` (default: the settings' judge) in the settings' table;
    None when the table does not know it (the provider's own figure then stands)."""
    return PricingTable.from_settings(settings).lookup(model or settings.judge_model)


def call_cost_usd(
    completion: Completion, price: ModelPrice | None, *, batch: bool = False
) -> float:
    """One call's cost in USD: every token kind (cache writes too) at `price`."""
    if price is None:
        return completion.cost_usd
    return price.cost_usd(
        completion.input_tokens,
        completion.output_tokens,
        completion.cache_read_tokens,
        completion.cache_write_tokens,
        batch=batch,
    )


def order_cost_usd(order: OrderResult, price: ModelPrice | None, *, batch: bool = False) -> float:
    """A stored order priced again from its tokens at `price`; an order stored before cache
    writes were recorded keeps the cost it was charged (its writes are unknown)."""
    if price is None or order.cache_write_tokens is None:
        return order.cost_usd
    return price.cost_usd(
        order.input_tokens,
        order.output_tokens,
        order.cache_read_tokens,
        order.cache_write_tokens,
        batch=batch,
    )
