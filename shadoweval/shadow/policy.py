"""Pure shadow planning: which tier and model a sampled decision is re-run on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shadoweval.shadow.models import Direction

# When prices cannot order two tiers, these names can.
CONVENTIONAL_TIER_ORDER = {"cheapest": 0, "cheap": 1, "weak": 1, "mid": 2, "strong": 3, "top": 4}


@dataclass(frozen=True)
class ShadowPlan:
    direction: Direction
    target_tier: str
    target_model: str
    cheaper_tier: str
    stronger_tier: str


def order_tiers(
    pool: Mapping[str, str], price_per_mtok: Callable[[str], float | None]
) -> list[str]:
    """Tiers from cheapest to strongest: by their model's price, then by conventional name."""

    def key(tier: str) -> tuple[float, int, str]:
        price = price_per_mtok(pool[tier])
        return (
            price if price is not None else float("inf"),
            CONVENTIONAL_TIER_ORDER.get(tier, 2),
            tier,
        )

    return sorted(pool, key=key)


def plan_shadow(
    *,
    routed_tier: str,
    pool: Mapping[str, str],
    price_per_mtok: Callable[[str], float | None],
) -> ShadowPlan | None:
    """DESIGN.md, Segments and tiers: a lower tier is shadowed on the strongest tier of the
    pool; the strongest tier (reverse shadow) on the cheapest. None when the pool has no
    other tier to compare with."""
    if routed_tier not in pool or len(pool) < 2:
        return None
    ordered = order_tiers(pool, price_per_mtok)
    strongest, cheapest = ordered[-1], ordered[0]
    if routed_tier == strongest:
        return ShadowPlan(
            direction=Direction.REVERSE,
            target_tier=cheapest,
            target_model=pool[cheapest],
            cheaper_tier=cheapest,
            stronger_tier=routed_tier,
        )
    return ShadowPlan(
        direction=Direction.FORWARD,
        target_tier=strongest,
        target_model=pool[strongest],
        cheaper_tier=routed_tier,
        stronger_tier=strongest,
    )
