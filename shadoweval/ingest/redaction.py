"""Pure redaction of payload text before anything is written: patterns in, text out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Defaults cover the common leaks; deployments add their own (SHADOWEVAL_REDACTION_PATTERNS).
DEFAULT_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    # Grouped digits (555-0100, +1 (415) 555 0100), not dates (2026-11-27) or versions.
    "phone": r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]\d{3,4}"
    r"(?:[ .-]\d{2,4})?(?!\w)",
    "api_key": r"\b(?:sk|pk|rk|sek|xox[abprs]|ghp|gho|AKIA)[-_A-Za-z0-9]{16,}\b",
}


@dataclass(frozen=True)
class Redactor:
    patterns: tuple[tuple[str, re.Pattern[str]], ...]

    @classmethod
    def from_patterns(cls, patterns: Mapping[str, str]) -> Redactor:
        return cls(tuple((name, re.compile(regex)) for name, regex in patterns.items()))

    def text(self, value: str) -> tuple[str, int]:
        """The text with every match replaced by `[REDACTED:<name>]`, and the replacements."""
        total = 0
        for name, pattern in self.patterns:
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
