"""Retry timing: Retry-After parsing and jittered exponential backoff (seeded)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from shadoweval.retry import backoff_ceiling, equal_jitter, full_jitter, parse_retry_after

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("  7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("inf", None),
        ("soon", None),
        ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
        ("Fri, 27 Nov 2026 11:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    steps = [backoff_ceiling(n, base_seconds=0.5, max_seconds=3.0) for n in range(0, 6)]
    assert steps == [0.5, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_inside_its_band() -> None:
    rng = random.Random(3)
    for attempt in range(1, 8):
        step = backoff_ceiling(attempt, base_seconds=1.0, max_seconds=30.0)
        equal = equal_jitter(attempt, base_seconds=1.0, max_seconds=30.0, rng=rng)
        full = full_jitter(attempt, base_seconds=1.0, max_seconds=30.0, rng=rng)
        assert step / 2 <= equal <= step
        assert 0.0 <= full <= step
    # Seeded: the same generator state gives the same delays.
    assert equal_jitter(4, base_seconds=1.0, max_seconds=30.0, rng=random.Random(9)) == (
        equal_jitter(4, base_seconds=1.0, max_seconds=30.0, rng=random.Random(9))
    )
