"""Which tier a sampled decision is shadowed on (DESIGN.md, Segments and tiers)."""

from __future__ import annotations

from shadoweval.shadow.models import Direction
from shadoweval.shadow.policy import order_tiers, plan_shadow

PRICES = {"haiku": 6.0, "sonnet": 18.0, "opus": 30.0}


def price(model: str) -> float | None:
    return PRICES.get(model)


def test_tiers_order_by_price_then_by_name() -> None:
    assert order_tiers({"strong": "opus", "cheap": "haiku", "mid": "sonnet"}, price) == [
        "cheap",
        "mid",
        "strong",
    ]
    assert order_tiers({"strong": "x", "cheap": "y"}, price) == ["cheap", "strong"]


def test_lower_tiers_shadow_on_the_strongest() -> None:
    pool = {"cheap": "haiku", "mid": "sonnet", "strong": "opus"}
    for routed in ("cheap", "mid"):
        plan = plan_shadow(routed_tier=routed, pool=pool, price_per_mtok=price)
        assert plan is not None
        assert plan.direction == Direction.FORWARD
        assert (plan.target_tier, plan.target_model) == ("strong", "opus")
        assert (plan.cheaper_tier, plan.stronger_tier) == (routed, "strong")


def test_strongest_tier_reverse_shadows_on_the_cheapest() -> None:
    pool = {"cheap": "haiku", "mid": "sonnet", "strong": "opus"}
    plan = plan_shadow(routed_tier="strong", pool=pool, price_per_mtok=price)
    assert plan is not None
    assert plan.direction == Direction.REVERSE
    assert (plan.target_tier, plan.target_model) == ("cheap", "haiku")
    assert (plan.cheaper_tier, plan.stronger_tier) == ("cheap", "strong")


def test_no_plan_without_another_tier() -> None:
    assert plan_shadow(routed_tier="cheap", pool={"cheap": "haiku"}, price_per_mtok=price) is None
    assert (
        plan_shadow(routed_tier="other", pool={"cheap": "a", "strong": "b"}, price_per_mtok=price)
        is None
    )
