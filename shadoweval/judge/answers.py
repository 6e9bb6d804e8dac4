"""Which stored answer of a judged pair is the cheaper tier's and which the stronger's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shadoweval.shadow.models import Direction, RunKind


class PairSides(Protocol):
    """What a verdict row records about its two sides (a Verdict or a selected row)."""

    @property
    def direction(self) -> str: ...
    @property
    def cheaper_tier(self) -> str: ...
    @property
    def stronger_tier(self) -> str: ...
    @property
    def cheaper_model(self) -> str: ...
    @property
    def stronger_model(self) -> str: ...


@dataclass(frozen=True)
class RunAnswer:
    """A shadow run's answer and what it cost (USD, None when unpriced)."""

    text: str | None
    cost_usd: float | None = None


@dataclass(frozen=True)
class Answers:
    direction: str
    cheaper_tier: str
    stronger_tier: str
    cheaper_model: str
    stronger_model: str
    cheaper_answer: str | None
    stronger_answer: str | None
    cheaper_cost_usd: float | None
    stronger_cost_usd: float | None


def assemble(
    pair: PairSides,
    *,
    logged_response: Mapping[str, Any] | None,
    runs: Mapping[str, RunAnswer],
    logged_cost_usd: float | None = None,
) -> Answers:
    """The routed answer (its re-run when there is one, as that is what the shadow ran
    beside, else the logged response) and the shadow's, placed by the pair's direction:
    forward pairs were routed to the cheaper tier, reverse ones to the stronger."""
    routed = RunAnswer((logged_response or {}).get("text"), logged_cost_usd)
    routed = runs.get(RunKind.ROUTED_RERUN, routed)
    shadow = runs.get(RunKind.SHADOW, RunAnswer(None))
    cheaper, stronger = (
        (routed, shadow) if pair.direction == Direction.FORWARD else (shadow, routed)
    )
    return Answers(
        direction=pair.direction,
        cheaper_tier=pair.cheaper_tier,
        stronger_tier=pair.stronger_tier,
        cheaper_model=pair.cheaper_model,
        stronger_model=pair.stronger_model,
        cheaper_answer=cheaper.text,
        stronger_answer=stronger.text,
        cheaper_cost_usd=cheaper.cost_usd,
        stronger_cost_usd=stronger.cost_usd,
    )
