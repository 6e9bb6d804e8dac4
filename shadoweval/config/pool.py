"""The model watcher (pool changes, sampling boosts) and the release gate."""

from pydantic import BaseModel, Field


class PoolGateSettings(BaseModel):
    """What happens when a router's models change, and how the release gate decides."""

    model_watch_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the leader scans new decisions for new models."
    )
    model_watch_batch_size: int = Field(
        default=5000, ge=1, description="Decisions the model watcher reads per transaction."
    )

    # Ingest transactions commit out of id order on PostgreSQL: the watcher re-reads the ids
    # it saw in the last this-many seconds (database clock) on every pass, so only a decision
    # whose ingest transaction stays open longer than this after drawing its id can be missed.
    model_watch_settle_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Seconds (database clock) the watcher keeps re-reading recent decision ids.",
    )
    model_pool_establish_minutes: float = Field(
        default=15.0,
        ge=0,
        description="Minutes of decision time after a tier's first decision whose models "
        "establish its pool (no model_change for them).",
    )
    model_change_boost_hours: float = Field(
        default=24.0, ge=0, description="Hours of decision time a model change boosts sampling."
    )
    model_change_boost_factor: float = Field(
        default=5.0, ge=1, description="How many times more often a changed tier is sampled."
    )

    # Release gate (`shadoweval gate`, POST /v1/gates): the one-sided level of its
    # non-inferiority tests, and the share of replayed requests that may fail (provider or
    # judge errors) before a run reports an error instead of a verdict on a biased sample.
    gate_alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="One-sided level of the gate's tests."
    )
    gate_max_error_share: float = Field(
        default=0.05, ge=0, le=1, description="Share of gate items allowed to end in error."
    )
    gate_max_cost_usd: float | None = Field(
        default=50.0, gt=0, description="Default spending cap of one gate run, USD."
    )

    # Off by default: a gate run spends provider money (up to gate_max_cost_usd) on every
    # model change, which a team should opt into.
    gate_on_model_change: bool = Field(
        default=False, description="Queue a gate run (new model vs. previous) per model change."
    )
    gate_on_model_change_sample: int = Field(
        default=200, ge=1, le=100_000, description="Requests the model-change gate replays."
    )
    gate_on_model_change_max_drop: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Non-inferiority margin of the model-change gate (P(loss) - P(win)).",
    )
