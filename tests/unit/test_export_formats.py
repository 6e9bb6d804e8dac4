"""The training export's formats on hand-made pairs (no database)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shadoweval.pool import export


def pair(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r:1",
        "cheaper_model": "haiku",
        "stronger_model": "sonnet",
        "messages": [
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "Hi, it's me"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "why?"}]},
        ],
        "prompt": "why?",
        "cheaper_answer": "because",
        "stronger_answer": "because, in detail",
        "score_cheaper": 6.5,
        "score_stronger": 8.0,
        "winner": "model_b",
        "weight": 20.0,
        "segment_value": "billing",
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("outcome", "strong_needed", "winner"),
    [
        ("stronger_wins", 1, "model_b"),
        ("cheaper_wins", 0, "model_a"),
        ("tie", 0, "tie"),
        # Disagreeing orders count as a tie, so the cheaper answer is acceptable.
        ("inconsistent", 0, "tie"),
    ],
)
def test_the_winner_follows_the_label(outcome: str, strong_needed: int, winner: str) -> None:
    assert export._winner(outcome, strong_needed) == winner


def test_routellm_row_has_the_battle_columns() -> None:
    row = export.routellm_row(pair())
    assert row == {
        "id": "r:1",
        "model_a": "haiku",
        "model_b": "sonnet",
        "prompt": json.dumps(["Hi, it's me", "why?"]),
        "response_a": "because",
        "response_b": "because, in detail",
        "winner_model_a": 0,
        "winner_model_b": 1,
        "winner_tie": 0,
        "weight": 20.0,
        "segment": "billing",
    }
    tie = export.routellm_row(pair(winner="tie"))
    assert (tie["winner_model_a"], tie["winner_model_b"], tie["winner_tie"]) == (0, 0, 1)


def test_notdiamond_columns_per_provider_and_model() -> None:
    models = ["gpt-4o-mini", "haiku", "sonnet"]
    providers = {"gpt-4o-mini": "openai", "haiku": "anthropic", "sonnet": "anthropic"}
    header = export.notdiamond_header(models, providers.__getitem__)
    line = export._csv_line(export.notdiamond_row(pair(prompt='say "hi", then go'), models))

    assert header == [
        "prompt",
        "openai/gpt-4o-mini/response",
        "openai/gpt-4o-mini/score",
        "anthropic/haiku/response",
        "anthropic/haiku/score",
        "anthropic/sonnet/response",
        "anthropic/sonnet/score",
    ]
    # Quotes and commas survive the CSV round trip; a model outside the pair stays empty.
    assert next(csv.reader(io.StringIO(line))) == [
        'say "hi", then go',
        "",
        "",
        "because",
        "6.5",
        "because, in detail",
        "8.0",
    ]


def test_parse_query_and_format() -> None:
    query = export.parse_query(router="r", since="2026-11-27T00:00:00Z", until=None)
    assert query == export.ExportQuery(router="r", since=datetime(2026, 11, 27, tzinfo=UTC))
    with pytest.raises(ValueError, match="--since: give a UTC offset"):
        export.parse_query(router="r", since="2026-11-27T00:00:00", until=None)
    with pytest.raises(ValueError, match="--until: not an RFC 3339 time"):
        export.parse_query(router="r", since=None, until="yesterday")
    assert export.parse_format("routellm") is export.ExportFormat.ROUTELLM
    with pytest.raises(ValueError, match="one of jsonl, routellm, notdiamond"):
        export.parse_format("parquet")
