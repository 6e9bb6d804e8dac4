"""Pure sampling logic: strata, inclusion probabilities and the deterministic sampling hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

_HASH_SCALE = float(2**64)


def sampling_hash(router: str, request_id: str) -> float:
    """A uniform number in [0, 1) fixed by (router, request_id).

    The first 8 bytes of SHA-256 over `router NUL request_id`, read as an
    unsigned big-endian integer and divided by 2**64. Every replica and every
    replay draws the same number, so a decision's sampling is reproducible.
    """
    digest = hashlib.sha256(f"{router}\x00{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SCALE


def is_sampled(router: str, request_id: str, inclusion_probability: float) -> bool:
    """Poisson sampling: include the decision when its hash falls below π."""
    return sampling_hash(router, request_id) < inclusion_probability


def constant_inclusion_probability(
    tier: str, rates_by_tier: Mapping[str, float], default_rate: float
) -> float:
    """π for a decision routed to `tier`, from a fixed per-tier rate table.

    Stands in until the budgeted planner sets π per stratum (segment × tier).
    """
    return float(rates_by_tier.get(tier, default_rate))


def segment_value_of(segment: Mapping[str, str], segment_key: str, unlabelled: str) -> str:
    """The segment a decision belongs to: the value of the configured segment key."""
    value = segment.get(segment_key)
    return value if value else unlabelled
