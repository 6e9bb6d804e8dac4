"""The cache cost of per-turn routing on hand-worked sessions, and on seeded generated ones."""

from __future__ import annotations

import numpy as np
import pytest

from shadoweval.providers.pricing import DEFAULT_PRICES
from shadoweval.stats import sessions as s

CHEAP = "claude-haiku-4-5"  # USD/Mtok: input 1, output 5, cache read 0.1, cache write 1.25
STRONG = "claude-sonnet-4-6"  # input 3, output 15, cache read 0.3, cache write 3.75


def _prices(models: list[str]) -> s.Prices:
    table = [DEFAULT_PRICES[m] for m in models]
    return s.Prices.of(
        [p.input for p in table],
        [p.output for p in table],
        [p.cache_read for p in table],
        [p.cache_write for p in table],
    )


def _report(turns: list[dict[str, object]]) -> s.SessionCacheReport:
    """Per-turn dicts (sorted by session, then time) → the (session, model) rows the
    service builds in SQL, through the per-turn reference `sticky_cache_tokens`."""
    session = np.array([t["session"] for t in turns])
    model = np.array([t["model"] for t in turns])
    tier = np.array([t["tier"] for t in turns])
    sticky = s.sticky_cache_tokens(
        session=session,
        model=model,
        cache_read_tokens=[t["read"] for t in turns],
        cache_write_tokens=[t["write"] for t in turns],
    )
    first = np.r_[True, session[1:] != session[:-1]]
    tier_switch = np.r_[False, (session[1:] == session[:-1]) & (tier[1:] != tier[:-1])]
    groups: dict[tuple[str, str], np.ndarray] = {}
    for i, turn in enumerate(turns):
        row = np.array(
            [
                first[i],
                1,
                tier_switch[i],
                turn["in"],
                turn["out"],
                turn["read"],
                turn["write"],
                sticky.excess_cache_write[i],
            ],
            dtype=np.float64,
        )
        key = (str(session[i]), str(model[i]))
        groups[key] = groups.get(key, np.zeros(8)) + row
    keys = list(groups)
    values = np.array([groups[k] for k in keys])
    return s.session_cache_report(
        session=[k[0] for k in keys],
        model=[k[1] for k in keys],
        prices=_prices([k[1] for k in keys]),
        first_turn=values[:, 0] > 0,
        turns=values[:, 1],
        tier_switches=values[:, 2],
        input_tokens=values[:, 3],
        output_tokens=values[:, 4],
        cache_read_tokens=values[:, 5],
        cache_write_tokens=values[:, 6],
        excess_cache_write_tokens=values[:, 7],
    )


def _turn(session: str, tier: str, read: int, write: int, out: int) -> dict[str, object]:
    model = CHEAP if tier == "cheap" else STRONG
    return {
        "session": session,
        "model": model,
        "tier": tier,
        "read": read,
        "write": write,
        "in": 100,
        "out": out,
    }


# A 4 000-token system prompt, growing by 400 tokens a turn. Turn 2 on the strong model
# finds its cache cold and writes all 4 400; turn 3, back on the cheap model, reads the
# 4 000 it wrote on turn 1 and writes the 800 added since.
SWITCHING = [
    _turn("a", "cheap", read=0, write=4000, out=200),
    _turn("a", "strong", read=0, write=4400, out=300),
    _turn("a", "cheap", read=4000, write=800, out=200),
]


def test_sticky_tokens_of_a_switching_session() -> None:
    sticky = s.sticky_cache_tokens(
        session=["a"] * 3,
        model=[t["model"] for t in SWITCHING],
        cache_read_tokens=[0, 0, 4000],
        cache_write_tokens=[4000, 4400, 800],
    )
    assert sticky.switched.tolist() == [False, True, True]
    # Sticky: only the 400-token growth is written on turns 2 and 3, the rest is read.
    assert sticky.sticky_cache_write.tolist() == [4000, 400, 400]
    assert sticky.sticky_cache_read.tolist() == [0, 4000, 4400]
    assert sticky.excess_cache_write.tolist() == [0, 4000, 400]


def test_cheap_strong_cheap_session_in_usd() -> None:
    report = _report(SWITCHING)
    assert report.sessions == 1
    assert report.turns == 3
    assert report.tier_switches == 2
    assert report.switching_share == 1.0
    # L = 4000 × (3.75 − 0.30) + 400 × (1.25 − 0.10), per Mtok
    assert report.cache_cost_of_switching_usd == pytest.approx(0.0138 + 0.00046, abs=1e-12)
    assert report.excess_cache_write_tokens == 4400
    # P: 0.0061 + 0.0213 + 0.0025 (input, output, cache reads and writes of each turn)
    assert report.actual_cost_usd == pytest.approx(0.0299, abs=1e-12)
    assert report.warm_cache_cost_usd == pytest.approx(0.0299 - 0.01426, abs=1e-12)
    assert report.cache_write_usd == pytest.approx((4000 * 1.25 + 4400 * 3.75 + 800 * 1.25) / 1e6)
    assert report.cache_read_usd == pytest.approx(4000 * 0.1 / 1e6)
    # Sticky on the first turn's (cheap) model: 300 in, 700 out, 8 400 read, 4 800 written.
    first = report.first_turn_tier
    assert first.sticky_cost_usd == pytest.approx(0.01064, abs=1e-12)
    assert first.gross_savings_usd == pytest.approx(0.01064 - 0.01564, abs=1e-12)
    assert first.net_savings_usd == pytest.approx(0.01064 - 0.0299, abs=1e-12)
    # Sticky on the strongest model: the same tokens at the strong prices.
    strongest = report.strongest_tier
    assert strongest.sticky_cost_usd == pytest.approx(0.03192, abs=1e-12)
    assert strongest.gross_savings_usd == pytest.approx(0.03192 - 0.01564, abs=1e-12)
    assert strongest.net_savings_usd == pytest.approx(0.03192 - 0.0299, abs=1e-12)
    assert strongest.sticky_cache_write_usd == pytest.approx(4800 * 3.75 / 1e6)
    assert strongest.loss_share_of_gross_savings == pytest.approx(0.01426 / 0.01628)
    by_model = {m.model: m for m in report.by_model}
    assert by_model[STRONG].excess_cache_write_tokens == 4000
    assert by_model[CHEAP].cache_cost_of_switching_usd == pytest.approx(0.00046)


def test_a_sticky_session_loses_nothing() -> None:
    sticky = [
        _turn("b", "cheap", read=0, write=4000, out=200),
        _turn("b", "cheap", read=4000, write=400, out=200),
        _turn("b", "cheap", read=4400, write=400, out=200),
    ]
    report = _report(sticky)
    assert report.tier_switches == 0
    assert report.switching_share == 0.0
    assert report.cache_cost_of_switching_usd == 0.0
    assert report.cache_cost_per_switching_session_usd is None
    # 300 × 1 + 600 × 5 + 8 400 × 0.1 + 4 800 × 1.25 per Mtok
    assert report.actual_cost_usd == pytest.approx(0.01014, abs=1e-12)
    assert report.first_turn_tier.net_savings_usd == pytest.approx(0.0, abs=1e-15)
    assert report.strongest_tier.net_savings_usd == pytest.approx(0.0, abs=1e-15)


def test_an_expired_cache_is_not_blamed_on_switching() -> None:
    # Turn 2 stays on the cheap model but rewrites the whole prefix (the 5-minute cache
    # expired): a sticky router would have paid it too.
    turns = [
        _turn("c", "cheap", read=0, write=4000, out=200),
        _turn("c", "cheap", read=0, write=4400, out=200),
    ]
    assert _report(turns).cache_cost_of_switching_usd == 0.0


def test_first_turn_must_be_marked_once_per_session() -> None:
    with pytest.raises(ValueError, match="first_turn"):
        s.session_cache_report(
            session=["a", "a"],
            model=[CHEAP, STRONG],
            prices=_prices([CHEAP, STRONG]),
            first_turn=[True, True],
            turns=[1, 1],
            tier_switches=[0, 1],
            input_tokens=[0, 0],
            output_tokens=[0, 0],
            cache_read_tokens=[0, 0],
            cache_write_tokens=[0, 10],
            excess_cache_write_tokens=[0, 10],
        )


def _generated(per_turn: bool, seed: int = 7) -> list[dict[str, object]]:
    """Sessions of 2–12 turns, 1–8k-token system prompts, 300 tokens added per turn,
    served with a warm per-model cache: per-turn routing picks a tier per turn,
    sticky routing the first turn's tier for the whole session."""
    rng = np.random.default_rng(seed)
    turns: list[dict[str, object]] = []
    for index in range(200):
        prompt = int(rng.integers(1000, 8000))
        cached_on: dict[str, int] = {}  # prefix tokens warm per model
        session_tier = "strong" if rng.random() < 0.3 else "cheap"
        for turn in range(int(rng.integers(2, 13))):
            tier = ("strong" if rng.random() < 0.3 else "cheap") if per_turn else session_tier
            model = CHEAP if tier == "cheap" else STRONG
            prefix = prompt + 300 * turn
            read = cached_on.get(model, 0)
            cached_on[model] = prefix
            turns.append(
                {
                    "session": f"s{index:04d}",
                    "model": model,
                    "tier": tier,
                    "read": read,
                    "write": prefix - read,
                    "in": 50,
                    "out": int(rng.integers(50, 400)),
                }
            )
    return turns


def test_generated_per_turn_router_loses_and_sticky_one_does_not() -> None:
    per_turn = _report(_generated(per_turn=True))
    sticky = _report(_generated(per_turn=False))
    assert sticky.cache_cost_of_switching_usd == 0.0
    assert sticky.first_turn_tier.net_savings_usd == pytest.approx(0.0, abs=1e-9)
    assert per_turn.switching_share > 0.5
    assert per_turn.cache_cost_of_switching_usd > 0.0
    # The loss eats into what per-turn routing saves against sticky-on-strongest.
    strongest = per_turn.strongest_tier
    assert strongest.net_savings_usd == pytest.approx(
        strongest.gross_savings_usd - per_turn.cache_cost_of_switching_usd
    )
    assert strongest.loss_share_of_gross_savings is not None
    assert strongest.loss_share_ci95 is not None
    low, high = strongest.loss_share_ci95
    assert 0.0 < low < strongest.loss_share_of_gross_savings < high
    interval = per_turn.cache_cost_per_switching_session_usd
    assert interval is not None
    assert interval.ci95_low is not None
    assert interval.ci95_low > 0


def test_tool_loop_escalations_on_a_hand_made_log() -> None:
    # Two sessions: s1 escalates at its start and once inside its tool loop; s2 escalates
    # on a later plain turn (elsewhere) and runs a tool loop without escalating.
    first = [1, 0, 0, 0, 1, 0, 0, 0]
    tool = [0, 1, 1, 1, 0, 0, 1, 1]
    escalated = [1, 0, 1, 0, 0, 1, 0, 0]
    result = s.tool_loop_escalations(first_turn=first, tool_turn=tool, escalated=escalated)
    assert result.turns == 8
    assert result.tool_turns == 5
    assert result.escalations == 3
    assert result.at_conversation_start == 1
    assert result.inside_tool_loop == 1
    assert result.elsewhere == 1
    assert result.mid_loop_share == pytest.approx(1 / 5)
    assert result.mid_loop_share_ci95 is not None
