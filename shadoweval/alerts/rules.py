"""Alert rules, pure: definitions, validation of the rule file, evaluation, lifecycle steps.

No I/O here. `service.py` measures each rule's inputs and stores the alerts; this
module decides what a measurement means (ok / warn / alert / no data) and what an
alert's next step is (open, escalate, remind, resolve), so both can be tested on
tiny inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shadoweval.exceptions import InvalidConfiguration

RuleKind = Literal[
    "quality_drop",
    "calibration_drift",
    "feature_drift",
    "cascade_escalation_rate",
    "router_fallback_rate",
    "provider_failover_rate",
    "judge_inconsistency",
    "shadow_backlog",
    "provider_error_rate",
    "budget_exhausted",
    "router_stale",
]
Direction = Literal["above", "below"]
Outcome = Literal["ok", "warn", "alert", "no_data"]
Level = Literal["warn", "alert"]
MissingDataPolicy = Literal["keep_state", "resolve", "alert"]
RuleSeverity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class KindSpec:
    """What a kind measures: its value, which side of the threshold is bad, its unit."""

    measures: str
    direction: Direction
    unit: str
    per_segment: bool  # alerts per (router, segment), else per router (or deployment)
    uses_window: bool


KINDS: dict[str, KindSpec] = {
    "quality_drop": KindSpec(
        "log Shiryaev–Roberts statistic / log A of the segment's harm detector, as it is "
        "now (1 = alarm; it falls again once harm is back at the baseline)",
        "above",
        "ratio",
        per_segment=True,
        uses_window=False,
    ),
    "calibration_drift": KindSpec(
        "Bonferroni-adjusted smallest p-value of the calibration tests (against the previous "
        "window of equal length, never across a model change, and against perfect "
        "calibration)",
        "below",
        "p-value",
        per_segment=False,
        uses_window=True,
    ),
    "feature_drift": KindSpec(
        "share of drifted columns in the latest Evidently drift report",
        "above",
        "share",
        per_segment=False,
        uses_window=True,
    ),
    "cascade_escalation_rate": KindSpec(
        "share of decisions escalated from a cheaper tier",
        "above",
        "share",
        per_segment=True,
        uses_window=True,
    ),
    "router_fallback_rate": KindSpec(
        "share of decisions where the router applied its static fallback policy",
        "above",
        "share",
        per_segment=False,
        uses_window=True,
    ),
    "provider_failover_rate": KindSpec(
        "share of decisions answered by a failover model",
        "above",
        "share",
        per_segment=False,
        uses_window=True,
    ),
    "judge_inconsistency": KindSpec(
        "share of judged pairs whose two orders disagree",
        "above",
        "share",
        per_segment=False,
        uses_window=True,
    ),
    "shadow_backlog": KindSpec(
        "minutes the oldest unfinished shadow run or verdict has waited beyond its allowance "
        "(none in realtime mode, batch_max_age + 24 h in batch mode; a stuck lease counts "
        "as at least the alert threshold)",
        "above",
        "minutes",
        per_segment=False,
        uses_window=False,
    ),
    "provider_error_rate": KindSpec(
        "share of shadow runs finished in the window (by finish time) that failed",
        "above",
        "share",
        per_segment=False,
        uses_window=True,
    ),
    "budget_exhausted": KindSpec(
        "today's (UTC) reserved shadow spend / budget, per account",
        "above",
        "ratio",
        per_segment=False,
        uses_window=False,
    ),
    "router_stale": KindSpec(
        "1 while a model change has not been followed by a new router_version or threshold",
        "above",
        "flag",
        per_segment=False,
        uses_window=False,
    ),
}

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d)\s*$")
_WINDOW_UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_window(text: str) -> timedelta:
    """'30m', '6h', '7d' → a timedelta."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"window must look like 30m, 6h or 7d, got {text!r}")
    seconds = float(match.group(1)) * _WINDOW_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("window must be longer than zero")
    return timedelta(seconds=seconds)


class RuleLabels(BaseModel):
    """Which alerts a rule covers: glob patterns on the router and the segment value."""

    model_config = ConfigDict(extra="forbid")

    router: str = Field(default="*", min_length=1, max_length=200)
    segment: str = Field(default="*", min_length=1, max_length=200)


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    kind: RuleKind
    warn: float | None = Field(default=None, description="warn at this value (kind's unit)")
    alert: float | None = Field(default=None, description="alert at this value (kind's unit)")
    window: str = Field(default="1h", description="decision-time window: 30m, 6h, 7d")
    min_samples: int = Field(default=0, ge=0, description="fewer observations count as no data")
    on_missing_data: MissingDataPolicy = "keep_state"
    severity: RuleSeverity = "warning"
    runbook_url: str | None = Field(default=None, max_length=2000)
    labels: RuleLabels = Field(default_factory=RuleLabels)
    enabled: bool = True

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str) -> str:
        parse_window(value)
        return value.strip()

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> AlertRule:
        if self.warn is None and self.alert is None:
            raise ValueError("set `warn`, `alert` or both")
        spec = KINDS[self.kind]
        if self.warn is not None and self.alert is not None:
            if spec.direction == "above" and self.warn > self.alert:
                raise ValueError(
                    f"{self.kind} alerts on high values: warn ({self.warn}) must be ≤ alert "
                    f"({self.alert})"
                )
            if spec.direction == "below" and self.warn < self.alert:
                raise ValueError(
                    f"{self.kind} alerts on low values: warn ({self.warn}) must be ≥ alert "
                    f"({self.alert})"
                )
        return self

    @property
    def window_delta(self) -> timedelta:
        return parse_window(self.window)

    def covers(self, router: str | None, segment: str | None) -> bool:
        return fnmatchcase(router or "", self.labels.router) and fnmatchcase(
            segment or "", self.labels.segment
        )


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[AlertRule] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice; names must be unique")
            seen.add(rule.name)
        return self


class RuleFileError(InvalidConfiguration):
    """A rule file that does not parse or validate; `errors` carry field paths."""

    code = "invalid_alert_rules"

    def __init__(self, source: str, errors: list[dict[str, Any]]) -> None:
        lines = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        super().__init__(f"{source}: {lines}", source=source, errors=errors)


def parse_rules(text: str, *, source: str = "rules") -> RuleSet:
    """Validate the YAML (or JSON) text of a rule file: `rules: [ … ]`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RuleFileError(source, [{"loc": [], "msg": f"not valid YAML: {error}"}]) from error
    if data is None:
        data = {}
    try:
        return RuleSet.model_validate(data)
    except ValidationError as error:
        raise RuleFileError(
            source, [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()]
        ) from error


# --- evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """One rule input for one (router, segment): the value and the numbers behind it."""

    router: str | None
    segment: str | None
    value: float | None  # in the kind's unit; None = no data
    n: int | None = None  # observations behind the value; None = not a sample
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    outcome: Outcome
    threshold: float | None  # the threshold crossed, or the nearest one when ok
    reason: str


def evaluate(rule: AlertRule, measurement: Measurement) -> Evaluation:
    """ok / warn / alert by the rule's thresholds; no_data without a value or below min_samples."""
    nearest = rule.warn if rule.warn is not None else rule.alert
    if measurement.value is None:
        return Evaluation("no_data", nearest, "no data in the window")
    if measurement.n is not None and measurement.n < rule.min_samples:
        return Evaluation(
            "no_data",
            nearest,
            f"{measurement.n} observations, fewer than min_samples={rule.min_samples}",
        )
    value = measurement.value
    above = KINDS[rule.kind].direction == "above"

    def crossed(threshold: float | None) -> bool:
        return threshold is not None and (value >= threshold if above else value <= threshold)

    if crossed(rule.alert):
        return Evaluation("alert", rule.alert, _reason(value, rule.alert, above))
    if crossed(rule.warn):
        return Evaluation("warn", rule.warn, _reason(value, rule.warn, above))
    return Evaluation("ok", nearest, "within thresholds")


def _reason(value: float, threshold: float | None, above: bool) -> str:
    return f"{value:.4g} {'≥' if above else '≤'} {threshold:.4g}"


def apply_missing_data_policy(rule: AlertRule, evaluation: Evaluation) -> Outcome | None:
    """The outcome to act on; None = keep the alert as it is (no change, no notification)."""
    if evaluation.outcome != "no_data":
        return evaluation.outcome
    if rule.on_missing_data == "resolve":
        return "ok"
    if rule.on_missing_data == "alert":
        return "alert"
    return None


# --- lifecycle --------------------------------------------------------------------------------

Action = Literal["none", "open", "update", "resolve"]
Notify = Literal["trigger", "reminder", "resolve"]


@dataclass(frozen=True)
class AlertSnapshot:
    """The lifecycle-relevant state of the current (firing) alert of a dedup key."""

    level: Level
    last_notified_at: datetime | None
    acknowledged_at: datetime | None
    silenced_until: datetime | None


@dataclass(frozen=True)
class Step:
    action: Action
    notify: Notify | None
    level: Level | None = None


def silenced(silenced_until: datetime | None, now: datetime) -> bool:
    return silenced_until is not None and silenced_until > now


def step(
    current: AlertSnapshot | None,
    outcome: Outcome | None,
    *,
    now: datetime,
    reminder_interval: timedelta,
    inherited_silence: datetime | None = None,
) -> Step:
    """The next lifecycle step of one dedup key.

    - Nothing firing and the value crosses a threshold: open a firing alert and trigger.
    - Firing and still crossing: update the numbers; trigger again only on escalation
      (warn → alert), remind after `reminder_interval` without a notification unless
      acknowledged, never while silenced. A silenced alert whose silence ends unnotified
      triggers then.
    - Firing and clear: resolve; say so only to receivers that were told it fired.
    """
    if outcome is None or outcome == "no_data":
        return Step("none", None)
    if current is None:
        if outcome == "ok":
            return Step("none", None)
        notify: Notify | None = None if silenced(inherited_silence, now) else "trigger"
        return Step("open", notify, outcome)
    if outcome == "ok":
        return Step("resolve", "resolve" if current.last_notified_at is not None else None)
    quiet = silenced(current.silenced_until, now)
    if quiet:
        return Step("update", None, outcome)
    if current.last_notified_at is None or (current.level == "warn" and outcome == "alert"):
        return Step("update", "trigger", outcome)
    if current.acknowledged_at is None and now - current.last_notified_at >= reminder_interval:
        return Step("update", "reminder", outcome)
    return Step("update", None, outcome)


def notification_severity(rule_severity: RuleSeverity, level: Level) -> RuleSeverity:
    """A warn-level alert is one step below the rule's severity (critical → warning → info)."""
    if level == "alert":
        return rule_severity
    return "warning" if rule_severity == "critical" else "info"


def dedup_key(rule: str, router: str | None, segment: str | None) -> str:
    """Stable per (rule, router, segment): PagerDuty pairs trigger and resolve with it."""
    return f"{rule}|{router or '*'}|{segment or '*'}"
