"""Pure redaction of payload text before anything is written: patterns in, text out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# The regex parser behind `re` (sre_parse before 3.11): reads what a pattern requires.
from re import _constants as re_constants  # type: ignore[attr-defined]
from re import _parser as re_parser  # type: ignore[attr-defined]
from typing import Any

# The defaults live in a leaf module so that config can read them without importing ingest.
from shadoweval.redaction_defaults import DEFAULT_PATTERNS as DEFAULT_PATTERNS


@dataclass(frozen=True)
class Prefilter:
    """What every match of a pattern contains: characters, and one character of each class.

    A text lacking one cannot match, so the pattern's scan is skipped: `in` and a
    one-class search run at C speed, where a scan tries the whole pattern at every
    position (the default patterns cost ~30 µs per 400 characters of prose).
    """

    characters: frozenset[str] = frozenset()
    classes: tuple[re.Pattern[str], ...] = ()
    # A match holds this many characters of one class with no whitespace in a row: prose,
    # whose words are short, is ruled out by str.split at C speed, where the class search
    # finds a letter at once (the default api_key pattern: 27 µs → 3 µs per 450 characters).
    run_without_space: int = 0

    def rules_out(self, text: str) -> bool:
        for character in self.characters:
            if character not in text:
                return True
        # A loop, not any(): no generator per call on this hot path.
        for character_class in self.classes:
            if character_class.search(text) is None:
                return True
        if self.run_without_space:
            return max(map(len, text.split()), default=0) < self.run_without_space
        return False

    @classmethod
    def of(cls, pattern: re.Pattern[str]) -> Prefilter:
        """The prefilter of a compiled pattern; an empty one where it cannot tell."""
        if pattern.flags & (re.IGNORECASE | re.LOCALE):
            return cls()
        try:
            parsed = re_parser.parse(pattern.pattern, pattern.flags)
        except Exception:  # an internal module's shape changed: no prefilter, same result
            return cls()
        characters: set[str] = set()
        classes: dict[str, re.Pattern[str]] = {}
        _collect_required(list(parsed), characters, classes)
        return cls(frozenset(characters), tuple(classes.values()), _longest_run(list(parsed)))


_CATEGORY_ESCAPES = {
    re_constants.CATEGORY_DIGIT: r"\d",
    re_constants.CATEGORY_NOT_DIGIT: r"\D",
    re_constants.CATEGORY_SPACE: r"\s",
    re_constants.CATEGORY_NOT_SPACE: r"\S",
    re_constants.CATEGORY_WORD: r"\w",
    re_constants.CATEGORY_NOT_WORD: r"\W",
}
_REPEATS = {
    re_constants.MAX_REPEAT,
    re_constants.MIN_REPEAT,
    getattr(re_constants, "POSSESSIVE_REPEAT", re_constants.MAX_REPEAT),
}


def _collect_required(
    sequence: list[Any], characters: set[str], classes: dict[str, re.Pattern[str]]
) -> None:
    """Every element a match of `sequence` must contain: top-level literals and classes,
    and those of groups and of repeats taken at least once (branches, lookarounds and
    optional parts require nothing)."""
    for op, argument in sequence:
        if op is re_constants.LITERAL:
            characters.add(chr(argument))
        elif op is re_constants.IN:
            source = _class_source(argument)
            if source is not None and source not in classes:
                classes[source] = re.compile(source)
        elif op is re_constants.SUBPATTERN:
            _group, add_flags, _del_flags, inner = argument
            if not add_flags & (re.IGNORECASE | re.LOCALE):
                _collect_required(list(inner), characters, classes)
        elif op in _REPEATS:
            low, _high, inner = argument
            if low >= 1:
                _collect_required(list(inner), characters, classes)


# What str.split() splits on: every character for which str.isspace() holds.
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


_LONG_RUN = 12


def _longest_run(sequence: list[Any]) -> int:
    """The longest required top-level repeat of one character class that matches no
    whitespace: every match holds that many such characters in a row, so within one
    whitespace-separated word. 0 where the pattern has none or it is shorter than
    `_LONG_RUN` (words that long are common; the split would cost more than it saves)."""
    longest = 0
    for op, argument in sequence:
        if op not in _REPEATS:
            continue
        low, _high, inner = argument
        inner = list(inner)
        if low < 2 or len(inner) != 1 or inner[0][0] is not re_constants.IN:
            continue
        source = _class_source(inner[0][1])
        if source is None:
            continue
        character_class = re.compile(source)
        if not any(character_class.match(space) for space in _WHITESPACE):
            longest = max(longest, low)
    return longest if longest >= _LONG_RUN else 0


def _class_source(items: list[Any]) -> str | None:
    """A character class back as regex text, or None for a part it does not know."""
    parts = []
    for op, argument in items:
        if op is re_constants.NEGATE:
            parts.append("^")
        elif op is re_constants.LITERAL:
            parts.append(re.escape(chr(argument)))
        elif op is re_constants.RANGE:
            parts.append(f"{re.escape(chr(argument[0]))}-{re.escape(chr(argument[1]))}")
        elif op is re_constants.CATEGORY and argument in _CATEGORY_ESCAPES:
            parts.append(_CATEGORY_ESCAPES[argument])
        else:
            return None
    return f"[{''.join(parts)}]"


@dataclass(frozen=True)
class Redactor:
    patterns: tuple[tuple[str, re.Pattern[str], Prefilter], ...]

    @classmethod
    def from_patterns(cls, patterns: Mapping[str, str]) -> Redactor:
        compiled = ((name, re.compile(regex)) for name, regex in patterns.items())
        return cls(tuple((name, regex, Prefilter.of(regex)) for name, regex in compiled))

    def text(self, value: str) -> tuple[str, int]:
        """The text with every match replaced by `[REDACTED:<name>]`, and the replacements."""
        total = 0
        for name, pattern, prefilter in self.patterns:
            if prefilter.rules_out(value):
                continue
            value, count = pattern.subn(f"[REDACTED:{name}]", value)
            total += count
        return value, total

    def payload(self, value: Any) -> tuple[Any, int]:
        """Redact every string inside a JSON-like value (messages, content blocks, text)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            total = 0
            items = []
            for item in value:
                redacted, count = self.payload(item)
                items.append(redacted)
                total += count
            return items, total
        if isinstance(value, dict):
            total = 0
            out = {}
            for key, item in value.items():
                # Params (model settings) are not user text.
                if key == "params":
                    out[key] = item
                    continue
                redacted, count = self.payload(item)
                out[key] = redacted
                total += count
            return out, total
        return value, 0
