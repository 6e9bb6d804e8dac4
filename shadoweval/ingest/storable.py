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
import re
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
# `+` is dropped: NaN/Infinity, and numbers beyond a double: 210+ digits before the point (a
# 2-digit exponent then passes 1e308: 1{300 zeros}e10 is inf) or an exponent of 3+ digits
# (1e400). False positives cost a walk of every item of the body, so ordinary text must not
# look like a marker: a UUID's "3e412" is not an exponent (a number's exponent ends at a
# delimiter), "\u2019" is not an escaped NUL (looked for in the body, not the canonical
# text), and an emoji's surrogate pair is not a lone surrogate.
_CANONICAL = bytes.maketrans(b"0123456789ED", b"0000000000ed")
_MARKERS = (b"NaN", b"Infinity", b"0" * 210)
_BIG_EXPONENT = re.compile(rb"0e000+(?:[ \t\r\n,\]}]|\Z)")
# Escaped backslashes are matched too, so `\\ud800` (a backslash, then text) is no escape.
_SURROGATE_ESCAPE = re.compile(rb"\\\\|\\u[dD][0-9a-fA-F]{3}")

# Bytes of JSON structure: quotes, brackets and the line breaks NDJSON is split at (never
# raw inside a JSON string); the rest is deleted before measuring depth.
_LINE_BREAKS = b"\n\r\x0b\x0c\x1c\x1d\x1e"
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}' + _LINE_BREAKS)
_STEP = np.zeros(256, np.int32)
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_IS_LINE_BREAK = np.zeros(256, bool)
_IS_LINE_BREAK[list(_LINE_BREAKS)] = True
# An escape and the character it escapes; a line break stays (it ends any JSON line).
_ESCAPE = re.compile(rb"\\[^" + re.escape(_LINE_BREAKS) + rb"]")


def json_depth(text: bytes) -> int:
    """Nesting depth of JSON text (arrays and objects), without parsing it.

    Vectorised over the quotes and brackets alone: a string holding no bracket leaves an
    adjacent pair of quotes, dropped at C speed (dropping two adjacent quotes flips no
    other quote's parity); brackets inside the remaining strings are masked by counting
    quotes, with escaped characters dropped first. An NDJSON line cannot hide a later
    line's depth: quote parity restarts at each line break, and depth is the largest rise
    over the lowest point before it, so a line's surplus closing brackets or odd quote
    lowers nothing after it. Malformed text gives a meaningless figure, which only decides
    whether items are walked (`first_problem` is exact).
    """
    if b"\\" in text:
        # Only an escaped quote moves a string's end; every escape goes, in one pass.
        text = _ESCAPE.sub(b"", text)
    structure = text.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if not structure:
        return 0
    codes = np.frombuffer(structure, np.uint8)
    steps = _STEP[codes]
    if b'"' in structure:
        quotes = np.cumsum(codes == ord('"'))
        line_start = np.maximum.accumulate(np.where(_IS_LINE_BREAK[codes], quotes, 0))
        steps[((quotes - line_start) & 1).astype(bool)] = 0
    level = np.cumsum(steps)
    lowest = np.minimum(np.minimum.accumulate(level), 0)
    return int((level - lowest).max(initial=0))


def _has_lone_surrogate_escape(body: bytes) -> bool:
    """Whether JSON text escapes a surrogate outside a high-low pair."""
    high_ends_at = -1  # where an unpaired high surrogate's escape ends, or -1
    for match in _SURROGATE_ESCAPE.finditer(body):
        escape = match.group()
        if len(escape) == 2:  # an escaped backslash
            if high_ends_at != -1:
                return True
        elif escape[3] in b"89abAB":
            if high_ends_at != -1:
                return True
            high_ends_at = match.end()
        elif high_ends_at != match.start():
            return True  # a low surrogate not right after a high one
        else:
            high_ends_at = -1
    return high_ends_at != -1


def body_may_be_unstorable(body: bytes) -> bool:
    """Whether a JSON body may hold an item `first_problem` refuses (false positives are
    fine; no false negatives for JSON text). CPU: ~4 ms per MB of prose-like decisions,
    ~7 with code (escapes, brackets in strings) in them: ~5 µs of a 1.4 kB decision."""
    canonical = body.translate(_CANONICAL, b"+")
    return (
        any(marker in canonical for marker in _MARKERS)
        or (b"e000" in canonical and _BIG_EXPONENT.search(canonical) is not None)
        or (
            b"\\" in body
            and (b"\\u0000" in body or (b"\\ud" in canonical and _has_lone_surrogate_escape(body)))
        )
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
