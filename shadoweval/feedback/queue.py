"""Pure stratified selection of judged pairs for blind review.

Strata are (category, segment), where the category says why a pair is worth a
human look: the judge's label contradicts a human label already stored
(`disagreement`), the judge's two orders disagreed (`inconsistent`), or neither
(`routine`). Strata are visited round-robin, disagreements first, so the first
items cover every category and every segment before any stratum gets a second
item; within a stratum the order is random. The final page is shuffled, so an
item's position does not tell the reviewer its category.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

CATEGORIES = ("disagreement", "inconsistent", "routine")


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
