"""When a sampling period closes, and where a decision's period starts (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shadoweval.sampling.periods import closed_by, period_start_of

T = datetime(2026, 10, 5, 10, tzinfo=UTC)
HOUR, LATE = timedelta(hours=1), timedelta(minutes=5)


@pytest.mark.parametrize(
    ("ts", "minutes", "start"),
    [
        (datetime(2026, 10, 5, 10, 59, 59, tzinfo=UTC), 60, T),
        (datetime(2026, 10, 5, 10, 7, tzinfo=UTC), 5, T + timedelta(minutes=5)),
        (datetime(2026, 10, 5, 23, 59, tzinfo=UTC), 1440, datetime(2026, 10, 5, tzinfo=UTC)),
        # A ts with another offset lands in its UTC period.
        (datetime.fromisoformat("2026-10-05T12:30:00+02:00"), 60, T),
    ],
)
def test_periods_are_aligned_to_utc_midnight(ts: datetime, minutes: int, start: datetime) -> None:
    assert period_start_of(ts, minutes) == start


def test_a_period_closes_only_once_every_router_that_reached_it_is_past_it() -> None:
    end = T + HOUR
    assert closed_by(T, end, {"a": end + LATE}, set(), LATE) == "watermark"
    # Inside the lateness allowance: late decisions may still come.
    assert closed_by(T, end, {"a": end + LATE - timedelta(seconds=1)}, set(), LATE) is None
    # Router b is still inside the period: it holds it open for everyone.
    assert (
        closed_by(T, end, {"a": end + 2 * HOUR, "b": T + timedelta(minutes=30)}, set(), LATE)
        is None
    )
    # A router that has not reached the period yet does not hold it.
    assert closed_by(T, end, {"a": end + LATE, "b": T - HOUR}, set(), LATE) == "watermark"
    # Nobody reached it: nothing to close.
    assert closed_by(T, end, {"a": T - timedelta(seconds=1)}, set(), LATE) is None


def test_a_router_gone_quiet_no_longer_holds_a_period_open() -> None:
    end = T + HOUR
    clocks = {"a": end + 2 * HOUR, "b": T + timedelta(minutes=30)}
    assert closed_by(T, end, clocks, {"b"}, LATE) == "idle"
    # The end of a stream: the only router stopped mid-period.
    assert closed_by(T, end, {"b": T + timedelta(minutes=30)}, {"b"}, LATE) == "idle"
    assert closed_by(T, end, clocks, {"a"}, LATE) is None
