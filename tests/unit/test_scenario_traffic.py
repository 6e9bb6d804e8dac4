"""The scenario generator of `shadoweval bench scenario`: seeded, shaped as the issue asks,
and its hidden tags make the simulated judge follow its truth (with the position bias)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shadoweval.bench.scenario_traffic import (
    ScenarioConfig,
    ScenarioTraffic,
    calibrated_harm_rate,
)
from shadoweval.ingest.models import DecisionIn
from shadoweval.judge.prompts import build_user_turn
from shadoweval.providers.simulated import sim_tag, simulate_answer_text, simulated_verdict

START = datetime(2026, 11, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def traffic() -> ScenarioTraffic:
    """The default scenario (3 days × 20,000/day): its truth is numpy, built in < 1 s."""
    return ScenarioTraffic(ScenarioConfig(seed=3, start=START))


def _cheap_harm(traffic: ScenarioTraffic, segment: str, since: datetime, until: datetime) -> float:
    t = traffic.truth
    members = (
        t.cheap_routed
        & (t.segment == traffic.segment_names.index(segment))
        & (t.ts >= since.timestamp())
        & (t.ts < until.timestamp())
    )
    return float(t.harm_probability[members].mean())


def test_same_seed_same_stream_other_seed_another() -> None:
    config = ScenarioConfig(seed=11, days=0.5, decisions_per_day=2_000, start=START)
    first, second = ScenarioTraffic(config), ScenarioTraffic(config)
    assert np.array_equal(first.truth.ts, second.truth.ts)
    assert np.array_equal(first.truth.strong_better, second.truth.strong_better)
    assert first.decisions(slice(0, 50)) == second.decisions(slice(0, 50))
    other = ScenarioTraffic(ScenarioConfig(seed=12, days=0.5, decisions_per_day=2_000, start=START))
    assert len(other) != len(first) or not np.array_equal(other.truth.ts, first.truth.ts)


def test_volume_and_segment_shares(traffic: ScenarioTraffic) -> None:
    config = traffic.config
    assert abs(len(traffic) / (config.days * config.decisions_per_day) - 1) < 0.03
    shares = np.bincount(traffic.truth.segment, minlength=8) / len(traffic)
    for spec, share in zip(config.segments, shares, strict=True):
        assert abs(share - spec.share) < 0.015, spec.name
    assert config.segments[traffic.changed_index].share == 0.05
    assert len({s.share for s in config.segments}) >= 6  # sizes differ
    assert np.all(np.diff(traffic.truth.ts) >= 0)


def test_harm_rises_in_the_changed_segment_at_40_percent(traffic: ScenarioTraffic) -> None:
    config = traffic.config
    change, swap = config.change_ts, config.swap_ts
    assert change == config.start + timedelta(days=config.days * 0.4)
    assert traffic.expected_harm_rate("legal", "before") == pytest.approx(0.10, abs=1e-6)
    assert traffic.expected_harm_rate("legal", "changed") == pytest.approx(0.25, abs=1e-6)
    assert _cheap_harm(traffic, "legal", config.start, change) == pytest.approx(0.10, abs=0.015)
    assert _cheap_harm(traffic, "legal", change, swap) == pytest.approx(0.25, abs=0.02)
    for segment in ("billing", "account", "smalltalk", "travel"):
        before = _cheap_harm(traffic, segment, config.start, change)
        assert _cheap_harm(traffic, segment, change, swap) == pytest.approx(before, abs=0.02)
    # The router does not see the change: legal's scores keep their law.
    t = traffic.truth
    legal = t.segment == traffic.changed_index
    early, late = legal & (t.ts < change.timestamp()), legal & (t.ts >= change.timestamp())
    assert np.nanmean(t.router_score[early]) == pytest.approx(
        np.nanmean(t.router_score[late]), abs=0.02
    )


def test_cheap_model_swaps_at_70_percent_and_the_router_turns_over_confident(
    traffic: ScenarioTraffic,
) -> None:
    config, t = traffic.config, traffic.truth
    swap = config.swap_ts.timestamp()
    cheap_models = Counter(
        (traffic.decision(i)["chosen_model"], bool(t.ts[i] >= swap))
        for i in np.flatnonzero(t.cheap_routed)[::50]
    )
    assert set(cheap_models) == {(config.cheap_model, False), (config.swapped_cheap_model, True)}
    strong = traffic.decision(int(np.flatnonzero(~t.cheap_routed & (t.ts >= swap))[0]))
    assert strong["chosen_model"] == config.strong_model
    # Before the swap the score is calibrated; after it the need is flatter than the score.
    scored = ~t.fallback & (t.harm_probability < 1 - config.judge_position_bias)
    before = scored & ~t.swapped & (t.segment != traffic.changed_index)
    assert np.allclose(t.harm_probability[before], t.router_score[before])
    after = scored & t.swapped & (t.segment == 0)
    slope = np.polyfit(_logit(t.router_score[after]), _logit(t.harm_probability[after]), 1)[0]
    assert slope == pytest.approx(config.overconfidence_slope, abs=1e-6)
    # ... while every segment's harm rate on cheap-routed traffic stays where it was.
    for segment in traffic.segment_names:
        level = traffic.expected_harm_rate(segment, "swapped")
        assert _cheap_harm(traffic, segment, config.swap_ts, config.end) == pytest.approx(
            level, abs=0.03
        ), segment


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def test_diurnal_load_peaks_in_the_afternoon(traffic: ScenarioTraffic) -> None:
    hours = ((traffic.truth.ts - traffic.config.start.timestamp()) // 3600 % 24).astype(int)
    per_hour = np.bincount(hours, minlength=24)
    assert per_hour[13:18].mean() > 2.5 * per_hour[1:6].mean()
    assert int(np.argmax(per_hour)) in range(13, 18)


def test_sessions_fallbacks_and_the_wire_format(traffic: ScenarioTraffic) -> None:
    t = traffic.truth
    turns = np.bincount(t.session)
    assert turns.max() > 1
    assert 1.3 < turns.mean() < 3
    # A session stays in its segment, and its turns come in ts order.
    first_turn = np.flatnonzero(t.turn == 1)[0]
    same = np.flatnonzero(t.session == t.session[first_turn])
    assert len(set(t.segment[same])) == 1
    assert np.all(np.diff(t.turn[same]) == 1)
    assert 0.002 < t.fallback.mean() < 0.01
    fallback = traffic.decision(int(np.flatnonzero(t.fallback)[0]))
    assert fallback["fallback"] is True
    assert fallback["tier"] == "strong"
    assert "router_score" not in fallback
    later = traffic.decision(int(first_turn))
    assert len(later["request"]["messages"]) == 3
    assert later["session_id"]
    for index in (0, int(first_turn), int(np.flatnonzero(t.fallback)[0])):
        item = DecisionIn.model_validate(traffic.decision(index))
        assert item.ts is not None
        assert item.ts.tzinfo is not None
        assert item.response is not None
        assert item.request is not None


def _label_from_the_simulated_judge(traffic: ScenarioTraffic, index: int) -> bool:
    """strong_needed as the pipeline derives it: the strong answer wins in both orders."""
    config = traffic.config
    item = traffic.decision(index)
    messages, system = item["request"]["messages"], item["request"]["system"]
    cheap_model = traffic.cheap_model_at(index)
    cheap = simulate_answer_text(cheap_model, messages)
    strong = simulate_answer_text(config.strong_model, messages)
    winners = []
    for answer_a, answer_b in ((cheap, strong), (strong, cheap)):
        turn = build_user_turn(
            messages=messages,
            system=system,
            answer_a=answer_a,
            answer_b=answer_b,
            char_budget=24_000,
        )
        winners.append(simulated_verdict([{"role": "user", "content": turn}])["winner"])
    return winners == ["B", "A"]


def test_the_simulated_judge_gives_exactly_the_generators_labels(
    traffic: ScenarioTraffic,
) -> None:
    config, t = traffic.config, traffic.truth
    assert np.array_equal(t.label, t.strong_better & ~t.judge_biased)
    assert t.judge_biased.mean() == pytest.approx(config.judge_position_bias, abs=0.01)
    picked = np.concatenate(
        [
            np.flatnonzero(t.strong_better & ~t.judge_biased)[:40],
            np.flatnonzero(t.strong_better & t.judge_biased)[:20],
            np.flatnonzero(~t.strong_better & t.judge_biased)[:20],
            np.flatnonzero(~t.strong_better & ~t.judge_biased)[:40],
            np.flatnonzero(t.swapped & t.strong_better & ~t.judge_biased)[:20],
        ]
    )
    for index in picked:
        assert _label_from_the_simulated_judge(traffic, int(index)) == t.label[index], index


def test_harm_truth_reduces_windows(traffic: ScenarioTraffic) -> None:
    config = traffic.config
    window = traffic.harm_truth(config.change_ts, config.swap_ts)
    assert set(window) == set(traffic.segment_names)
    legal = window["legal"]
    assert legal.expected_harm_rate == pytest.approx(0.25, abs=0.02)
    assert legal.harm_rate == pytest.approx(legal.expected_harm_rate, abs=0.05)
    assert traffic.harm_truth(config.end, config.end + timedelta(hours=1)) == {}
    hours = list(traffic.hour_slices())
    assert len(hours) == 72
    assert hours[-1][0] == config.end
    assert sum(part.stop - part.start for _, part in hours) == len(traffic)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="timezone"):
        ScenarioConfig(start=datetime(2026, 11, 2))
    with pytest.raises(ValueError, match="change_at"):
        ScenarioConfig(change_at=0.8, swap_at=0.7)
    assert calibrated_harm_rate(1.0, 1.0, 0.5) == pytest.approx(0.25, abs=1e-6)


def _judge(messages_text: str) -> str:
    return str(simulated_verdict([{"role": "user", "content": messages_text}])["winner"])


def test_simulated_judge_position_bias_is_opt_in() -> None:
    answers = (
        "<!--shadoweval-sim-answer model=a quality=0.300-->\n"
        "<!--shadoweval-sim-answer model=b quality=0.800-->"
    )
    assert _judge(f"q\n{sim_tag(quality=0.5)}\n{answers}") == "B"
    assert _judge(f"q\n{sim_tag(judge_position_bias=1.0)}\n{answers}") == "A"
    picks = Counter(
        _judge(f"q{i}\n{sim_tag(judge_position_bias=0.1)}\n{answers}") for i in range(2000)
    )
    assert 0.07 < picks["A"] / 2000 < 0.13
    with pytest.raises(ValueError, match="position_bias"):
        sim_tag(judge_position_bias=1.5)
