"""Verdict parsing and the two-order labels of DESIGN.md, Judge."""

from __future__ import annotations

import pytest

from shadoweval.judge.models import OrderResult, Outcome
from shadoweval.judge.parsing import VerdictParseError, combine_orders, parse_verdict


def order(winner: str, score_a: int = 5, score_b: int = 5) -> OrderResult:
    return OrderResult(winner=winner, score_a=score_a, score_b=score_b)


def test_parse_valid_verdict() -> None:
    parsed = parse_verdict({"winner": "B", "score_a": 3, "score_b": 9, "reasoning": "B is right."})
    assert (parsed.winner, parsed.score_a, parsed.score_b) == ("B", 3, 9)
    assert parsed.rationale == "B is right."


@pytest.mark.parametrize(
    ("structured", "reason"),
    [
        (None, "no_structured_output"),
        ({"score_a": 3, "score_b": 4}, "invalid_winner"),
        ({"winner": "C", "score_a": 3, "score_b": 4}, "invalid_winner"),
        ({"winner": "A", "score_a": 0, "score_b": 4}, "score_out_of_range"),
        ({"winner": "A", "score_a": 3, "score_b": 11}, "score_out_of_range"),
        ({"winner": "A", "score_a": "7", "score_b": 4}, "invalid_score"),
        ({"winner": "A", "score_a": 7.5, "score_b": 4}, "invalid_score"),
        ({"winner": "A", "score_a": True, "score_b": 4}, "invalid_score"),
    ],
)
def test_unusable_verdicts_are_errors_never_ties(
    structured: dict[str, object] | None, reason: str
) -> None:
    with pytest.raises(VerdictParseError) as caught:
        parse_verdict(structured)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("cheaper_first", "stronger_first", "outcome", "strong_needed"),
    [
        # Order 1 shows the cheaper answer as A; order 2 shows it as B.
        ("B", "A", Outcome.STRONGER_WINS, 1),
        ("A", "B", Outcome.CHEAPER_WINS, 0),
        ("tie", "tie", Outcome.TIE, 0),
        ("A", "A", Outcome.INCONSISTENT, 0),  # a judge that always picks position A
        ("B", "B", Outcome.INCONSISTENT, 0),
        ("B", "tie", Outcome.INCONSISTENT, 0),
    ],
)
def test_labels_from_both_orders(
    cheaper_first: str, stronger_first: str, outcome: Outcome, strong_needed: int
) -> None:
    labels = combine_orders(order(cheaper_first), order(stronger_first))
    assert labels.outcome == outcome
    assert labels.strong_needed == strong_needed
    assert labels.cheap_acceptable == 1 - strong_needed
    assert labels.consistent == (outcome != Outcome.INCONSISTENT)


def test_scores_follow_the_answers_not_the_positions() -> None:
    labels = combine_orders(order("B", score_a=4, score_b=8), order("A", score_a=9, score_b=3))
    assert labels.score_cheaper == (4 + 3) / 2
    assert labels.score_stronger == (8 + 9) / 2
    assert labels.score_delta == labels.score_stronger - labels.score_cheaper


def test_a_failed_order_has_no_labels() -> None:
    with pytest.raises(ValueError, match="errored"):
        combine_orders(order("A"), OrderResult(error="refused"))
