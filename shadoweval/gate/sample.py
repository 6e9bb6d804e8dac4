"""Pure: the gate's stratified sample — how many requests per segment, and which ones.

Every segment gets the same share of the sample (as far as it has stored
requests; what a small segment cannot use goes to the others), so each segment
is tested with as many pairs as the sample allows, rather than in proportion to
its traffic, which would leave small segments untestable. The overall estimate
weights segments back by traffic (see stats.noninferiority). Which requests a
segment contributes is a hash of (seed, request key): the same seed over the
same log gives the same sample, in any database and on any run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


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


def sample_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def choose(keys: Iterable[str], count: int, seed: int) -> list[str]:
    """The `count` keys with the smallest seeded hash: a uniform, reproducible sample."""
    return sorted(keys, key=lambda key: sample_key(seed, key))[: max(0, count)]
