"""Alerts: the rule file and evaluation steps, reminders, delivery channels (their URLs and keys
are secrets) and retries, the links notifications carry."""

from pathlib import Path

from pydantic import BaseModel, Field


class AlertSettings(BaseModel):
    """When alert rules are evaluated and where their notifications go."""

    alert_rules_file: Path | None = Field(
        default=None,
        description="YAML rule file; default: the packaged default_rules.yaml. A rule set "
        "put through PUT /v1/alert-rules replaces it.",
    )
    alert_evaluate_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the leader evaluates the alert rules."
    )

    # Rules on decision time are evaluated at fixed steps of each router's decision time,
    # never at "whenever the worker ran": a replay at any speed then meets the same steps.
    alert_decision_step_seconds: float = Field(
        default=300.0,
        ge=60,
        le=86400,
        description="Decision-time step at which the decision-time alert rules are evaluated.",
    )
    alert_catch_up_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours of decision time a new rule or a new router looks back over; "
        "older steps are skipped (an evaluator that fell behind takes every step).",
    )
    alert_max_steps_per_pass: int = Field(
        default=288,
        ge=1,
        description="Decision-time steps per rule and clock one evaluation pass handles; "
        "the next pass continues from there.",
    )
    alert_reminder_minutes: float = Field(
        default=240.0,
        gt=0,
        description="Minutes a firing, unacknowledged alert waits before a reminder.",
    )
    dashboard_url: str = Field(
        default="http://127.0.0.1:8501",
        description="Public URL of the dashboard, for the links alerts carry.",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public URL of this API, for absolute links in notifications.",
    )
    alert_webhook_url: str | None = Field(
        default=None, description="Generic webhook receiving every alert notification as JSON."
    )
    alert_webhook_secret: str | None = Field(
        default=None,
        repr=False,
        description="Shared secret signing webhook and retrain bodies (X-Shadoweval-Signature).",
    )
    alert_slack_webhook_url: str | None = Field(
        default=None, repr=False, description="Slack incoming-webhook URL (its path is a secret)."
    )
    alert_pagerduty_routing_key: str | None = Field(
        default=None, repr=False, description="PagerDuty Events API v2 integration (routing) key."
    )
    alert_pagerduty_url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="PagerDuty Events API v2 endpoint.",
    )
    retrain_webhook_url: str | None = Field(
        default=None,
        description="Signed webhook told of every model change, with a training-export link.",
    )
    delivery_max_age_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours a delivery keeps being retried before it is recorded as failed.",
    )
    delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Seconds one delivery POST may take."
    )

    # Backoff between attempts of one delivery: base · 2^(n−1) with jitter, capped, so a
    # receiver back after an outage gets its backlog within a few minutes.
    delivery_retry_base_seconds: float = Field(
        default=10.0, gt=0, description="Seconds before the first retry of a delivery."
    )
    delivery_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between two attempts of a delivery."
    )
