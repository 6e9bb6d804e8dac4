"""The sampling plan and budget: π per tier, hourly periods, learned costs, the daily budgets and
the harm rates the floors must detect."""

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class SamplingSettings(BaseModel):
    """Which decisions are shadowed, when π is decided, and what they may cost."""

    # π for strata the planner has not seen yet.
    sampling_rate_by_tier: dict[str, float] = Field(
        default_factory=lambda: {"cheap": 0.2, "strong": 0.05},
        description="Inclusion probability π per routed tier (JSON in the environment).",
    )
    sampling_default_rate: float = Field(default=0.2, ge=0.0, le=1.0)
    sampling_mode: Literal["hourly", "at_ingest"] = Field(
        default="hourly",
        description="`hourly`: π is decided per closed decision-time period by the planner job, "
        "from traffic before the period and labels older than `sampling_label_lag_minutes`, so "
        "a replay at any speed samples the same decisions (DESIGN.md, Time). `at_ingest`: π is "
        "decided as each decision is stored, from the plan in force then (lower latency; the same "
        "samples in a replay only while no planner plan exists, i.e. at the fixed "
        "`sampling_rate_by_tier`).",
    )
    sampling_period_minutes: int = Field(
        default=60,
        ge=1,
        le=1440,
        description="Length of a sampling period in decision time; divides a day.",
    )
    sampling_close_lateness_seconds: float = Field(
        default=300.0,
        ge=0,
        description="A period closes once its router's decision time is this far past its end; "
        "decisions arriving later are sampled with the period's stored plan.",
    )
    sampling_label_lag_minutes: float = Field(
        default=360.0,
        gt=0,
        description="The plan of period h reads labels of decisions before h minus this lag, and "
        "waits until all of them are judged (use ≥ the batch window in batch mode).",
    )
    sampling_idle_close_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Wall seconds without any decision-time progress after which open periods "
        "up to the watermark close (the end of a stream, a quiet router).",
    )
    sampling_cost_lookback_days: float = Field(
        default=7.0, gt=0, description="Days of finished samples a stratum's cost is learned from."
    )
    sampling_cost_min_samples: int = Field(
        default=5,
        ge=1,
        description="Finished samples before a stratum's learned cost replaces the prior.",
    )
    sampling_cost_margin: float = Field(
        default=0.05,
        ge=0,
        description="Reservations are the learned mean cost × (1 + margin), for the spread of "
        "work still in flight.",
    )
    daily_shadow_budget_usd: float = Field(
        default=20.0, ge=0, description="USD per UTC day of ts for everything sampling causes."
    )
    boost_daily_budget_usd: float = Field(
        default=5.0, ge=0, description="USD per UTC day for boosted sampling after model changes."
    )
    reverse_shadow_share: float = Field(
        default=0.1, ge=0, le=1, description="Share of the budget for strong-routed strata."
    )
    sampling_threshold_band_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Most of the budget spent on extra reverse shadows in the score band the "
        "threshold advisor lacks labels for (hourly sampling); 0 turns it off.",
    )
    default_cost_per_sample_usd: float = Field(
        default=0.02, gt=0, description="Reservation per sample until the planner has estimates."
    )
    harm_baseline: float = Field(default=0.10, gt=0, lt=1, description="Expected harm rate p0.")
    harm_alert_rate: float = Field(
        default=0.15, gt=0, lt=1, description="Harm rate the floors must detect (p1 > p0)."
    )
    detection_window_days: float = Field(
        default=1.0, gt=0, description="Time within which a segment's floor detects the drop."
    )
    planner_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often the planner samples closed periods."
    )
    planner_traffic_days: float = Field(default=1.0, gt=0, description="Traffic look-back.")
    planner_first_day_peak_pacing: bool = Field(
        default=False,
        description="Under a day of history, plan a day as the busiest hour × 24 (paces day 1).",
    )
    sampling_suspect_priority: bool = Field(
        default=False,
        description="Raise the floor of a segment whose labels (before the label lag) show part of "
        "the evidence for a harm rise, and pay it before the other floors (docs/architecture.md, "
        "Sampling).",
    )
    sampling_suspect_fraction: float = Field(
        default=1 / 3,
        gt=0,
        lt=1,
        description="A segment is suspect once its rise evidence reaches this fraction of the "
        "detector's alarm threshold.",
    )
    sampling_suspect_hours: float = Field(
        default=6.0,
        gt=0,
        description="A suspect segment's floor buys the labels the alarm still needs within this "
        "many decision hours.",
    )
    sampling_priority_share: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Most of a group's budget that suspect segments' raised floors may take.",
    )
    plan_refresh_seconds: float = Field(
        default=30.0, ge=0, description="How often ingest reloads the sampling plan."
    )

    @field_validator("sampling_rate_by_tier")
    @classmethod
    def _rates_are_probabilities(cls, rates: dict[str, float]) -> dict[str, float]:
        for tier, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for tier {tier!r} must be within [0, 1], got {rate}")
        return rates

    @field_validator("sampling_period_minutes")
    @classmethod
    def _period_divides_a_day(cls, minutes: int) -> int:
        # A period never straddles two budget days.
        if 1440 % minutes:
            raise ValueError(f"must divide a day (1440 minutes), got {minutes}")
        return minutes
