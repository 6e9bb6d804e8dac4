"""The default redaction patterns: a leaf module, so `config` can name them without
importing ingest (which imports config)."""

from __future__ import annotations

# Defaults cover the common leaks; deployments add their own (SHADOWEVAL_REDACTION_PATTERNS).
DEFAULT_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    # Grouped digits (555-0100, +1 (415) 555 0100), not dates (2026-11-27) or versions.
    "phone": r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]\d{3,4}"
    r"(?:[ .-]\d{2,4})?(?!\w)",
    "api_key": r"\b(?:sk|pk|rk|sek|xox[abprs]|ghp|gho|AKIA)[-_A-Za-z0-9]{16,}\b",
}
