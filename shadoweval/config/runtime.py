"""The processes: the API's bind address and body limit, logging, the worker's lanes, leases and
retries."""

from typing import Literal

from pydantic import BaseModel, Field


class RuntimeSettings(BaseModel):
    """How the API and the worker run: bind address, body limit, logs, lanes, leases."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    metrics_require_key: bool = Field(
        default=False,
        description="Protect /metrics with the read scope (open by default for Prometheus).",
    )
    api_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Body limit of the admin and operate routes (keys, pool, alert rules, "
        "gates, review labels), enforced while reading.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    work_max_attempts: int = Field(
        default=5, ge=1, description="Claims of one work item before it is recorded as failed."
    )
    work_lease_seconds: float = Field(default=600.0, gt=0)
    work_retry_base_s: float = Field(default=30.0, ge=0)
    work_retry_max_s: float = Field(default=3600.0, ge=0)
    worker_batch_size: int = Field(default=8, ge=1, description="Items one lane claims at once.")
    worker_lanes: int = Field(
        default=4, ge=1, description="Concurrent claim loops per kind of work item."
    )
    worker_poll_seconds: float = Field(default=2.0, gt=0)
    enqueue_interval_seconds: float = Field(default=5.0, gt=0)
    leader_lease_seconds: float = Field(
        default=30.0, gt=0, description="A dead leader is replaced within this time."
    )
