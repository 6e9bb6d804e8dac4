"""How every figure reads on the dashboard: amounts in USD, rates in %, each with its 95 %
interval when estimated. The one place that wording lives (no I/O, no Streamlit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd  # type: ignore[import-untyped]

NO_VALUE = "—"


def usd(value: float | None, *, digits: int = 5) -> str:
    """USD with enough significant digits for per-request costs ($0.00111)."""
    if value is None:
        return NO_VALUE
    sign, value = ("−", -value) if value < 0 else ("", value)
    if value >= 100:
        return f"{sign}${value:,.0f}"
    if value >= 1:
        return f"{sign}${value:,.2f}"
    return f"{sign}${value:.{digits}f}"


def number(value: float | None, digits: int = 2) -> str:
    return NO_VALUE if value is None else f"{value:.{digits}f}"


def pct(value: float | None, *, digits: int = 1) -> str:
    return NO_VALUE if value is None else f"{100 * value:.{digits}f} %"


def usd_cell(value: float) -> str:
    """A table cell in USD, four decimals below $1 (monitoring and savings totals)."""
    return usd(float(value), digits=4)


def percent_cell(value: float) -> str:
    """A table cell already in percent (a "(%)" column): "78.9 %"."""
    return f"{float(value):.1f} %"


def pct_interval(low: float | None, high: float | None, *, digits: int = 1) -> str:
    if low is None or high is None:
        return "95 % CI n/a"
    return f"95 % CI {100 * low:.{digits}f}–{100 * high:.{digits}f} %"


def rate_with_interval(estimate: Mapping[str, Any] | None) -> str:
    """ "12.5 % (95 % CI 8.0–17.0 %, n = 40)" from an Estimate {estimate, ci_low, ci_high, n}."""
    if not estimate or estimate.get("estimate") is None:
        return f"{NO_VALUE} (n = {estimate.get('n', 0) if estimate else 0})"
    return (
        f"{pct(estimate['estimate'])} "
        f"({pct_interval(estimate.get('ci_low'), estimate.get('ci_high'))}"
        f", n = {estimate.get('n', 0)})"
    )


def share_with_interval(share: Mapping[str, Any] | None) -> str:
    """A {share, ci95_low, ci95_high, count, n} figure as text."""
    if not share or share.get("share") is None:
        return NO_VALUE
    return (
        f"{pct(share['share'])} ({pct_interval(share.get('ci95_low'), share.get('ci95_high'))}, "
        f"{share.get('count', 0)} of {share.get('n', 0)})"
    )


def usd_interval(value: float | None, interval: Sequence[float] | None) -> str:
    if value is None:
        return NO_VALUE
    if not interval or len(interval) != 2 or None in interval:
        return usd(value)
    return f"{usd(value)} (95 % CI {usd(interval[0])}–{usd(interval[1])})"


def sequential_state(state: Mapping[str, Any] | None) -> str:
    """The quality-drop detector in words: watching (and any rise it sees), or alarmed since."""
    if not state:
        return "not started"
    if state.get("alarmed_at_ts"):
        return f"ALARM since {utc_text(state['alarmed_at_ts'])} (decision time)"
    labels = int(state.get("labels") or 0)
    evidence = max(0.0, float(state.get("evidence") or 0.0))
    post_n = int(state.get("post_change_labels") or 0)
    if post_n == 0 or state.get("post_change_harm_rate") is None:
        return f"watching: no rise seen in {labels} labels"
    return (
        f"watching: harm {pct(state['post_change_harm_rate'])} in the last {post_n} labels "
        f"(since {utc_text(state.get('change_ts'))}) against "
        f"{pct(state.get('pre_change_harm_rate'))} "
        f"before; evidence {pct(min(evidence, 1.0), digits=0)} of the alarm threshold"
    )


def utc_text(value: Any) -> str:
    if not value:
        return NO_VALUE
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return str(stamp.strftime("%Y-%m-%d %H:%M UTC"))


def percent_value(share: float | None) -> float | None:
    """A 0–1 share as a number of percent (tables say "(%)" in the header)."""
    return None if share is None else 100 * float(share)
