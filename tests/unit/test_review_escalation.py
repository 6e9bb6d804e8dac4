"""The escalation queue's budget: per decision day, inconsistent first, smallest margin next."""

from __future__ import annotations

from datetime import date

from shadoweval.feedback.queue import EscalationCandidate, escalated_within_budget

DAY_1, DAY_2 = date(2026, 12, 1), date(2026, 12, 2)


def candidate(
    verdict_id: int,
    day: date,
    margin: float | None,
    *,
    inconsistent: bool = False,
    draw: float = 0.5,
) -> EscalationCandidate:
    return EscalationCandidate(verdict_id, day, inconsistent, margin, draw)


def test_each_day_gets_its_budget_in_priority_order_newest_day_first() -> None:
    candidates = [
        candidate(1, DAY_1, 0.5),
        candidate(2, DAY_1, 0.0),
        candidate(3, DAY_1, 0.5, inconsistent=True),
        candidate(4, DAY_1, -1.0),
        candidate(5, DAY_2, 0.5, draw=0.9),
        candidate(6, DAY_2, 0.5, draw=0.1),  # same margin: the lower draw first
        candidate(7, DAY_2, None),  # no scores: least confident of the consistent ones
    ]
    # Day 2 (newest) first: 7 (no margin), then 6 before 5 by draw. Day 1: the inconsistent
    # 3, then margins −1 and 0; the 0.5 margin falls outside the budget of three.
    chosen = escalated_within_budget(candidates, daily_budget=3)
    assert [c.verdict_id for c in chosen] == [7, 6, 5, 3, 4, 2]


def test_the_choice_does_not_depend_on_the_order_verdicts_arrive_in() -> None:
    candidates = [
        candidate(i, (DAY_1, DAY_2)[i % 2], (i * 7 % 5) / 2, draw=i / 20) for i in range(20)
    ]
    forward = [c.verdict_id for c in escalated_within_budget(candidates, 4)]
    backward = [c.verdict_id for c in escalated_within_budget(reversed(candidates), 4)]
    assert forward == backward
    assert len(forward) == 8


def test_a_zero_budget_escalates_nothing() -> None:
    assert escalated_within_budget([candidate(1, DAY_1, 0.0)], daily_budget=0) == []
