"""Alert rules, pure: parsing the rule file, evaluation, lifecycle steps (the rule schema
itself is in `rule_models.py`, re-exported here).

No I/O here. `measurements*.py` measure each rule's inputs and `lifecycle.py` stores the
alerts; this module decides what a measurement means (ok / warn / alert / no data) and what an
alert's next step is (open, escalate, remind, resolve), so both can be tested on
tiny inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import yaml
from pydantic import (
    ValidationError,
)

from shadoweval.alerts.rule_models import KINDS as KINDS
from shadoweval.alerts.rule_models import AlertRule as AlertRule
from shadoweval.alerts.rule_models import CalibrationMinimums as CalibrationMinimums
from shadoweval.alerts.rule_models import Clock as Clock
from shadoweval.alerts.rule_models import Direction as Direction
from shadoweval.alerts.rule_models import KindSpec as KindSpec
from shadoweval.alerts.rule_models import Level as Level
from shadoweval.alerts.rule_models import MissingDataPolicy as MissingDataPolicy
from shadoweval.alerts.rule_models import Outcome as Outcome

# `import x as x`: the schema, re-exported for the callers that read it from here.
from shadoweval.alerts.rule_models import RuleKind as RuleKind
from shadoweval.alerts.rule_models import RuleLabels as RuleLabels
from shadoweval.alerts.rule_models import RuleSet as RuleSet
from shadoweval.alerts.rule_models import RuleSeverity as RuleSeverity
from shadoweval.alerts.rule_models import parse_duration as parse_duration
from shadoweval.alerts.rule_models import parse_window as parse_window
from shadoweval.exceptions import InvalidConfiguration


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
