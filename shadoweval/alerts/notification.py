"""What the alert lifecycle hands to delivery: one message, channel-independent.

The lifecycle (service.py) decides *that* something must be said; the outbox
(outbox.py) and channels (channels.py) decide *how* and retry until it is said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

NotificationKind = Literal["trigger", "reminder", "resolve", "retrain"]
Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    # Stable per (rule, router, segment); PagerDuty's dedup_key, so trigger and resolve pair up.
    dedup_key: str
    rule: str
    severity: Severity
    # "<SEVERITY> <rule> <segment> on <router>": one severity word, the same on every channel.
    title: str
    # First line: the sentence a person reads in one breath (split_summary); the lines after
    # it: the statistician's detail.
    summary: str
    ts: datetime  # decision time the alert refers to (end of its window)
    router: str | None = None
    segment: str | None = None
    # The numbers behind it: estimate, ci_low, ci_high, n, threshold, window_start, window_end, …
    numbers: dict[str, Any] = field(default_factory=dict)
    dashboard_url: str | None = None
    runbook_url: str | None = None
    alert_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


# --- how notification text says times, shares and lists (shared by lifecycle, outbox,
# channels) --------------------------------------------------------------------------------


def when_text(value: datetime | str | None) -> str:
    """A time as a person reads it: `YYYY-MM-DD HH:MM UTC`, no seconds or microseconds.

    Accepts the ISO strings alert numbers store; naive values are taken as UTC (the store's
    convention). Anything that is not a time is shown as it is.
    """
    if value is None:
        return "…"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def percent_text(share: float) -> str:
    """0.2379 → "24 %"; shares under 10 % keep one decimal ("8.5 %") so small rates differ."""
    pct = 100 * share
    return f"{pct:.1f} %" if abs(pct) < 10 else f"{pct:.0f} %"


def list_text(value: Any) -> str:
    """A list as "a, b" rather than its Python repr; "none" when empty."""
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return "none" if value is None else str(value)


def split_summary(summary: str) -> tuple[str, str]:
    """(headline, detail): the first line is the sentence read in one breath; the lines after
    it are the statistician's detail (statistic, threshold, p-value, window)."""
    headline, _, detail = summary.partition("\n")
    return headline.strip(), detail.strip()
