"""Alert rules, pure: the rule file's validation, evaluation, missing data, lifecycle steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shadoweval.alerts import rules
from shadoweval.alerts.rules import (
    AlertRule,
    AlertSnapshot,
    Measurement,
    RuleFileError,
    apply_missing_data_policy,
    evaluate,
    parse_rules,
    step,
)
from shadoweval.alerts.service import DEFAULT_RULES_FILE

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
REMIND = timedelta(hours=4)


def rule(**fields: object) -> AlertRule:
    values: dict[str, object] = {
        "name": "esc",
        "kind": "cascade_escalation_rate",
        "warn": 0.25,
        "alert": 0.30,
        "min_samples": 50,
    }
    values.update(fields)
    return AlertRule.model_validate(values)


def at(value: float | None, n: int | None = 100) -> Measurement:
    return Measurement("r", "billing", value, n)


def test_the_default_rule_file_covers_every_built_in_kind() -> None:
    rule_set = parse_rules(DEFAULT_RULES_FILE.read_text(), source="default")
    assert {r.kind for r in rule_set.rules} == set(rules.KINDS)
    escalation = next(r for r in rule_set.rules if r.kind == "cascade_escalation_rate")
    assert escalation.alert == pytest.approx(0.30)  # the default: > 30 %


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("rules: [{name: a, kind: nope, alert: 1}]", "rules.0.kind", "Input should be"),
        ("rules: [{name: a, kind: shadow_backlog}]", "rules.0", "set `warn`, `alert` or both"),
        (
            "rules: [{name: a, kind: shadow_backlog, warn: 10, alert: 5}]",
            "rules.0",
            "warn (10.0) must be ≤ alert (5.0)",
        ),
        (
            "rules: [{name: a, kind: calibration_drift, warn: 0.001, alert: 0.01}]",
            "rules.0",
            "alerts on low values",
        ),
        ("rules: [{name: a, kind: shadow_backlog, alert: 5, window: 3w}]", "rules.0.window", "30m"),
        ("rules: [{name: a, kind: shadow_backlog, alert: 5, colour: red}]", "rules.0.colour", ""),
        (
            "rules: [{name: a, kind: shadow_backlog, alert: 5, on_missing_data: shrug}]",
            "rules.0.on_missing_data",
            "",
        ),
        (
            "rules: [{name: a, kind: shadow_backlog, alert: 5}, {name: a, kind: router_stale, "
            "alert: 1}]",
            "",
            "used twice",
        ),
        ("rules: [oops", "", "not valid YAML"),
    ],
)
def test_invalid_rule_files_name_the_field_and_the_reason(
    text: str, path: str, message: str
) -> None:
    with pytest.raises(RuleFileError) as caught:
        parse_rules(text, source="my-rules.yaml")
    error = caught.value
    assert any(".".join(str(p) for p in e["loc"]) == path for e in error.errors), error.errors
    assert message in str(error)
    assert str(error).startswith("my-rules.yaml: ")


def test_empty_file_is_an_empty_rule_set() -> None:
    assert parse_rules("").rules == []


@pytest.mark.parametrize(
    ("value", "outcome", "threshold"),
    [(0.10, "ok", 0.25), (0.25, "warn", 0.25), (0.29, "warn", 0.25), (0.31, "alert", 0.30)],
)
def test_evaluation_above_thresholds(value: float, outcome: str, threshold: float) -> None:
    result = evaluate(rule(), at(value))
    assert (result.outcome, result.threshold) == (outcome, threshold)


def test_evaluation_below_thresholds_for_p_values() -> None:
    calibration = rule(kind="calibration_drift", warn=0.01, alert=0.001, min_samples=0)
    assert evaluate(calibration, at(0.2)).outcome == "ok"
    assert evaluate(calibration, at(0.005)).outcome == "warn"
    assert evaluate(calibration, at(0.0001)).outcome == "alert"


def test_too_few_samples_or_no_value_is_missing_data() -> None:
    assert evaluate(rule(), at(0.9, n=49)).outcome == "no_data"
    assert "fewer than min_samples=50" in evaluate(rule(), at(0.9, n=49)).reason
    assert evaluate(rule(), at(None)).outcome == "no_data"
    # Measurements that are not samples (ages, flags) ignore min_samples.
    assert evaluate(rule(), at(0.9, n=None)).outcome == "alert"


@pytest.mark.parametrize(
    ("policy", "expected"), [("keep_state", None), ("resolve", "ok"), ("alert", "alert")]
)
def test_missing_data_policy(policy: str, expected: str | None) -> None:
    r = rule(on_missing_data=policy)
    assert apply_missing_data_policy(r, evaluate(r, at(None))) == expected
    assert apply_missing_data_policy(r, evaluate(r, at(0.31))) == "alert"


def test_labels_filter_router_and_segment_by_glob() -> None:
    r = rule(labels={"router": "support-*", "segment": "billing"})
    assert r.covers("support-router", "billing")
    assert not r.covers("sales-router", "billing")
    assert not r.covers("support-router", "refunds")


def test_dedup_key_is_stable_per_rule_router_segment() -> None:
    assert rules.dedup_key("esc", "r", "billing") == "esc|r|billing"
    assert rules.dedup_key("backlog", None, None) == "backlog|*|*"


def firing(
    level: str = "warn",
    notified: datetime | None = NOW - timedelta(minutes=5),
    acked: datetime | None = None,
    silenced_until: datetime | None = None,
) -> AlertSnapshot:
    return AlertSnapshot(level, notified, acked, silenced_until)  # type: ignore[arg-type]


def test_a_crossing_opens_and_triggers_once() -> None:
    assert step(None, "warn", now=NOW, reminder_interval=REMIND) == rules.Step(
        "open", "trigger", "warn"
    )
    assert step(firing(), "warn", now=NOW, reminder_interval=REMIND) == rules.Step(
        "update", None, "warn"
    )
    assert step(None, "ok", now=NOW, reminder_interval=REMIND).action == "none"


def test_escalation_triggers_again_de_escalation_does_not() -> None:
    assert step(firing("warn"), "alert", now=NOW, reminder_interval=REMIND).notify == "trigger"
    assert step(firing("alert"), "warn", now=NOW, reminder_interval=REMIND) == rules.Step(
        "update", None, "warn"
    )


def test_reminder_after_the_interval_unless_acknowledged() -> None:
    old = firing(notified=NOW - REMIND)
    assert step(old, "warn", now=NOW, reminder_interval=REMIND).notify == "reminder"
    acked = firing(notified=NOW - REMIND, acked=NOW - timedelta(hours=1))
    assert step(acked, "warn", now=NOW, reminder_interval=REMIND).notify is None


def test_silence_suppresses_everything_until_it_ends() -> None:
    quiet = firing(notified=None, silenced_until=NOW + timedelta(minutes=1))
    assert step(quiet, "alert", now=NOW, reminder_interval=REMIND) == rules.Step(
        "update", None, "alert"
    )
    ended = firing(notified=None, silenced_until=NOW - timedelta(minutes=1))
    assert step(ended, "alert", now=NOW, reminder_interval=REMIND).notify == "trigger"
    inherited = step(
        None,
        "alert",
        now=NOW,
        reminder_interval=REMIND,
        inherited_silence=NOW + timedelta(hours=1),
    )
    assert inherited == rules.Step("open", None, "alert")


def test_resolve_is_said_only_to_receivers_that_heard_the_trigger() -> None:
    assert step(firing(), "ok", now=NOW, reminder_interval=REMIND) == rules.Step(
        "resolve", "resolve"
    )
    assert step(firing(notified=None), "ok", now=NOW, reminder_interval=REMIND) == rules.Step(
        "resolve", None
    )
    # Missing data under keep_state: nothing happens.
    assert step(firing(), None, now=NOW, reminder_interval=REMIND).action == "none"


def test_warn_level_notifications_are_one_step_below_the_rule_severity() -> None:
    assert rules.notification_severity("critical", "alert") == "critical"
    assert rules.notification_severity("critical", "warn") == "warning"
    assert rules.notification_severity("warning", "warn") == "info"


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("6h", 21600), ("7d", 604800), (" 1.5h ", 5400)]
)
def test_windows(text: str, seconds: float) -> None:
    assert rules.parse_window(text).total_seconds() == seconds
