"""Judge prompt: versioning by hash, truncation that keeps the end of the conversation."""

from __future__ import annotations

from shadoweval.judge.prompts import (
    TRUNCATION_MARK,
    build_judge_prompt,
    build_user_turn,
    keep_end,
)


def test_prompt_hash_changes_with_the_rubric_only() -> None:
    default = build_judge_prompt()
    assert default.prompt_hash == build_judge_prompt().prompt_hash
    custom = build_judge_prompt("Code must compile.")
    assert custom.prompt_hash != default.prompt_hash
    assert "Code must compile." in custom.system


def test_keep_end_respects_the_budget_and_keeps_the_last_turn() -> None:
    text = "old " * 1000 + "FINAL QUESTION"
    cut = keep_end(text, 300)
    assert len(cut) == 300
    assert cut.startswith(TRUNCATION_MARK)
    assert cut.endswith("FINAL QUESTION")
    assert keep_end("short", 300) == "short"


def test_user_turn_fits_the_budget_and_keeps_both_answers() -> None:
    messages = [{"role": "user", "content": "x" * 50_000}, {"role": "user", "content": "LAST"}]
    turn = build_user_turn(
        messages=messages,
        system="be kind",
        answer_a="answer one " * 2000,
        answer_b="answer two",
        char_budget=8_000,
    )
    assert len(turn) <= 8_000 + 200  # delimiters and cut notices
    assert "LAST" in turn
    assert "answer two" in turn
    assert "Assistant A's Answer" in turn
    assert "Assistant B's Answer" in turn


def test_content_blocks_are_rendered_as_text() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"}]}]
    turn = build_user_turn(
        messages=messages, system=None, answer_a="a", answer_b="b", char_budget=4_000
    )
    assert "look" in turn
    assert "[image block]" in turn
