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
from typing import Any, Literal, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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
# Which clock a kind's evaluation runs on (DESIGN.md, Time):
# - decision: evaluated at each step of decision time (per router, or on the deployment's
#   clock), over windows that end at that step, so a replay gives the live stream's alerts;
# - detector: a sequential detector's state as it is now, which already stands for the
#   decision time of the labels it consumed;
# - wall: a question about wall time (queues, provider failures as they happen, staleness).
Clock = Literal["decision", "detector", "wall"]


@dataclass(frozen=True)
class KindSpec:
    """What a kind measures: its value, which side of the threshold is bad, its unit."""

    measures: str
    direction: Direction
    unit: str
    per_segment: bool  # alerts per (router, segment), else per router (or deployment)
    uses_window: bool
    clock: Clock = "decision"
    # Deployment-wide (the budget accounts): steps on the latest router's decision time.
    deployment: bool = False
    # One episode per decision time of the measurement (the budget's decision day): a
    # firing alert of another day resolves before the new day's opens.
    episode_per_ts: bool = False
    # Reads verdicts: a step is evaluated only once every sampled decision before it is
    # judged, so late verdicts never make a replay differ from the live run.
    uses_labels: bool = False


KINDS: dict[str, KindSpec] = {
    "quality_drop": KindSpec(
        "GLR change-point statistic / its threshold of the segment's harm detector, as it is "
        "now (1 = alarm: harm rose by at least harm_alert_rate − harm_baseline; it re-arms "
        "below half the threshold)",
        "above",
        "ratio",
        per_segment=True,
        uses_window=False,
        clock="detector",
    ),
    "calibration_drift": KindSpec(
        "Bonferroni-adjusted smallest p-value of the calibration tests that count (against "
        "the previous window of equal length, never across a model change; against perfect "
        "calibration only with enough labels and a large enough effect)",
        "below",
        "p-value",
        per_segment=False,
        uses_window=True,
        uses_labels=True,
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
        uses_labels=True,
    ),
    "shadow_backlog": KindSpec(
        "minutes the oldest unfinished shadow run or verdict has waited beyond its allowance "
        "(none in realtime mode, batch_max_age + 24 h in batch mode; a stuck lease counts "
        "as at least the alert threshold)",
        "above",
        "minutes",
        per_segment=False,
        uses_window=False,
        clock="wall",
    ),
    "provider_error_rate": KindSpec(
        "share of shadow runs finished in the window (by finish time) that failed",
        "above",
        "share",
        per_segment=False,
        uses_window=True,
        clock="wall",
    ),
    "budget_exhausted": KindSpec(
        "1 once the decision day's budget_exhausted event is recorded for the account, "
        "else the day's reserved shadow spend / budget (the UTC day of decision time)",
        "above",
        "ratio",
        per_segment=False,
        uses_window=False,
        deployment=True,
        episode_per_ts=True,
    ),
    "router_stale": KindSpec(
        "1 while a model change has not been followed by a new router_version or threshold",
        "above",
        "flag",
        per_segment=False,
        uses_window=False,
        clock="wall",
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


def parse_duration(text: str) -> timedelta:
    """A pending period: '0', '0m', '15m', '2h', '1d' → a timedelta (zero allowed)."""
    if text.strip() == "0":
        return timedelta(0)
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"`for` must look like 0, 15m, 2h or 1d, got {text!r}")
    return timedelta(seconds=float(match.group(1)) * _WINDOW_UNITS[match.group(2)])


class CalibrationMinimums(BaseModel):
    """When the test against perfect calibration counts (calibration_drift only).

    A p-value alone alarms on effects too small to matter once n is large, and on noise
    when n is small: the test counts only with at least `min_n` labels and an effect of
    at least `min_ece` (expected calibration error) or `min_slope_distance` (|1 −
    calibration slope|); null switches a criterion off. The slope criterion is off by
    default: routers emit scores of exactly 0 or 1, whose clipped logits pull the fitted
    slope far from 1 on a well-calibrated router (the demo's: slope 0.71, ECE 0.03, n 568).
    """

    model_config = ConfigDict(extra="forbid")

    min_n: int = Field(default=300, ge=0, description="labels in the window")
    min_ece: float | None = Field(
        default=0.1,
        ge=0,
        le=1,
        description="expected calibration error (adaptive bins) at or above which the effect "
        "is large enough",
    )
    min_slope_distance: float | None = Field(
        default=None,
        gt=0,
        description="|1 − calibration slope| at or above which the effect is large enough",
    )


class RuleLabels(BaseModel):
    """Which alerts a rule covers: glob patterns on the router and the segment value."""

    model_config = ConfigDict(extra="forbid")

    router: str = Field(default="*", min_length=1, max_length=200)
    segment: str = Field(default="*", min_length=1, max_length=200)


class AlertRule(BaseModel):
    # `for` is a Python keyword: the field is `pending_for`, read and written as `for`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    kind: RuleKind
    warn: float | None = Field(default=None, description="warn at this value (kind's unit)")
    alert: float | None = Field(default=None, description="alert at this value (kind's unit)")
    clear: float | None = Field(
        default=None,
        description="hysteresis: a firing alert resolves only once the value is past this "
        "level (below it for high-is-bad kinds, above it for p-values); default: the lowest "
        "threshold set",
    )
    window: str = Field(default="1h", description="decision-time window: 30m, 6h, 7d")
    pending_for: str | None = Field(
        default=None,
        alias="for",
        description="pending period: the condition must hold at every evaluation for this "
        "long (decision time; wall time for the wall-clock kinds) before the alert fires; "
        "0 or unset fires at once",
    )
    min_samples: int = Field(default=0, ge=0, description="fewer observations count as no data")
    on_missing_data: MissingDataPolicy = "keep_state"
    severity: RuleSeverity = "warning"
    runbook_url: str | None = Field(default=None, max_length=2000)
    labels: RuleLabels = Field(default_factory=RuleLabels)
    enabled: bool = True
    calibration: CalibrationMinimums | None = Field(
        default=None,
        description="calibration_drift only: when the test against perfect calibration "
        "counts (defaults: min_n 300, min_ece 0.1, min_slope_distance null)",
    )

    @field_validator("window")
    @classmethod
    def _window_parses(cls, value: str) -> str:
        parse_window(value)
        return value.strip()

    @field_validator("pending_for")
    @classmethod
    def _pending_for_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_duration(value)
        return value.strip()

    @field_validator("clear")
    @classmethod
    def _clear_below_the_thresholds(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        if value is None or kind is None:
            return value
        levels = [info.data.get(name) for name in ("warn", "alert")]
        thresholds = [level for level in levels if level is not None]
        if not thresholds:
            return value
        if KINDS[kind].direction == "above" and value > min(thresholds):
            raise ValueError(
                f"{kind} alerts on high values: clear ({value}) must be ≤ the lowest threshold "
                f"({min(thresholds)})"
            )
        if KINDS[kind].direction == "below" and value < max(thresholds):
            raise ValueError(
                f"{kind} alerts on low values: clear ({value}) must be ≥ the highest threshold "
                f"({max(thresholds)})"
            )
        return value

    @field_validator("calibration")
    @classmethod
    def _calibration_only_for_calibration_drift(
        cls, value: CalibrationMinimums | None, info: ValidationInfo
    ) -> CalibrationMinimums | None:
        kind = info.data.get("kind")
        if value is not None and kind is not None and kind != "calibration_drift":
            raise ValueError(f"only calibration_drift rules take `calibration`, not {kind}")
        return value

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

    @property
    def pending_delta(self) -> timedelta:
        return parse_duration(self.pending_for) if self.pending_for is not None else timedelta(0)

    @property
    def calibration_minimums(self) -> CalibrationMinimums:
        return self.calibration or CalibrationMinimums()

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
    # The decision time the value stands for (the evaluation step; the budget's day; a
    # model change's ts); None for measurements of wall time only.
    ts: datetime | None = None


@dataclass(frozen=True)
class Evaluation:
    outcome: Outcome
    threshold: float | None  # the threshold crossed, or the nearest one when ok
    reason: str


def evaluate(
    rule: AlertRule, measurement: Measurement, *, firing_level: Level | None = None
) -> Evaluation:
    """ok / warn / alert by the rule's thresholds; no_data without a value or below min_samples.

    Hysteresis: while an alert fires (`firing_level`), a value back inside the thresholds
    but not yet past the rule's `clear` level keeps it firing at its lowest level, so a
    value hovering at a threshold does not open and resolve an episode at every evaluation.
    """
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
    if firing_level is not None and rule.clear is not None:
        cleared = value < rule.clear if above else value > rule.clear
        if not cleared:
            lowest: Level = "warn" if rule.warn is not None else "alert"
            return Evaluation(
                lowest,
                rule.clear,
                f"{value:.4g} not yet {'<' if above else '>'} the clear level {rule.clear:.4g}",
            )
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


@dataclass(frozen=True)
class CalibrationEvidence:
    """What the calibration report says about one window (None where a fit failed)."""

    n: int
    ece: float | None
    slope: float | None
    p_against_reference: float | None
    p_against_perfect: float | None


@dataclass(frozen=True)
class CalibrationValue:
    """calibration_drift's value and which of its conditions held, for the alert text."""

    value: float | None  # None: no test could be run
    perfect_counted: bool
    conditions: dict[str, bool | None]  # None: the criterion is switched off or unknown
    text: str


def calibration_value(
    evidence: CalibrationEvidence, minimums: CalibrationMinimums
) -> CalibrationValue:
    """min(1, m · smallest counted p) over the m tests run (Bonferroni).

    The test against the previous window always counts; the test against perfect
    calibration counts only with n ≥ min_n and an effect of at least min_ece or
    min_slope_distance. Leaving a test out only shrinks the rejection region, so the
    false-alarm bound of the Bonferroni value still holds.
    """
    e, mins = evidence, minimums
    distance = abs(1.0 - e.slope) if e.slope is not None else None
    enough_n = e.n >= mins.min_n
    ece_held = None if mins.min_ece is None or e.ece is None else e.ece >= mins.min_ece
    slope_held = (
        None
        if mins.min_slope_distance is None or distance is None
        else distance >= mins.min_slope_distance
    )
    criteria = [held for held in (ece_held, slope_held) if held is not None]
    switched_off = mins.min_ece is None and mins.min_slope_distance is None
    effect = switched_off or any(criteria)
    tests = [p for p in (e.p_against_reference, e.p_against_perfect) if p is not None]
    counted = [] if e.p_against_reference is None else [e.p_against_reference]
    perfect_counted = e.p_against_perfect is not None and enough_n and effect
    if perfect_counted:
        counted.append(cast(float, e.p_against_perfect))
    if not tests:
        value = None
    elif counted:
        value = min(1.0, len(tests) * min(counted))
    else:
        value = 1.0  # tests ran, none counts: no evidence of miscalibration

    parts = []
    if e.p_against_perfect is not None:
        checks = [f"n={e.n} {'≥' if enough_n else '<'} {mins.min_n}"]
        if mins.min_ece is not None:
            ece_text = "n/a" if e.ece is None else f"{e.ece:.3g}"
            checks.append(f"ECE {ece_text} {'≥' if ece_held else '<'} {mins.min_ece:.3g}")
        if mins.min_slope_distance is not None:
            distance_text = "n/a" if distance is None else f"{distance:.3g}"
            checks.append(
                f"|1 − slope| {distance_text} {'≥' if slope_held else '<'} "
                f"{mins.min_slope_distance:.3g}"
            )
        verdict = "counts" if perfect_counted else "does not count"
        parts.append(
            f"against perfect calibration p={e.p_against_perfect:.3g} ({', '.join(checks)}): "
            f"{verdict}"
        )
    if e.p_against_reference is not None:
        parts.append(f"against the previous window p={e.p_against_reference:.3g}: counts")
    return CalibrationValue(
        value=value,
        perfect_counted=perfect_counted,
        conditions={
            "min_n": enough_n,
            "min_ece": ece_held,
            "min_slope_distance": slope_held,
            "effect": effect,
        },
        text="; ".join(parts) or "no calibration test could be run",
    )


# --- lifecycle --------------------------------------------------------------------------------

# pend: open a pending alert (no notification); fire: a pending alert's period has passed;
# cancel: a pending alert's condition stopped holding before it fired.
Action = Literal["none", "pend", "open", "fire", "update", "resolve", "cancel"]
Notify = Literal["trigger", "reminder", "resolve"]


@dataclass(frozen=True)
class AlertSnapshot:
    """The lifecycle-relevant state of the current (pending or firing) alert of a dedup key."""

    level: Level
    last_notified_at: datetime | None
    acknowledged_at: datetime | None
    silenced_until: datetime | None
    state: Literal["pending", "firing"] = "firing"
    pending_since: datetime | None = None  # on the rule's clock


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
    at: datetime | None = None,
    pending_for: timedelta = timedelta(0),
) -> Step:
    """The next lifecycle step of one dedup key.

    `now` is the wall clock (reminders, silences); `at` the time on the rule's clock of
    this evaluation (decision time for most kinds), against which `pending_for` runs.

    - Nothing open and the value crosses a threshold: with a pending period, open a
      pending alert (no notification); without one, open a firing alert and trigger.
    - Pending and still crossing: fire (and trigger) once it has crossed for
      `pending_for`; pending and not crossing, or no data: cancel, since the condition
      must hold continuously (missing data is not the condition holding).
    - Firing and still crossing: update the numbers; trigger again only on escalation
      (warn → alert), remind after `reminder_interval` without a notification unless
      acknowledged, never while silenced. A silenced alert whose silence ends unnotified
      triggers then.
    - Firing and clear: resolve; say so only to receivers that were told it fired.
    """
    pending = current is not None and current.state == "pending"
    if outcome is None or outcome == "no_data":
        return Step("cancel", None) if pending else Step("none", None)
    if current is None:
        if outcome == "ok":
            return Step("none", None)
        if pending_for > timedelta(0):
            return Step("pend", None, outcome)
        notify: Notify | None = None if silenced(inherited_silence, now) else "trigger"
        return Step("open", notify, outcome)
    if pending:
        if outcome == "ok":
            return Step("cancel", None)
        since = current.pending_since
        when = at if at is not None else now
        if since is not None and when - since < pending_for:
            return Step("update", None, outcome)
        quiet = silenced(current.silenced_until, now) or silenced(inherited_silence, now)
        return Step("fire", None if quiet else "trigger", outcome)
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
