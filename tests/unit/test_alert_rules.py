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


def test_for_and_clear_are_validated_with_their_field_paths() -> None:
    text = (
        "rules: [{name: a, kind: cascade_escalation_rate, warn: 0.25, alert: 0.3, for: soon}, "
        "{name: b, kind: calibration_drift, warn: 0.01, alert: 0.001, clear: 0.005}, "
        "{name: c, kind: shadow_backlog, alert: 5, calibration: {min_n: 10}}]"
    )
    with pytest.raises(RuleFileError) as caught:
        parse_rules(text)
    paths = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors}
    assert paths == {"rules.0.for", "rules.1.clear", "rules.2.calibration"}
    assert "must be ≥ the highest threshold" in str(caught.value)


def test_for_reads_and_writes_as_for() -> None:
    r = rule(**{"for": "15m", "clear": 0.2})
    assert r.pending_delta == timedelta(minutes=15)
    assert r.model_dump(mode="json")["for"] == "15m"
    assert rule(**{"for": "0"}).pending_delta == timedelta(0)
    assert rule().pending_delta == timedelta(0)


def test_hysteresis_holds_a_firing_alert_until_the_clear_level() -> None:
    r = rule(clear=0.2)
    # Not firing: 0.22 is simply below warn.
    assert evaluate(r, at(0.22)).outcome == "ok"
    # Firing: held at the lowest level until the value is below clear.
    held = evaluate(r, at(0.22), firing_level="alert")
    assert (held.outcome, held.threshold) == ("warn", 0.2)
    assert evaluate(r, at(0.2), firing_level="warn").outcome == "warn"
    assert evaluate(r, at(0.19), firing_level="warn").outcome == "ok"
    # p-values: lower is worse, so the clear level is above the thresholds.
    p = rule(kind="calibration_drift", warn=0.01, alert=0.001, clear=0.05, min_samples=0)
    assert evaluate(p, at(0.03), firing_level="warn").outcome == "warn"
    assert evaluate(p, at(0.06), firing_level="warn").outcome == "ok"


def pending(since: datetime, level: str = "warn") -> AlertSnapshot:
    return AlertSnapshot(level, None, None, None, "pending", since)  # type: ignore[arg-type]


def test_a_pending_alert_fires_only_after_its_period_of_decision_time() -> None:
    hold = timedelta(minutes=30)
    start = NOW - timedelta(days=3)  # decision time: far from the wall clock
    assert step(None, "warn", now=NOW, reminder_interval=REMIND, at=start, pending_for=hold) == (
        rules.Step("pend", None, "warn")
    )
    early = step(
        pending(start),
        "alert",
        now=NOW,
        reminder_interval=REMIND,
        at=start + timedelta(minutes=25),
        pending_for=hold,
    )
    assert early == rules.Step("update", None, "alert")
    due = step(
        pending(start),
        "alert",
        now=NOW,
        reminder_interval=REMIND,
        at=start + hold,
        pending_for=hold,
    )
    assert due == rules.Step("fire", "trigger", "alert")
    # Not holding, or no data: the pending alert is dropped, never notified.
    for outcome in ("ok", None):
        assert step(
            pending(start), outcome, now=NOW, reminder_interval=REMIND, at=start, pending_for=hold
        ) == rules.Step("cancel", None)
    # A silence inherited from an earlier episode still covers the firing.
    quiet = step(
        pending(start),
        "warn",
        now=NOW,
        reminder_interval=REMIND,
        at=start + hold,
        pending_for=hold,
        inherited_silence=NOW + timedelta(hours=1),
    )
    assert quiet == rules.Step("fire", None, "warn")


def evidence(**fields: object) -> rules.CalibrationEvidence:
    values: dict[str, object] = {
        "n": 753,
        "ece": 0.16,
        "slope": 0.40,
        "p_against_reference": None,
        "p_against_perfect": 2e-20,
    }
    values.update(fields)
    return rules.CalibrationEvidence(**values)  # type: ignore[arg-type]


def test_perfect_calibration_counts_only_with_enough_labels_and_effect() -> None:
    minimums = rules.CalibrationMinimums()
    # The over-confident swap: counted, and the text says why.
    swap = rules.calibration_value(evidence(), minimums)
    assert swap.value == pytest.approx(2e-20)
    assert swap.perfect_counted is True
    assert "n=753 ≥ 300, ECE 0.16 ≥ 0.1): counts" in swap.text
    # The demo's flap: n = 116 rejects perfect calibration, but does not count.
    small = rules.calibration_value(evidence(n=116, p_against_perfect=1e-4), minimums)
    assert (small.value, small.perfect_counted) == (1.0, False)
    assert "n=116 < 300" in small.text
    assert small.conditions["min_n"] is False
    # Many labels, a tiny effect: a p-value alone is not enough.
    tiny = rules.calibration_value(evidence(n=5000, ece=0.03, slope=0.9), minimums)
    assert tiny.value == 1.0
    assert tiny.conditions == {
        "min_n": True,
        "min_ece": False,
        "min_slope_distance": None,  # off by default
        "effect": False,
    }
    # A slope far from 1 at a small ECE (scores clipped at 0): only with the slope
    # criterion switched on, and then either criterion suffices.
    clipped = evidence(ece=0.03, slope=0.19)
    assert rules.calibration_value(clipped, minimums).perfect_counted is False
    with_slope = rules.CalibrationMinimums(min_slope_distance=0.5)
    counted = rules.calibration_value(clipped, with_slope)
    assert counted.perfect_counted is True
    assert "|1 − slope| 0.81 ≥ 0.5" in counted.text
    # The drift test always counts; Bonferroni runs over every test run.
    both = rules.calibration_value(
        evidence(n=116, p_against_reference=0.004, p_against_perfect=1e-6), minimums
    )
    assert both.value == pytest.approx(0.008)
    assert rules.calibration_value(evidence(p_against_perfect=None), minimums).value is None
