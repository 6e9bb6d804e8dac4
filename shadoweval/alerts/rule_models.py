"""The alert rule schema: rule kinds and what each measures, windows and pending periods,
and the validated shape of a rule and a rule set. A models module (no logic beyond
validation), so the alert tables can name the schema without importing the rules logic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

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
    "cache_loss",
    "mid_loop_escalation",
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
        "now (1 = alarm: harm rose by at least harm_alert_rate − harm_baseline; while alarmed, "
        "the evidence for that rise, and it re-arms once that is below half the threshold)",
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
    "cache_loss": KindSpec(
        "cache cost of switching / gross savings of per-turn routing against the sticky "
        "policy on each session's strongest tier, over the sessions' turns in the window "
        "(docs/architecture.md, Sessions; capped at 10 when there are no savings to lose)",
        "above",
        "ratio",
        per_segment=False,
        uses_window=True,
    ),
    "mid_loop_escalation": KindSpec(
        "share of tool-loop turns (tool turns after a session's first) escalated from a "
        "cheaper tier",
        "above",
        "share",
        per_segment=False,
        uses_window=True,
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
