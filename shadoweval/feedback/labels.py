"""Pure reductions of judge verdicts and human labels to "the served answer was acceptable"."""

from __future__ import annotations

from shadoweval.feedback.models import (
    FeedbackKind,
    PresentedOrder,
    ReviewChoice,
    ReviewLabelValue,
)
from shadoweval.judge.models import Outcome


def served_is_cheaper(direction: str) -> bool:
    """Forward pairs were routed to the cheaper tier, reverse shadows to the stronger one."""
    return direction == "forward"


def judge_served_acceptable(direction: str, outcome: str) -> int:
    """1 unless the other tier's answer won in both orders (ties and inconsistent pairs
    count as acceptable, as for `cheap_acceptable`)."""
    beaten_by = Outcome.STRONGER_WINS if served_is_cheaper(direction) else Outcome.CHEAPER_WINS
    return 0 if outcome == beaten_by else 1


def feedback_acceptable(kind: str, value: int, *, min_grade: int) -> int:
    if kind == FeedbackKind.THUMBS:
        return 1 if value == 1 else 0
    return 1 if value >= min_grade else 0


def derandomise(choice: str, order: str) -> ReviewLabelValue:
    """The reviewer's A/B choice as the tier whose answer it was."""
    if choice == ReviewChoice.TIE:
        return ReviewLabelValue.TIE
    if choice == ReviewChoice.BOTH_BAD:
        return ReviewLabelValue.BOTH_BAD
    a_is_cheaper = order == PresentedOrder.CHEAPER_FIRST
    picked_cheaper = (choice == ReviewChoice.A) == a_is_cheaper
    return ReviewLabelValue.CHEAPER if picked_cheaper else ReviewLabelValue.STRONGER


def review_served_acceptable(label: str, direction: str) -> int:
    """The served answer better, or a tie: acceptable. The other better, or both bad: not."""
    if label == ReviewLabelValue.TIE:
        return 1
    if label == ReviewLabelValue.BOTH_BAD:
        return 0
    served = ReviewLabelValue.CHEAPER if served_is_cheaper(direction) else ReviewLabelValue.STRONGER
    return 1 if label == served else 0
