"""What the alert lifecycle hands to delivery: one message, channel-independent.

The lifecycle (service.py) decides *that* something must be said; the outbox
(outbox.py) and channels (channels.py) decide *how* and retry until it is said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
    title: str
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
