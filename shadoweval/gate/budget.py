"""Pure: what one gate item may still cost, reserved on its run before any call is made.

The reservation is an upper estimate, so items running at once cannot together spend
past the run's cap: every output is priced at its `max_tokens` (a model cannot bill
more), and input is counted at 2 UTF-8 bytes per token (real tokenizers average 3–4
for English text and rarely go below 2). The cap can only be overshot by a request
whose input tokenizes denser than that, by the difference on that request alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BYTES_PER_TOKEN = 2
# The judge's user-turn template around the conversation and the two answers.
JUDGE_TEMPLATE_TOKENS = 512
PER_MILLION = 1_000_000

# (input USD per million tokens, output USD per million tokens), or None when unpriced:
# the provider refuses an unpriced model before spending anything, so it costs nothing.
PriceOf = Callable[[str], tuple[float, float] | None]


@dataclass(frozen=True)
class Calls:
    """Which calls an item still has to make (stored answers and orders are not re-bought)."""

    candidate: bool
    replaced: bool
    judge_orders: int


def tokens(value: Any) -> int:
    """An upper estimate of the tokens in a text or JSON value."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return -(-len(text.encode()) // BYTES_PER_TOKEN)


def call_cost(price: tuple[float, float] | None, input_tokens: int, output_tokens: int) -> float:
    if price is None:
        return 0.0
    return (input_tokens * price[0] + output_tokens * price[1]) / PER_MILLION


def estimate_item_cost(
    *,
    calls: Calls,
    request_tokens: int,
    answer_max_tokens: int,
    judge_system_tokens: int,
    judge_max_tokens: int,
    candidate_price: tuple[float, float] | None,
    replaced_price: tuple[float, float] | None,
    judge_price: tuple[float, float] | None,
) -> float:
    """The most the remaining calls of one item can cost (see the module docstring)."""
    total = 0.0
    if calls.candidate:
        total += call_cost(candidate_price, request_tokens, answer_max_tokens)
    if calls.replaced:
        total += call_cost(replaced_price, request_tokens, answer_max_tokens)
    # Each judge order reads the conversation and both answers after its instructions.
    judge_input = (
        judge_system_tokens + JUDGE_TEMPLATE_TOKENS + request_tokens + 2 * answer_max_tokens
    )
    total += calls.judge_orders * call_cost(judge_price, judge_input, judge_max_tokens)
    return total
