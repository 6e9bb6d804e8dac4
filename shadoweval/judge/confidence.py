"""Pure judge confidence: how firmly a verdict's own scores back the label it gives.

The judge records, per order, a winner and a 1–10 score per answer; the verdict keeps
`score_delta`, the stronger answer's score minus the cheaper one's, averaged over both
orders. The label every estimate reads is binary (`strong_needed`, DESIGN.md, Judge), so
the confidence of a verdict is its score margin toward that label, in points of the
judge's 1–10 scale:

    margin = score_delta        when strong_needed = 1 (how much better the stronger answer scored)
    margin = −score_delta       when strong_needed = 0 (how much better the cheaper answer scored)

A tie scored equal is margin 0: the two answers sit on the label's boundary. A verdict
whose two orders disagree (`inconsistent`) has no label of its own (it counts as a tie),
so it is never confident. "Trust or Escalate" (Jung et al., ICLR 2025) keeps the verdicts
the judge is confident in and escalates the rest to humans; here a verdict is escalated
when it is inconsistent, has no scores, or its margin is below a threshold.
"""

from __future__ import annotations

from shadoweval.judge.models import Outcome


def label_margin(strong_needed: int | None, score_delta: float | None) -> float | None:
    """The verdict's score margin toward its own label (points); None without scores."""
    if strong_needed is None or score_delta is None:
        return None
    return float(score_delta) if strong_needed == 1 else -float(score_delta)


def escalates(
    outcome: str | None, strong_needed: int | None, score_delta: float | None, *, min_margin: float
) -> bool:
    """Whether a finished verdict goes to humans: its orders disagree, it has no scores,
    or its margin toward its label is below `min_margin` points."""
    if outcome == Outcome.INCONSISTENT:
        return True
    margin = label_margin(strong_needed, score_delta)
    return margin is None or margin < min_margin
