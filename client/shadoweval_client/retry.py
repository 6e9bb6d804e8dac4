"""Retry timing shared by every sender: reading `Retry-After`, and exponential backoff with
jitter. Standard library only, so the router-side client can use it and still install
without the server's dependencies."""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC, datetime


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date.

    Returns None when absent or unreadable, 0 for dates in the past. Fractional seconds are
    tolerated although RFC 9110 only defines integers; a date without a zone is GMT.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def backoff_ceiling(attempt: int, *, base_seconds: float, max_seconds: float) -> float:
    """base · 2^(attempt−1), capped at max_seconds: the step after failed attempt `attempt`
    (1-based; 0 counts as 1)."""
    return float(min(max_seconds, base_seconds * 2.0 ** max(0, attempt - 1)))


def equal_jitter(
    attempt: int, *, base_seconds: float, max_seconds: float, rng: random.Random | None = None
) -> float:
    """Half the backoff step plus up to as much again at random: never less than half a
    step, so replicas spread out without coming back at once."""
    ceiling = backoff_ceiling(attempt, base_seconds=base_seconds, max_seconds=max_seconds)
    return ceiling / 2 + _uniform(0.0, ceiling / 2, rng)


def full_jitter(
    attempt: int, *, base_seconds: float, max_seconds: float, rng: random.Random | None = None
) -> float:
    """Anywhere between 0 and the backoff step (AWS's "full jitter")."""
    ceiling = backoff_ceiling(attempt, base_seconds=base_seconds, max_seconds=max_seconds)
    return _uniform(0.0, ceiling, rng)


def _uniform(low: float, high: float, rng: random.Random | None) -> float:
    # Jitter spreads retries out; it is no secret, so the module generator serves.
    return rng.uniform(low, high) if rng is not None else random.uniform(low, high)  # noqa: S311
