"""Pure stratified selection of judged pairs for blind review.

Strata are (category, segment), where the category says why a pair is worth a
human look: the judge's label contradicts a human label already stored
(`disagreement`), the judge's two orders disagreed (`inconsistent`), or neither
(`routine`). Strata are visited round-robin, disagreements first, so the first
items cover every category and every segment before any stratum gets a second
item; within a stratum the order is random. The final page is shuffled, so an
item's position does not tell the reviewer its category.

The stratified queue finds disagreements; its labels are not a sample with known
probabilities, so no estimate may use them as one. The uniform review sample is
the other mode: a judged pair is in it when a salted hash of (router, request_id)
falls below `review_sample_probability` (Poisson sampling, like the decision sampler
in DESIGN.md, Sampling, with an independent hash), so every pair's inclusion
probability is known and reproducible. PPI (stats/ppi.py) reads only labels on pairs
of this sample, never labels from the stratified queue on other pairs.
`GET /v1/review/queue?mode=uniform` serves this sample, lowest draw first.

The third mode, `escalated`, is judge escalation ("Trust or Escalate", Jung et al., ICLR
2025): the verdicts the judge is least sure of (judge/confidence.py) go to humans first,
at most a budget of them per decision day (the UTC day of the decision's `ts`, over the
whole deployment). Its labels are the judge's hardest cases, chosen by the judge's own
output, so no estimate may use them as a sample either.

Every label records the mode that served it (`review_label.queue`), and a pair of the
uniform review sample is served only by the uniform queue: were the other modes to serve
it, the sample's labelled part would lean towards the pairs they pick (disagreements,
low confidence), and PPI's human labels would no longer be missing at random.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

CATEGORIES = ("disagreement", "inconsistent", "routine")
# The review queue's modes (`GET /v1/review/queue?mode=`): `stratified` finds
# disagreements, `uniform` serves the uniform review sample PPI reads, `escalated` the
# judge's least confident verdicts (the values of feedback.models.ReviewQueueMode).
ReviewMode = Literal["stratified", "uniform", "escalated"]


@dataclass(frozen=True)
class Candidate:
    verdict_id: int
    segment: str
    category: str


def stratified_order(candidates: list[Candidate], rng: random.Random) -> list[Candidate]:
    """Every candidate once, in round-robin order over the strata."""
    strata: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        strata[(candidate.category, candidate.segment)].append(candidate)
    keys = sorted(strata)
    rng.shuffle(keys)
    keys.sort(key=lambda key: CATEGORIES.index(key[0]))  # stable: random within a category
    queues = []
    for key in keys:
        members = list(strata[key])
        rng.shuffle(members)
        queues.append(members)
    ordered: list[Candidate] = []
    depth = 0
    while len(ordered) < len(candidates):
        for members in queues:
            if depth < len(members):
                ordered.append(members[depth])
        depth += 1
    return ordered


# Salted so the review draw is independent of the decision's sampling hash.
REVIEW_SAMPLE_SALT = "review-sample"


def review_draw(router: str, request_id: str) -> float:
    """A uniform number in [0, 1) fixed by (router, request_id): the pair's review draw."""
    key = f"{REVIEW_SAMPLE_SALT}\x00{router}\x00{request_id}".encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_review_sample(router: str, request_id: str, probability: float) -> bool:
    """Whether a judged pair belongs to the uniform review sample drawn with `probability`."""
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"probability must lie in (0, 1], got {probability}")
    return review_draw(router, request_id) < probability


@dataclass(frozen=True)
class SampledCandidate:
    """A judged pair of the uniform review sample, with its inclusion probability."""

    verdict_id: int
    router: str
    request_id: str
    segment: str
    inclusion_probability: float


def uniform_sample(
    pairs: Iterable[tuple[int, str, str, str]], probability: float
) -> list[SampledCandidate]:
    """The pairs (verdict_id, router, request_id, segment) in the uniform review sample,
    lowest draw first, each with inclusion probability `probability`.

    The order is the draw's, not the pairs' age or category, so the queue never prefers
    the kind of pair a reviewer finds; all of the sample should be labelled for PPI to
    stand for the judged pairs (labels missing at random within it are tolerated).
    `pairs` is read once and only the sampled ones are kept, so it may be a stream.
    """
    drawn = (
        (review_draw(router, request_id), verdict_id, router, request_id, segment)
        for verdict_id, router, request_id, segment in pairs
    )
    chosen = sorted(entry for entry in drawn if entry[0] < probability)
    return [
        SampledCandidate(verdict_id, router, request_id, segment, probability)
        for _, verdict_id, router, request_id, segment in chosen
    ]


@dataclass(frozen=True)
class EscalationCandidate:
    """A finished verdict the judge escalates (judge.confidence.escalates)."""

    verdict_id: int
    day: date  # the UTC day of the decision's ts: the budget's decision day
    inconsistent: bool
    margin: float | None  # points toward its label; None: no scores
    draw: float  # review_draw of (router, request_id): a tie-break fixed by the pair


def escalation_priority(candidate: EscalationCandidate) -> tuple[int, float, float, int]:
    """Inconsistent verdicts first (their label is a tie by rule, not by judgement), then
    the smallest margin; equal margins in review-draw order, so neither arrival order nor
    the time of day decides who is reviewed."""
    margin = float("-inf") if candidate.margin is None else candidate.margin
    return (0 if candidate.inconsistent else 1, margin, candidate.draw, candidate.verdict_id)


def escalated_within_budget(
    candidates: Iterable[EscalationCandidate], daily_budget: int
) -> list[EscalationCandidate]:
    """The escalated verdicts the review queue serves: per decision day the first
    `daily_budget` by `escalation_priority`; newest day first, priority order within it.

    The choice depends only on the day's verdicts, never on when they were judged or
    fetched, so a replay escalates the same pairs once a day's verdicts are all in (until
    then a more urgent verdict may still displace a less urgent one)."""
    by_day: dict[date, list[EscalationCandidate]] = defaultdict(list)
    for candidate in candidates:
        by_day[candidate.day].append(candidate)
    chosen: list[EscalationCandidate] = []
    for day in sorted(by_day, reverse=True):
        chosen.extend(sorted(by_day[day], key=escalation_priority)[: max(daily_budget, 0)])
    return chosen
