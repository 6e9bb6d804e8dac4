"""Pure verdict logic: the structured-output schema, parsing one order, combining both orders.

Labels follow DESIGN.md, Judge: `strong_needed = 1` only when the stronger
tier's answer wins in both orders; a tie or an inconsistent pair counts as the
cheaper answer being acceptable. A failed order makes the whole pair `error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shadoweval.judge.models import OrderResult, Outcome

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["reasoning", "winner", "score_a", "score_b"],
    "properties": {
        "reasoning": {"type": "string", "description": "At most three sentences."},
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        "score_a": {"type": "integer", "minimum": 1, "maximum": 10},
        "score_b": {"type": "integer", "minimum": 1, "maximum": 10},
    },
}
VERDICT_SCHEMA_NAME = "verdict"


class VerdictParseError(ValueError):
    """The judge's output is not a usable verdict; `reason` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ParsedVerdict:
    winner: str  # "A" | "B" | "tie"
    score_a: int
    score_b: int
    rationale: str


def parse_verdict(structured: dict[str, Any] | None) -> ParsedVerdict:
    """Validate the judge's structured output; never guess a missing verdict."""
    if structured is None:
        raise VerdictParseError("no_structured_output", "the judge returned no verdict object")
    winner = structured.get("winner")
    if winner not in ("A", "B", "tie"):
        raise VerdictParseError("invalid_winner", f"winner must be A, B or tie, got {winner!r}")
    scores = []
    for field in ("score_a", "score_b"):
        value = structured.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise VerdictParseError("invalid_score", f"{field} must be an integer, got {value!r}")
        if not 1 <= value <= 10:
            raise VerdictParseError("score_out_of_range", f"{field}={value} is outside 1..10")
        scores.append(int(value))
    rationale = structured.get("reasoning")
    return ParsedVerdict(
        winner=str(winner),
        score_a=scores[0],
        score_b=scores[1],
        rationale=str(rationale) if rationale is not None else "",
    )


@dataclass(frozen=True)
class PairLabels:
    outcome: Outcome
    consistent: bool
    strong_needed: int
    cheap_acceptable: int
    score_cheaper: float
    score_stronger: float
    score_delta: float


def _side(winner: str, cheaper_is_a: bool) -> str:
    if winner == "tie":
        return "tie"
    return "cheaper" if (winner == "A") == cheaper_is_a else "stronger"


def combine_orders(cheaper_first: OrderResult, stronger_first: OrderResult) -> PairLabels:
    """Labels of a pair from its two orders (cheaper answer shown as A, then as B)."""
    if cheaper_first.winner is None or stronger_first.winner is None:
        raise ValueError("both orders need a verdict; an errored pair has no labels")
    first = _side(cheaper_first.winner, cheaper_is_a=True)
    second = _side(stronger_first.winner, cheaper_is_a=False)
    if first == second:
        outcome = {
            "cheaper": Outcome.CHEAPER_WINS,
            "stronger": Outcome.STRONGER_WINS,
            "tie": Outcome.TIE,
        }[first]
    else:
        outcome = Outcome.INCONSISTENT
    strong_needed = int(outcome == Outcome.STRONGER_WINS)
    assert cheaper_first.score_a is not None
    assert cheaper_first.score_b is not None
    assert stronger_first.score_a is not None
    assert stronger_first.score_b is not None
    score_cheaper = (cheaper_first.score_a + stronger_first.score_b) / 2
    score_stronger = (cheaper_first.score_b + stronger_first.score_a) / 2
    return PairLabels(
        outcome=outcome,
        consistent=outcome != Outcome.INCONSISTENT,
        strong_needed=strong_needed,
        cheap_acceptable=1 - strong_needed,
        score_cheaper=score_cheaper,
        score_stronger=score_stronger,
        score_delta=score_stronger - score_cheaper,
    )
