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
