"""Token prices and what a call costs.

Prices are USD per million tokens. The default figures were copied on 2026-11-27
from the providers' public price cards:

- Anthropic: platform.claude.com/docs/en/about-claude/pricing ("Model pricing":
  base input, 5-minute cache writes, cache hits, output). `cache_write` is the
  5-minute write price (1.25x input); 1-hour writes (2x input) are not modelled.
- OpenAI: openai.com/api/pricing (standard tier: input, cached input, output;
  the GPT-5.4/5.5 rows are the short-context rates, under 270K tokens). OpenAI
  does not charge extra for writing its cache, so `cache_write` equals `input`.

Both providers give 50% off input and output on their Batch APIs
(`batch_discount=0.5`); cache reads and writes are billed at the same batch
discount here (Anthropic's batch price list applies the multiplier to every
token kind; OpenAI batch calls report no cache use).

Prices change: every figure can be replaced, and models added, through
`settings.pricing_overrides` (see `PricingTable.from_settings`). Review the
table when a provider announces a price change.

Model ids resolve to a price by the longest matching key that the id starts
with, where the rest of the id may only be a snapshot suffix: a date
(`-20251001`, `-2025-08-07`, `@20250929`) or `-latest`. So
`claude-haiku-4-5-20251001` prices as `claude-haiku-4-5` and `gpt-4o-2024-08-06`
as `gpt-4o`, but `o3-pro` does NOT price as `o3` (it costs 10x more) and
`claude-opus-4-9` does NOT price as `claude-opus-4`. An override key ending in
`*` is a plain prefix (`"my-vllm-*"` prices every id starting with `my-vllm-`).

Unknown models are an error, never free: `price_for`, `cost_usd` and
`estimate_cost_usd` raise `ProviderError(reason="unknown_model")` naming the
model and the setting to add it to. The providers check the price before they
send a request, so no money is spent on a call that could not be accounted for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shadoweval.providers.base import ProviderError

if TYPE_CHECKING:
    from shadoweval.config import Settings

PER_MILLION = 1_000_000.0

# What may follow a price key in a model id: nothing, or a snapshot suffix.
_SNAPSHOT_SUFFIX = re.compile(r"^(?:[-@](?:\d{8}|\d{4}-\d{2}-\d{2})|-latest)?$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    batch_discount: float = 0.5  # fraction taken off every token kind on a Batch API

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_read", "cache_write"):
            if getattr(self, name) < 0:
                raise ValueError(f"price {name} must not be negative")
        if not 0.0 <= self.batch_discount < 1.0:
            raise ValueError("batch_discount must be within [0, 1)")

    def cost_usd(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        *,
        batch: bool = False,
    ) -> float:
        """Cost of one call. `input_tokens` are the tokens billed at the full input price
        (not counting cache reads or writes)."""
        total = (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_tokens * self.cache_read
            + cache_write_tokens * self.cache_write
        ) / PER_MILLION
        if batch:
            total *= 1.0 - self.batch_discount
        return total


def _anthropic(input_price: float, output_price: float) -> ModelPrice:
    # Anthropic: cache hits 0.1x input, 5-minute cache writes 1.25x input.
    return ModelPrice(
        input=input_price,
        output=output_price,
        cache_read=round(input_price * 0.1, 6),
        cache_write=round(input_price * 1.25, 6),
    )


def _openai(input_price: float, cached_input: float, output_price: float) -> ModelPrice:
    return ModelPrice(
        input=input_price, output=output_price, cache_read=cached_input, cache_write=input_price
    )


# Copied 2026-11-27 from the price cards named in the module docstring.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    # --- Anthropic, Claude 4.x (and the 3.x models still served)
    "claude-opus-4-8": _anthropic(5.0, 25.0),
    "claude-opus-4-7": _anthropic(5.0, 25.0),
    "claude-opus-4-6": _anthropic(5.0, 25.0),
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4-1": _anthropic(15.0, 75.0),
    "claude-opus-4-0": _anthropic(15.0, 75.0),
    "claude-opus-4": _anthropic(15.0, 75.0),  # claude-opus-4-20250514
    "claude-sonnet-4-6": _anthropic(3.0, 15.0),
    "claude-sonnet-4-5": _anthropic(3.0, 15.0),
    "claude-sonnet-4-0": _anthropic(3.0, 15.0),
    "claude-sonnet-4": _anthropic(3.0, 15.0),  # claude-sonnet-4-20250514
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-haiku-4-5": _anthropic(1.0, 5.0),
    "claude-3-5-haiku": ModelPrice(input=0.8, output=4.0, cache_read=0.08, cache_write=1.0),
    "claude-3-haiku": ModelPrice(input=0.25, output=1.25, cache_read=0.03, cache_write=0.3),
    # --- Anthropic, Claude 5 (flat-priced ones only; tiered or recently re-priced
    # models such as Haiku 5.5 and Sonnet 5.5 need an override)
    "claude-opus-5": _anthropic(5.0, 25.0),
    "claude-sonnet-5": ModelPrice(input=2.0, output=10.0, cache_read=0.2, cache_write=2.5),
    # --- OpenAI, GPT-5 family
    "gpt-5.5": _openai(5.0, 0.5, 30.0),
    "gpt-5.4": _openai(2.5, 0.25, 15.0),
    "gpt-5.4-mini": _openai(0.75, 0.075, 4.5),
    "gpt-5.4-nano": _openai(0.2, 0.02, 1.25),
    "gpt-5.2": _openai(1.75, 0.175, 14.0),
    "gpt-5.1": _openai(1.25, 0.125, 10.0),
    "gpt-5": _openai(1.25, 0.125, 10.0),
    "gpt-5-mini": _openai(0.25, 0.025, 2.0),
    "gpt-5-nano": _openai(0.05, 0.005, 0.4),
    # --- OpenAI, GPT-4.1 / GPT-4o
    "gpt-4.1": _openai(2.0, 0.5, 8.0),
    "gpt-4.1-mini": _openai(0.4, 0.1, 1.6),
    "gpt-4.1-nano": _openai(0.1, 0.025, 0.4),
    "gpt-4o": _openai(2.5, 1.25, 10.0),
    "gpt-4o-mini": _openai(0.15, 0.075, 0.6),
    # --- OpenAI, o-series
    "o4-mini": _openai(1.1, 0.275, 4.4),
    "o3": _openai(2.0, 0.5, 8.0),
    "o3-mini": _openai(1.1, 0.55, 4.4),
    "o1": _openai(15.0, 7.5, 60.0),
    "o1-mini": _openai(1.1, 0.55, 4.4),
}

_OVERRIDE_FIELDS = frozenset({"input", "output", "cache_read", "cache_write", "batch_discount"})


def price_from_override(model: str, fields: Mapping[str, float]) -> ModelPrice:
    """A price from a `pricing_overrides` entry.

    `input` and `output` are required. Missing `cache_read` defaults to `input`
    (no discount assumed) and missing `cache_write` to 1.25x `input` (Anthropic's
    write surcharge), so an incomplete override never under-counts.
    """
    unknown = set(fields) - _OVERRIDE_FIELDS
    if unknown:
        raise ValueError(
            f"pricing_overrides[{model!r}]: unknown field(s) {sorted(unknown)}; "
            f"allowed: {sorted(_OVERRIDE_FIELDS)}"
        )
    missing = {"input", "output"} - set(fields)
    if missing:
        raise ValueError(f"pricing_overrides[{model!r}] needs {sorted(missing)}")
    input_price = float(fields["input"])
    return ModelPrice(
        input=input_price,
        output=float(fields["output"]),
        cache_read=float(fields.get("cache_read", input_price)),
        cache_write=float(fields.get("cache_write", input_price * 1.25)),
        batch_discount=float(fields.get("batch_discount", 0.5)),
    )


class PricingTable:
    """Prices by model id; see the module docstring for how ids resolve."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        overrides: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self._prices: dict[str, ModelPrice] = dict(DEFAULT_PRICES if prices is None else prices)
        self._prices.update(overrides or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> PricingTable:
        """Defaults plus `settings.pricing_overrides` (which win, key by key)."""
        overrides = {
            model: price_from_override(model, fields)
            for model, fields in settings.pricing_overrides.items()
        }
        return cls(overrides=overrides)

    @property
    def prices(self) -> dict[str, ModelPrice]:
        return dict(self._prices)

    def with_prices(self, prices: Mapping[str, ModelPrice]) -> PricingTable:
        """A copy with some prices added or replaced."""
        return PricingTable(self._prices, overrides=prices)

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None when no key resolves it."""
        exact = self._prices.get(model)
        if exact is not None:
            return exact
        best: tuple[int, ModelPrice] | None = None
        for key, price in self._prices.items():
            if key.endswith("*"):
                stem = key[:-1]
                matches = model.startswith(stem)
            else:
                stem = key
                matches = model.startswith(key) and bool(_SNAPSHOT_SUFFIX.match(model[len(key) :]))
            if matches and (best is None or len(stem) > best[0]):
                best = (len(stem), price)
        return None if best is None else best[1]

    def price_for(self, model: str, *, provider: str = "pricing") -> ModelPrice:
        """The price of `model`; ProviderError(reason="unknown_model") when there is none."""
        price = self.lookup(model)
        if price is None:
            raise ProviderError(
                f"no price for model {model!r}: add it to SHADOWEVAL_PRICING_OVERRIDES, e.g. "
                f'{{"{model}": {{"input": 1.0, "output": 5.0, "cache_read": 0.1, '
                '"cache_write": 1.25}} (USD per million tokens)',
                reason="unknown_model",
                provider=provider,
            )
        return price

    def knows(self, model: str) -> bool:
        return self.lookup(model) is not None

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        batch: bool = False,
    ) -> float:
        """What a call cost. `input_tokens` excludes cache reads and writes (the
        `Completion.input_tokens` convention on every provider)."""
        return self.price_for(model).cost_usd(
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, batch=batch
        )

    def estimate_cost_usd(
        self,
        model: str,
        input_tokens: int,
        expected_output_tokens: int,
        *,
        batch: bool = False,
    ) -> float:
        """An upper-side estimate for budget reservation: every input token at the
        full input price (no cache discount assumed)."""
        return self.price_for(model).cost_usd(input_tokens, expected_output_tokens, batch=batch)
