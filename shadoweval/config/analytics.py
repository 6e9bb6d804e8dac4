"""Analytics and statistics: the sequential tests and the quality-drop detector, aggregation,
session totals, the threshold advisor, expected harm."""

from pydantic import BaseModel, Field


class AnalyticsSettings(BaseModel):
    """What the statistics test, over how many labels, and how often they run."""

    sequential_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Level of the mixture SPRT shown beside the alarm."
    )
    sequential_alarm_threshold: float = Field(
        default=30_000.0,
        gt=1,
        description="In-control run length A of the quality-drop detector, in labels per "
        "segment: about n/A false alarms in n labels (30,000 ≈ 1 per 30 days over 20 segments "
        "at 50 labels a day); the GLR threshold is calibrated from it.",
    )
    sequential_reference_labels: int = Field(
        default=100, ge=10, description="Labels that set a segment's baseline harm rate p0."
    )
    change_point_window_labels: int = Field(
        default=1000,
        ge=50,
        le=2000,
        description="Look-back of the quality-drop detector: the longest post-change stretch "
        "it tests, and the labels (with their ts) each segment's state keeps. Rises it must "
        "catch need fewer labels than this (stats.change_point.labels_to_detect).",
    )
    aggregate_interval_seconds: float = Field(default=5.0, gt=0)
    session_totals_batch_size: int = Field(
        default=20_000,
        ge=1,
        description="Decisions the aggregator reads per transaction into the session totals.",
    )

    # Like model_watch_settle_seconds: ingest transactions commit out of id order on
    # PostgreSQL, so the aggregator re-reads the ids it saw this recently (database clock).
    session_totals_settle_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Seconds (database clock) the session aggregation re-reads recent ids.",
    )
    threshold_window_days: float = Field(
        default=7.0,
        gt=0,
        description="Decision days of traffic and labels the threshold advisor reads, ending at "
        "the router's decision-time watermark.",
    )
    threshold_bootstrap_replicates: int = Field(
        default=400, ge=20, le=10_000, description="Bootstrap replicates of the advisor's bands."
    )
    threshold_min_labels: int = Field(
        default=100, ge=1, description="Labels a segment needs before the advisor recommends."
    )
    threshold_min_band_labels: int = Field(
        default=20,
        ge=1,
        description="Labels between the threshold in force and a higher threshold before the "
        "advisor tests that threshold.",
    )
    threshold_harm_budget: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Harm budget ε (share of all traffic) of the advice the sampling planner "
        "buys threshold-band reverse shadows for.",
    )
    threshold_delta: float = Field(
        default=0.1, gt=0, lt=1, description="Risk level δ of that advice (Learn then Test)."
    )

    # CBPE-style expected harm refits the score → P(harm) map on bootstrap resamples.
    expected_harm_bootstrap: int = Field(
        default=100, ge=10, le=2000, description="Bootstrap refits behind expected-harm intervals."
    )
