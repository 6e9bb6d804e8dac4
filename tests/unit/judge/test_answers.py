"""Placing a pair's routed and shadow answers on the cheaper and stronger sides."""

from __future__ import annotations

from dataclasses import dataclass

from shadoweval.judge.answers import RunAnswer, assemble


@dataclass
class Sides:
    direction: str
    cheaper_tier: str = "small"
    stronger_tier: str = "large"
    cheaper_model: str = "m-small"
    stronger_model: str = "m-large"


def test_forward_pair_puts_the_routed_answer_on_the_cheaper_side() -> None:
    answers = assemble(
        Sides("forward"),
        logged_response={"text": "logged"},
        runs={"shadow": RunAnswer("strong", 0.02)},
        logged_cost_usd=0.001,
    )
    assert (answers.cheaper_answer, answers.stronger_answer) == ("logged", "strong")
    assert (answers.cheaper_cost_usd, answers.stronger_cost_usd) == (0.001, 0.02)
    assert (answers.cheaper_model, answers.stronger_model) == ("m-small", "m-large")
    assert answers.direction == "forward"


def test_reverse_pair_puts_the_routed_answer_on_the_stronger_side() -> None:
    answers = assemble(
        Sides("reverse"),
        logged_response={"text": "logged"},
        runs={"shadow": RunAnswer("cheap", 0.001)},
        logged_cost_usd=0.03,
    )
    assert (answers.cheaper_answer, answers.stronger_answer) == ("cheap", "logged")
    assert (answers.cheaper_cost_usd, answers.stronger_cost_usd) == (0.001, 0.03)


def test_a_routed_rerun_replaces_the_logged_answer_and_its_cost() -> None:
    answers = assemble(
        Sides("forward"),
        logged_response={"text": "logged"},
        runs={"routed_rerun": RunAnswer("rerun", 0.004), "shadow": RunAnswer("strong")},
        logged_cost_usd=0.001,
    )
    assert (answers.cheaper_answer, answers.cheaper_cost_usd) == ("rerun", 0.004)


def test_missing_payload_and_shadow_give_no_answers() -> None:
    answers = assemble(Sides("forward"), logged_response=None, runs={})
    assert (answers.cheaper_answer, answers.stronger_answer) == (None, None)
    assert answers.stronger_cost_usd is None
