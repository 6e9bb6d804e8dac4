"""What an alert says: its numbers, title, summary, headline and detail, and the dashboard
page it links to. The lifecycle (lifecycle.py) stores them on the alert it opens."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeGuard
from urllib.parse import urlencode

from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.measure_context import _iso
from shadoweval.alerts.notification import list_text, percent_text, when_text
from shadoweval.alerts.rules import AlertRule, Measurement
from shadoweval.config import Settings


def _numbers(
    rule: AlertRule,
    m: Measurement,
    evaluation: alert_rules.Evaluation,
    decision_ts: datetime | None,
) -> dict[str, Any]:
    spec = alert_rules.KINDS[rule.kind]
    return {
        "value": m.value,
        "unit": spec.unit,
        "measures": spec.measures,
        "outcome": evaluation.outcome,
        "reason": evaluation.reason,
        "threshold": evaluation.threshold,
        "warn": rule.warn,
        "alert": rule.alert,
        "estimate": m.estimate,
        "ci_low": m.ci_low,
        "ci_high": m.ci_high,
        "confidence": 0.95 if m.ci_low is not None else None,
        "n": m.n,
        "min_samples": rule.min_samples,
        "window": rule.window if spec.uses_window else None,
        "window_start": _iso(m.window_start),
        "window_end": _iso(m.window_end),
        "decision_ts": _iso(decision_ts),
        "clock": spec.clock,
        "for": rule.pending_for,
        "clear": rule.clear,
        **m.details,
    }


# Page paths of the Streamlit dashboard (dashboard/app.py: st.Page infers them from file names).
_DASHBOARD_PAGE = {
    "quality_drop": "quality",
    "cascade_escalation_rate": "routing",
    "router_fallback_rate": "routing",
    "provider_failover_rate": "routing",
    "calibration_drift": "calibration",
    "feature_drift": "drift",
    "judge_inconsistency": "judge",
    "cache_loss": "routing",
    "mid_loop_escalation": "routing",
}


def dashboard_link(settings: Settings, kind: str, router: str | None, segment: str | None) -> str:
    query = {k: v for k, v in (("router", router), ("segment", segment)) if v is not None}
    page = _DASHBOARD_PAGE.get(kind, "alerts")
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{settings.dashboard_url.rstrip('/')}/{page}{suffix}"


# The one severity word a title carries; a resolved alert's title says RESOLVED instead.
SEVERITY_WORD = {"info": "INFO", "warning": "WARNING", "critical": "CRITICAL"}


RESOLVED_WORD = "RESOLVED"


def _title(rule: AlertRule, severity: str, router: str | None, segment: str | None) -> str:
    """`WARNING quality_drop legal on demo-router`: one severity word, rule, where."""
    where = (
        " ".join(part for part in (segment, f"on {router}" if router else None) if part)
        or "on the deployment"
    )
    return f"{SEVERITY_WORD.get(severity, severity.upper())} {rule.name} {where}"


def _resolved_title(title: str) -> str:
    """The firing title with its severity word replaced by RESOLVED."""
    first, _, rest = title.partition(" ")
    if first in SEVERITY_WORD.values() and rest:
        return f"{RESOLVED_WORD} {rest}"
    return f"{RESOLVED_WORD} {title}"


def _summary(
    rule: AlertRule,
    numbers: dict[str, Any],
    *,
    router: str | None = None,
    segment: str | None = None,
    dashboard_url: str | None = None,
) -> str:
    """The headline sentence on the first line, the statistician's detail on the second."""
    headline = _headline(rule, numbers, router, segment)
    if dashboard_url:
        headline += f" — {dashboard_url}"
    return (headline + "\n" + _detail(rule, numbers))[:2000]


def _headline(
    rule: AlertRule, numbers: dict[str, Any], router: str | None, segment: str | None
) -> str:
    """What happened, where, since when and how sure, in the numbers the alert carries."""
    spec = alert_rules.KINDS[rule.kind]
    where = segment or router or "deployment"
    stale = "no new data; last seen: " if numbers.get("missing_data") else ""
    estimate, low, high = numbers.get("estimate"), numbers.get("ci_low"), numbers.get("ci_high")
    n = numbers.get("n")
    if rule.kind == "quality_drop":
        before = numbers.get("pre_change_harm_rate")
        after = estimate if estimate is not None else numbers.get("post_change_harm_rate")
        labels = numbers.get("post_change_labels", n)
        parts = [f"{where}: harm"]
        if _is_number(before) and _is_number(after):
            parts.append(f"{percent_text(before)} → {percent_text(after)}")
        elif _is_number(after):
            parts.append(f"at {percent_text(after)}")
        else:
            parts.append("rising")
        if numbers.get("change_point_ts"):
            parts.append(f"since {when_text(numbers['change_point_ts'])} decision time")
        text = " ".join(parts)
        if _is_number(low) and _is_number(high):
            text += f" (95 % CI {percent_text(low)}–{percent_text(high)})"
        if labels is not None:
            text += f", {labels} labels"
        return stale + text
    if rule.kind == "calibration_drift":
        text = f"{where}: routing scores no longer match outcomes"
        if _is_number(estimate):
            text += f" (calibration error {estimate:.3f}"
            text += f" over {n} labels)" if n is not None else ")"
        text += f", p = {_fmt(numbers.get('value'))}"
        text += f" in decision time {_span(numbers)}"
        return stale + text
    if rule.kind == "budget_exhausted":
        account = segment or "the deployment"
        day = numbers.get("day") or when_text(numbers.get("window_start"))[:10]
        budget = numbers.get("budget_usd")
        if numbers.get("budget_exhausted_event"):
            text = f"budget {account}: the shadow budget of decision day {day} is used up"
        else:
            text = f"budget {account}: {_share_of(numbers.get('value'))} of decision day {day}'s "
            text += "shadow budget reserved"
        if _is_number(estimate) and _is_number(budget):
            text += f" (${estimate:,.2f} of ${budget:,.2f})"
        refused = numbers.get("refused_decisions")
        if refused:
            text += f"; {refused} decisions went unmonitored"
        return stale + text
    if rule.kind == "router_stale":
        text = (
            f"{where}: {numbers.get('tier') or 'a'} tier moved to {numbers.get('model') or '?'} "
            f"(was {list_text(numbers.get('previous_models'))}) at "
            f"{when_text(numbers.get('decision_ts') or numbers.get('window_start'))} decision "
            "time, and the router has no new version or threshold since"
        )
        return stale + text
    if rule.kind == "shadow_backlog":
        return (
            f"shadow work is {_fmt(numbers.get('value'))} minutes late (the oldest unfinished "
            f"run or verdict; alarm at {_fmt(numbers.get('threshold'))} minutes)"
        )
    if spec.unit == "share":
        value = estimate if _is_number(estimate) else numbers.get("value")
        text = f"{where}: {spec.measures.split(' (')[0]} is {_share_of(value)}"
        if _is_number(low) and _is_number(high):
            text += f" (95 % CI {percent_text(low)}–{percent_text(high)})"
        if _is_number(numbers.get("threshold")):
            text += f", alarm at {percent_text(numbers['threshold'])}"
        if n is not None:
            text += f", n = {n}"
        if spec.uses_window:
            text += f", decision time {_span(numbers)}"
        return stale + text
    text = f"{where}: {spec.measures.split(' (')[0]} is {_fmt(numbers.get('value'))}"
    if _is_number(numbers.get("threshold")):
        text += f", alarm at {_fmt(numbers['threshold'])}"
    if spec.uses_window:
        text += f", decision time {_span(numbers)}"
    return stale + text


def _detail(rule: AlertRule, numbers: dict[str, Any]) -> str:
    """The statistician's line: the rule's value against its threshold, the interval, n,
    the conditions that held and the window."""
    spec = alert_rules.KINDS[rule.kind]
    parts = [f"{spec.measures}: {_fmt(numbers['value'])} {spec.unit} ({numbers['reason']})"]
    if numbers.get("estimate") is not None and numbers.get("ci_low") is not None:
        parts.append(
            f"estimate {_fmt(numbers['estimate'])} (95 % CI {_fmt(numbers['ci_low'])}–"
            f"{_fmt(numbers['ci_high'])}, n={numbers['n']})"
        )
    elif numbers.get("n") is not None:
        parts.append(f"n={numbers['n']}")
    if numbers.get("conditions"):
        parts.append(str(numbers["conditions"]))
    if numbers.get("window_start") or numbers.get("window_end"):
        parts.append(f"decision time {_span(numbers)}")
    return "; ".join(parts)


def _span(numbers: dict[str, Any]) -> str:
    return f"{when_text(numbers.get('window_start'))} → {when_text(numbers.get('window_end'))}"


def _share_of(value: Any) -> str:
    return percent_text(value) if _is_number(value) else "n/a"


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)
