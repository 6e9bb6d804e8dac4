"""The storability checks of ingest (ingest/storable.py), on small values."""

from __future__ import annotations

import json

import pytest

from shadoweval.ingest.storable import (
    MAX_ITEM_DEPTH,
    body_may_be_unstorable,
    first_problem,
    json_depth,
    printable,
)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not count
        (b'{"a": "x\\"[[[", "b": [1]}', 2),  # nor after an escaped quote
        (b"1", 0),
        (b'{"a": "x\\\\", "b": [[1]]}', 3),  # an escaped backslash ends no string early
        (b'["]", ["[", "{"], "}"]', 2),  # brackets in strings beside nested arrays
        (b'{\n "a": [\n  1\n ]\n}', 2),  # pretty-printed: depth spans lines
    ],
)
def test_json_depth_counts_structure_only(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


_DEEP_ITEM = b'{"a": ' + b"[" * (MAX_ITEM_DEPTH + 1) + b"]" * (MAX_ITEM_DEPTH + 1) + b"}"


@pytest.mark.parametrize(
    "line_before",
    [
        b'{"request_id": "x',  # an odd quote: the next line's brackets looked like a string
        b"]" * (MAX_ITEM_DEPTH + 5),  # surplus closers: the next line started below zero
        b'{"a": "\\"}"]]]]',  # malformed escapes and closers together
        b'{"a": "x\\',  # a backslash last on the line escapes no line break
    ],
)
def test_a_malformed_ndjson_line_hides_no_deep_item_after_it(line_before: bytes) -> None:
    # The malformed line is only its own item's error; the deep item after it is stored
    # unless the body is walked, so the body must still be marked.
    for separator in (b"\n", b"\r\n", b"\r", b"\x0c"):
        assert body_may_be_unstorable(line_before + separator + _DEEP_ITEM)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "x\\u0000"}',
        '{"a": "\\ud800"}',
        '{"a": "\\uDBFF"}',
        '{"a": NaN}',
        '{"a": -Infinity}',
        '{"a": 1E+400}',
        '{"a": ' + "9" * 309 + "}",
        '{"a": 1' + "0" * 300 + "e10}",  # 1e310: a short exponent on a long mantissa
        '{"a": 1.5E+400, "b": 1}',
        "[1e0400]",
        '{"a": "\\ud83d"}',  # a high surrogate alone
        '{"a": "\\ude00\\ud83d"}',  # a pair in the wrong order
        '{"a": "\\ud83d\\\\ude00"}',  # an escaped backslash between: no pair
        '{"a": "\\\\\\udc00"}',  # an escaped backslash, then a lone low surrogate
        "[" * (MAX_ITEM_DEPTH + 1) + "]" * (MAX_ITEM_DEPTH + 1),
    ],
)
def test_every_unstorable_value_marks_its_body(text: str) -> None:
    assert body_may_be_unstorable(text.encode())


def test_an_ordinary_body_is_not_walked() -> None:
    # Floats as Python writes them, small ones with 19 digits after the point, big ints;
    # ids with "e" then digits (UUIDs, hashes), escaped non-ASCII text and emoji: a marker
    # there walked every item of every body carrying them (+25 % of prepare's time).
    item = {"request_id": "5f0e412c-3e41-4e00-9e99-00e123456789", "ts": "2026-11-27T12:00:00Z"}
    item |= {"score": 0.0038456811358680287, "cost_usd": 1.5e-05, "n": 10**30, "ratio": 1e30}
    item |= {"tiny": 1e-300, "sha": "9e1000", "text": "It\u2019s caf\u00e9 \U0001f600 e100"}
    item |= {"big": 10**200, "expo": 1e99}
    assert not body_may_be_unstorable(json.dumps([item] * 3).encode())
    assert not body_may_be_unstorable(json.dumps([item] * 3, indent=2).encode())


@pytest.mark.parametrize(
    ("value", "loc", "kind"),
    [
        ({"a": [1, {"b": "x\x00"}]}, ["a", 1, "b"], "string_unstorable"),
        ({"a": {"k\x00": 1}}, ["a", "k\x00"], "string_unstorable"),
        ({"\ud800": 1}, ["\\ud800"], "string_unstorable"),
        ({"a": [float("nan")]}, ["a", 0], "finite_number"),
        ({"a": float("-inf")}, ["a"], "finite_number"),
        ({"a": -(10**309)}, ["a"], "integer_out_of_range"),
    ],
)
def test_first_problem_names_the_field_path(value: object, loc: list[object], kind: str) -> None:
    problem = first_problem(value)
    assert problem is not None
    assert (problem[0], problem[2]) == (loc, kind)


def test_values_at_the_limits_are_storable() -> None:
    deep: object = "leaf"
    for _ in range(MAX_ITEM_DEPTH - 1):
        deep = [deep]
    value = {"a": deep, "n": [-(10**300), 2**64], "t": True, "s": "ü ✓ 😀", "f": 1e308}
    assert first_problem(value) is None
    too_deep = first_problem({"a": [deep]})
    assert too_deep is not None
    assert too_deep[2] == "too_deep"


def test_printable_escapes_only_what_json_cannot_carry() -> None:
    assert printable("s-\ud800") == "s-\\ud800"
    assert printable("ü") == "ü"
    assert printable(3) == 3
