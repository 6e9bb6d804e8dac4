"""Dispatch from an alert rule's kind to its measurement, cached per evaluation pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from shadoweval.alerts.measure_context import MeasureAt, _Context, _hour_floor
from shadoweval.alerts.measurements_ops import (
    _budget_exhausted,
    _cache_loss,
    _mid_loop_escalation,
    _provider_error_rate,
    _router_stale,
    _shadow_backlog,
)
from shadoweval.alerts.measurements_quality import (
    _calibration_drift,
    _feature_drift,
    _judge_inconsistency,
    _quality_drop,
    _traffic_rate,
)
from shadoweval.alerts.rules import AlertRule, Measurement

MeasureNow = Callable[[_Context, AlertRule], list[Measurement]]
# The wall-clock and detector kinds: measured once per pass, as things are now.
MEASURE: dict[str, MeasureNow] = {
    "quality_drop": _quality_drop,
    "shadow_backlog": _shadow_backlog,
    "provider_error_rate": _provider_error_rate,
    "router_stale": _router_stale,
}
# The decision-time kinds: measured on one clock (a router; None = the deployment) at one
# decision-time step, over windows that end there.
MEASURE_AT: dict[str, MeasureAt] = {
    "calibration_drift": _calibration_drift,
    "feature_drift": _feature_drift,
    "cascade_escalation_rate": _traffic_rate("escalated", per_segment=True),
    "router_fallback_rate": _traffic_rate("fallback", per_segment=False),
    "provider_failover_rate": _traffic_rate("failover", per_segment=False),
    "judge_inconsistency": _judge_inconsistency,
    "budget_exhausted": _budget_exhausted,
    "cache_loss": _cache_loss,
    "mid_loop_escalation": _mid_loop_escalation,
}
# Kinds over whole hours of counts: the same value at every step within an hour.
_HOURLY = {
    "cascade_escalation_rate",
    "router_fallback_rate",
    "provider_failover_rate",
    "cache_loss",
    "mid_loop_escalation",
}


def measure(ctx: _Context, rule: AlertRule) -> list[Measurement]:
    """A wall-clock or detector rule's inputs, computed once per (kind, window) per pass."""
    key = (rule.kind, rule.window_delta, rule.alert)  # shadow_backlog reads rule.alert
    if key not in ctx.cache:
        ctx.cache[key] = MEASURE[rule.kind](ctx, rule)
    return ctx.cache[key]


def measure_at(
    ctx: _Context, rule: AlertRule, router: str | None, at: datetime
) -> list[Measurement]:
    """A decision-time rule's inputs at one step, shared by the rules that read the same."""
    hourly = rule.kind in _HOURLY
    key: tuple[Any, ...] = (
        rule.kind,
        rule.window_delta,
        router,
        _hour_floor(at) if hourly else at,
        rule.calibration_minimums.model_dump_json() if rule.kind == "calibration_drift" else None,
        rule.name if rule.kind == "budget_exhausted" else None,  # reads the rule's alerts
    )
    if key not in ctx.cache:
        ctx.cache[key] = MEASURE_AT[rule.kind](ctx, rule, router, at)
    return [replace(m, ts=at) if hourly else m for m in ctx.cache[key]]
