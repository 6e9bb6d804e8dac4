"""Pure: the gate's stratified sample — how many requests per segment, and which ones.

Every segment gets the same share of the sample (as far as it has stored
requests; what a small segment cannot use goes to the others), so each segment
is tested with as many pairs as the sample allows, rather than in proportion to
its traffic, which would leave small segments untestable. The overall estimate
weights segments back by traffic (see stats.noninferiority). Which requests a
segment contributes is the first n in a seeded order over decision ids that the
database evaluates (`seeded_order`): the same seed over the same log gives the
same sample, on SQLite and PostgreSQL and on any run, without loading the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from sqlalchemy import ColumnElement, literal


def allocate(available: Mapping[str, int], total: int) -> dict[str, int]:
    """Split `total` requests evenly across segments, capped by what each has available."""
    allocation = dict.fromkeys(available, 0)
    remaining = min(total, sum(max(0, count) for count in available.values()))
    # Larger segments first (then by name), so a remainder goes where it is least needed.
    open_segments = sorted(
        (s for s, count in available.items() if count > 0), key=lambda s: (-available[s], s)
    )
    while remaining > 0 and open_segments:
        share = remaining // len(open_segments)
        if share == 0:
            for segment in open_segments[:remaining]:
                allocation[segment] += 1
            break
        for segment in open_segments:
            take = min(share, available[segment] - allocation[segment])
            allocation[segment] += take
            remaining -= take
        open_segments = [s for s in open_segments if allocation[s] < available[s]]
    return allocation


# A prime just under 2**31: (id mod P) * K stays below 2**62, inside the signed 64-bit
# integers of SQLite and PostgreSQL, whatever the ids.
_PRIME = 2_147_483_647


def seeded_order(column: ColumnElement[int], seed: int) -> ColumnElement[int]:
    """An SQL sort key over an integer id that shuffles ids reproducibly per seed.

    Two rounds of `x → (x² + K·x + C) mod P` (P prime; K, C drawn from the seed) after a
    seeded affine step: plain integer arithmetic, so SQLite and PostgreSQL compute the
    same key and `ORDER BY seeded_order(id, seed), id LIMIT n` draws a sample without
    loading every candidate. The square breaks the arithmetic progressions a purely
    affine key would sort ids into. Every intermediate stays below 2**63.
    """
    digest = hashlib.sha256(f"seeded-order:{seed}".encode()).digest()
    k1, c1, k2, c2, k3, c3 = (
        int.from_bytes(digest[i : i + 5], "big") % (_PRIME - 1) + 1 for i in range(0, 30, 5)
    )
    x = ((column % _PRIME) * literal(k1) + literal(c1)) % _PRIME
    for k, c in ((k2, c2), (k3, c3)):
        x = ((x * x) % _PRIME + x * literal(k) + literal(c)) % _PRIME
    return x
