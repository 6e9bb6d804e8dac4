"""Judge confidence: the score margin toward the verdict's own label, and escalation."""

from __future__ import annotations

import pytest

from shadoweval.judge.confidence import escalates, label_margin
from shadoweval.judge.models import OrderResult, Outcome
from shadoweval.judge.parsing import combine_orders


def test_margin_is_the_score_difference_toward_the_label() -> None:
    # Stronger wins both orders: cheaper first 4 vs 7, stronger first 8 vs 5 →
    # stronger (7 + 8)/2 = 7.5, cheaper (4 + 5)/2 = 4.5, delta 3, label strong_needed = 1.
    labels = combine_orders(
        OrderResult(winner="B", score_a=4, score_b=7),
        OrderResult(winner="A", score_a=8, score_b=5),
    )
    assert (labels.strong_needed, labels.score_delta) == (1, 3.0)
    assert label_margin(labels.strong_needed, labels.score_delta) == 3.0
    # The cheaper answer won by one point in one order and tied in the other: delta −0.5,
    # label strong_needed = 0, margin +0.5 toward "acceptable".
    assert label_margin(0, -0.5) == 0.5
    # A tie scored equal sits on the label's boundary; a label against its own scores is
    # negative (stronger won both orders yet scored lower on average).
    assert label_margin(0, 0.0) == 0.0
    assert label_margin(1, -1.0) == -1.0
    assert label_margin(None, 2.0) is None
    assert label_margin(1, None) is None


@pytest.mark.parametrize(
    ("outcome", "strong_needed", "score_delta", "expected"),
    [
        (Outcome.STRONGER_WINS, 1, 3.0, False),  # margin 3 ≥ 1: kept
        (Outcome.STRONGER_WINS, 1, 1.0, False),  # margin exactly at the threshold: kept
        (Outcome.STRONGER_WINS, 1, 0.5, True),  # margin 0.5 < 1
        (Outcome.CHEAPER_WINS, 0, -2.0, False),  # cheaper better by 2: kept
        (Outcome.TIE, 0, 0.0, True),  # scored equal: on the boundary
        (Outcome.TIE, 0, -1.5, False),  # called a tie, scored the cheaper one higher
        (Outcome.INCONSISTENT, 0, -5.0, True),  # orders disagree: always escalated
        (Outcome.TIE, 0, None, True),  # no scores: no confidence
    ],
)
def test_escalates_inconsistent_unscored_and_low_margin_verdicts(
    outcome: str, strong_needed: int, score_delta: float | None, expected: bool
) -> None:
    assert escalates(outcome, strong_needed, score_delta, min_margin=1.0) is expected


def test_a_zero_threshold_escalates_only_inconsistent_and_contradicted_verdicts() -> None:
    assert not escalates(Outcome.TIE, 0, 0.0, min_margin=0.0)
    assert escalates(Outcome.STRONGER_WINS, 1, -0.5, min_margin=0.0)
    assert escalates(Outcome.INCONSISTENT, 0, -3.0, min_margin=0.0)
