"""Retention: how long stored payloads and finished alert deliveries are kept."""

from pydantic import BaseModel, Field


class RetentionSettings(BaseModel):
    """How long stored content is kept."""

    payload_retention_days: float = Field(
        default=30.0, gt=0, description="Stored payloads older than this are deleted."
    )

    # Delivered and failed outbox rows (and their attempts) are deleted after this many
    # days by the leader's purge_deliveries job: the outbox would otherwise grow forever.
    delivery_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Days delivered and failed alert deliveries are kept before deletion.",
    )

    # PostgreSQL drops the decision log's day partitions past this, counted back from the
    # deployment's decision-time watermark (the drop_expired_days job); snapshots, verdicts
    # and events outlive it. SQLite keeps every decision.
    decision_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Days of raw decisions kept (PostgreSQL: dropped a day partition at a time).",
    )
