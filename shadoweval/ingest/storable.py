"""What both databases can store: the checks that keep hostile input an item's 422, not a 500.

PostgreSQL cannot hold U+0000 in text or jsonb, no UTF-8 encoder takes a lone surrogate,
JSON has no NaN or Infinity (SQLite would keep invalid JSON, PostgreSQL refuses it), and
pydantic-core's encoder stops at ~250 levels of nesting. The rule, identical on both
databases: an item carrying any of these, in an identifier or in content, is rejected on
its own (index, field path, reason) and the rest of its batch is stored.

The checks are pure and cheap on the common path: ingest looks for the markers of these
values in the text it encodes anyway, and walks an item (`first_problem`) only when one
is there.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

# Levels of arrays and objects one item may nest (a decision with tool schemas in its
# payload needs ~15). Deeper items are refused: the read API nests a stored item a few
# levels deeper again, and the encoder refuses ~250.
MAX_ITEM_DEPTH = 64

# Integers no double can hold are refused anywhere in an item: every reader of free-form
# JSON (drift, features, the dashboard) takes numbers as doubles. Typed integer fields keep
# their own bounds (token counts: 2·10⁹, within PostgreSQL INTEGER).
_LARGEST_DOUBLE = sys.float_info.max

# Markers of unstorable values in JSON text, after digits become 0, `E`/`D` lower case and
# `+` is dropped: an escaped NUL or surrogate, NaN/Infinity, an exponent of 3+ digits
# (1e400 parses as inf) and 309+ digits (beyond a double). False positives only cost a walk.
_CANONICAL = bytes.maketrans(b"0123456789ED", b"0000000000ed")
_ESCAPED_MARKERS = (b"\\u0000", b"\\ud")  # only where the body has a backslash at all
_MARKERS = (b"NaN", b"Infinity", b"e000", b"0" * 309)

# Bytes of JSON structure: quotes and brackets; the rest is deleted before measuring depth.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_STEP = np.zeros(256, np.int32)
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_depth(text: bytes) -> int:
    """Nesting depth of JSON text (arrays and objects), without parsing it.

    Vectorised: brackets inside strings are masked by counting quotes, with escaped
    characters dropped first. ~1.5 ms per MB. Malformed text gives a meaningless figure,
    which only decides whether items are walked (`first_problem` is exact).
    """
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = np.frombuffer(text.translate(None, _NOT_STRUCTURE), np.uint8)
    if structure.size == 0:
        return 0
    inside_string = (np.cumsum(structure == ord('"')) & 1).astype(bool)
    steps = _STEP[structure]
    steps[inside_string] = 0
    return int(np.cumsum(steps).max(initial=0))


def body_may_be_unstorable(body: bytes) -> bool:
    """Whether a JSON body may hold an item `first_problem` refuses (false positives are
    fine; no false negatives for JSON text). ~3–4 ms per MB, ~1 % of ingest's time."""
    canonical = body.translate(_CANONICAL, b"+")
    return (
        any(marker in canonical for marker in _MARKERS)
        or (b"\\" in body and any(marker in canonical for marker in _ESCAPED_MARKERS))
        or json_depth(body) > MAX_ITEM_DEPTH
    )


def string_problem(value: str) -> str | None:
    """Why a string cannot be stored, or None."""
    if "\x00" in value:
        return "contains U+0000 (NUL), which PostgreSQL cannot store; remove it"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            return (
                f"contains a lone surrogate (U+{ord(value[error.start]):04X}), which is not "
                "Unicode text; encode the text as UTF-8"
            )
    return None


def printable(part: str | int) -> str | int:
    """A field-path element as an answer can carry it: lone surrogates backslash-escaped."""
    if isinstance(part, str) and not part.isascii():
        return part.encode("utf-8", "backslashreplace").decode("utf-8")
    return part


def is_printable(value: Any) -> bool:
    """Whether a value is a string an answer can echo (no NUL, no lone surrogate)."""
    return isinstance(value, str) and string_problem(value) is None


Problem = tuple[list[str | int], str, str]


def _shown(path: tuple[str | int, ...]) -> list[str | int]:
    return [printable(part) for part in path]


def first_problem(value: Any, loc: tuple[str | int, ...] = ()) -> Problem | None:
    """(field path, reason, error type) of the first value that cannot be stored, or None.

    Walks with an explicit stack: no depth of input can exhaust Python's.
    """
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(value, loc, 0)]
    while stack:
        current, path, depth = stack.pop()
        if isinstance(current, str):
            reason = string_problem(current)
            if reason is not None:
                return _shown(path), reason, "string_unstorable"
        elif isinstance(current, int) and not isinstance(current, bool):
            if not -_LARGEST_DOUBLE <= current <= _LARGEST_DOUBLE:
                return (
                    _shown(path),
                    "integer out of range: beyond what a JSON number (a double) can hold",
                    "integer_out_of_range",
                )
        elif isinstance(current, float):
            if not math.isfinite(current):
                return (
                    _shown(path),
                    f"{current} is not a JSON number; send a finite number or null",
                    "finite_number",
                )
        elif isinstance(current, dict | list):
            if depth >= MAX_ITEM_DEPTH:
                return (
                    _shown(path),
                    f"nests deeper than {MAX_ITEM_DEPTH} levels of arrays and objects",
                    "too_deep",
                )
            if isinstance(current, dict):
                for key, child in reversed(current.items()):
                    if isinstance(key, str):
                        reason = string_problem(key)
                        if reason is not None:
                            where = _shown((*path, key))
                            return where, f"field name {reason}", "string_unstorable"
                    stack.append((child, (*path, key), depth + 1))
            else:
                for index in range(len(current) - 1, -1, -1):
                    stack.append((current[index], (*path, index), depth + 1))
    return None
