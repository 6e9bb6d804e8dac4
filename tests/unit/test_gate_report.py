"""The gate's pure parts: its stratified sample, its verdict, its Markdown and JUnit reports.

The XML parsed here is the module's own output (hence the S314 noqa), never untrusted input.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, select

from shadoweval.gate import budget
from shadoweval.gate.budget import estimate_item_cost
from shadoweval.gate.evaluation import GateEvaluation, JudgedPair, error_share_exceeded, evaluate
from shadoweval.gate.report import (
    render_error_junit,
    render_error_markdown,
    render_junit,
    render_markdown,
)
from shadoweval.gate.sample import allocate, seeded_order
from shadoweval.stats.noninferiority import LOSS, TIE, WIN


def pairs(segment: str, wins: int, ties: int, losses: int, errors: int = 0) -> list[JudgedPair]:
    labels = [WIN] * wins + [TIE] * ties + [LOSS] * losses + [None] * errors
    return [
        JudgedPair(
            segment=segment,
            request_id=f"{segment}-{i}",
            label=label,
            score_candidate=2.0 + i % 3 if label == LOSS else 6.0,
            score_replaced=8.0 if label == LOSS else 6.0,
            request_text=f"[user]: {segment} question {i}",
            candidate_answer=f"candidate answer {i} | with a pipe",
            replaced_answer=f"replaced answer {i}",
            rationale="B is correct",
            error="provider_failure: down" if label is None else None,
        )
        for i, label in enumerate(labels)
    ]


def example_evaluation() -> GateEvaluation:
    return evaluate(
        router="support",
        candidate_model="new-model",
        replaced_model="old-model",
        max_drop=0.1,
        alpha=0.05,
        pairs=pairs("billing", 60, 180, 60) + pairs("math|code", 1, 5, 14, errors=1),
        segment_traffic={"billing": 900, "math|code": 100},
        cost_usd=0.25,
    )


def test_allocation_is_even_and_gives_what_small_segments_cannot_use_to_the_others() -> None:
    assert allocate({"a": 100, "b": 100, "c": 100}, 30) == {"a": 10, "b": 10, "c": 10}
    assert allocate({"a": 100, "b": 100, "c": 4}, 30) == {"a": 13, "b": 13, "c": 4}
    assert allocate({"a": 5, "b": 3}, 100) == {"a": 5, "b": 3}
    assert allocate({"big": 50, "small": 10, "empty": 0}, 3) == {"big": 2, "small": 1, "empty": 0}
    assert sum(allocate({"x": 7, "y": 11, "z": 13}, 20).values()) == 20


def drawn(ids: list[int], count: int, seed: int) -> list[int]:
    """The sample the database draws with seeded_order (in-memory SQLite, no server)."""
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True))
    with engine.begin() as connection:
        table.create(connection)
        connection.execute(table.insert(), [{"id": i} for i in ids])
        query = select(table.c.id).order_by(seeded_order(table.c.id, seed), table.c.id)
        return [int(i) for i in connection.scalars(query.limit(count))]


def test_the_sample_is_seeded_and_reproducible() -> None:
    ids = list(range(1, 2001))
    first = drawn(ids, 100, seed=1)
    assert first == drawn(list(reversed(ids)), 100, seed=1)  # insertion order does not matter
    assert len(set(first)) == 100
    assert first != drawn(ids, 100, seed=2)
    assert drawn(ids, 50, seed=1) == first[:50]
    # Spread over the whole history, not one stretch of it, nor an arithmetic progression.
    assert 700 < sum(first) / len(first) < 1300
    assert sum(1 for i in first if i <= 1000) in range(35, 66)
    assert len({b - a for a, b in itertools.pairwise(sorted(first))}) > 30
    # Ids far beyond 2**31 stay within 64-bit arithmetic.
    big = [2**62 + i for i in range(50)]
    assert sorted(drawn(big, 50, seed=3)) == big


def test_a_segment_failing_fails_the_gate_and_is_named() -> None:
    result = example_evaluation()
    assert not result.passed
    assert result.failing_segments == ["math|code"]
    # Overall weights the segments by traffic, 0.9 and 0.1.
    assert result.overall.drop == pytest.approx(0.1 * 13 / 20)
    assert result.items_error == 1
    worst = result.worst_examples
    assert len(worst) == 5
    # The failing segment's losses come first, the largest score gap first among them.
    assert [example.segment for example in worst] == ["math|code"] * 5
    assert [example.score_candidate for example in worst][:2] == [2.0, 2.0]


def test_markdown_has_the_table_failing_segments_and_worst_examples() -> None:
    markdown = render_markdown(example_evaluation())
    assert markdown.startswith(
        "# Release gate FAILED: `new-model` replacing `old-model` on router `support`"
    )
    assert "| segment | n | candidate wins | ties | replaced wins | errors | drop |" in markdown
    assert "| `billing` | 300 | 60 | 180 | 60 | 0 | +0.000 |" in markdown
    # A pipe inside a segment name is escaped so the table keeps its columns.
    assert "| `math\\|code` | 20 | 1 | 5 | 14 | 1 | +0.650 |" in markdown
    assert "- `math|code`: drop +0.650 is at or above the margin 0.100" in markdown
    assert "| **overall** (traffic-weighted) | 320 |" in markdown
    assert "## Worst examples" in markdown
    assert "```text\ncandidate answer" in markdown
    assert "cost 0.2500 USD" in markdown


def test_answers_with_backticks_cannot_break_out_of_their_fence() -> None:
    tricky = JudgedPair(
        segment="s",
        request_id="r",
        label=LOSS,
        score_candidate=1.0,
        score_replaced=9.0,
        candidate_answer="```\n# injected heading\n```",
    )
    result = evaluate(
        router="r",
        candidate_model="c",
        replaced_model="o",
        max_drop=0.1,
        alpha=0.05,
        pairs=[tricky],
        segment_traffic={"s": 1},
    )
    assert "````text\n```\n# injected heading\n```\n````" in render_markdown(result)


def test_junit_has_one_case_per_segment_and_overall_with_numbers_on_failures() -> None:
    root = ET.fromstring(render_junit(example_evaluation()))  # noqa: S314
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "2", "0")
    suite = root.find("testsuite")
    assert suite is not None
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["segment billing", "segment math|code", "overall"]
    assert cases["segment billing"].find("failure") is None
    failure = cases["segment math|code"].find("failure")
    assert failure is not None
    assert "at or above the margin" in (failure.get("message") or "")
    assert "n=20 candidate_wins=1 ties=5 replaced_wins=14 drop=+0.650" in (failure.text or "")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["max_drop"] == "0.1"


def test_an_equal_candidate_passes() -> None:
    result = evaluate(
        router="r",
        candidate_model="c",
        replaced_model="o",
        max_drop=0.1,
        alpha=0.05,
        pairs=pairs("a", 30, 90, 30) + pairs("b", 30, 90, 30),
        segment_traffic={"a": 1, "b": 1},
    )
    assert result.passed
    root = ET.fromstring(render_junit(result))  # noqa: S314
    assert root.get("failures") == "0"
    assert "Release gate PASSED" in render_markdown(result)
    assert "No request where the replaced model's answer won" not in render_markdown(result)


def test_error_reports_say_there_is_no_verdict() -> None:
    names = {"router": "r", "candidate_model": "c", "replaced_model": "o", "error": "outage"}
    assert "could not reach a verdict: outage" in render_error_markdown(**names)
    root = ET.fromstring(render_error_junit(**names))  # noqa: S314
    assert (root.get("errors"), root.get("failures")) == ("1", "0")
    assert error_share_exceeded(10, 1, 0.05)
    assert not error_share_exceeded(100, 5, 0.05)
    assert error_share_exceeded(0, 0, 0.05)


def test_an_items_reservation_bounds_what_its_remaining_calls_can_cost() -> None:
    price = (3.0, 15.0)  # USD per million input / output tokens
    common = {
        "request_tokens": 1000,
        "answer_max_tokens": 500,
        "judge_system_tokens": 800,
        "judge_max_tokens": 200,
        "candidate_price": price,
        "replaced_price": price,
        "judge_price": price,
    }
    everything = estimate_item_cost(
        calls=budget.Calls(candidate=True, replaced=True, judge_orders=2), **common
    )
    answers = 2 * (1000 * 3.0 + 500 * 15.0) / 1e6
    judge_input = 800 + budget.JUDGE_TEMPLATE_TOKENS + 1000 + 2 * 500
    assert everything == pytest.approx(answers + 2 * (judge_input * 3.0 + 200 * 15.0) / 1e6)
    # What is stored already is not paid for again; an unpriced model is refused unpaid.
    one_order = estimate_item_cost(
        calls=budget.Calls(candidate=False, replaced=False, judge_orders=1), **common
    )
    assert one_order == pytest.approx((everything - answers) / 2)
    assert (
        estimate_item_cost(
            calls=budget.Calls(candidate=True, replaced=False, judge_orders=0),
            **{**common, "candidate_price": None},
        )
        == 0.0
    )
    # Input is counted at 2 bytes per token: more tokens than any English text has.
    assert budget.tokens("x" * 4000) == 2000
    assert budget.tokens({"messages": [{"role": "user", "content": "é" * 10}]}) >= 10
