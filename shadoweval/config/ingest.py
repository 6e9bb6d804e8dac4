"""Ingest: segments, payload storage and redaction, request limits, the decision clock, the LiteLLM
and OTLP adapters."""

from typing import Literal

from pydantic import BaseModel, Field

from shadoweval.redaction_defaults import DEFAULT_PATTERNS as DEFAULT_REDACTION_PATTERNS

StorePayloads = Literal["sampled", "all", "none"]


class IngestSettings(BaseModel):
    """What ingest accepts and keeps, and how it labels segments."""

    segment_key: str = Field(
        default="topic",
        description="The label of `segment` whose value defines a segment; others are filters.",
    )
    unlabelled_segment: str = Field(
        default="(none)", description="Segment value of decisions without the segment key."
    )
    store_payloads: StorePayloads = Field(
        default="sampled",
        description="Keep request/response payloads for sampled decisions only, all, or none.",
    )
    redaction_patterns: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_REDACTION_PATTERNS),
        description="Regexes applied to payload text before it is written, by name; a "
        "decision whose payload they change is stored but not shadowed (an unfair pair).",
    )
    ingest_max_items: int = Field(default=1000, ge=1)
    ingest_max_concurrent: int = Field(
        default=8, ge=1, description="Ingest transactions at once per API process."
    )
    ingest_wait_seconds: float = Field(
        default=2.0, ge=0, description="Wait for a slot before answering 503 with Retry-After."
    )
    ingest_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)

    # Ingest skips the key lookup (a DB read and a thread hop per request) for a key it
    # authenticated this recently; also the bound on how long a key revoked through another
    # API process keeps working for ingest (revocations through this process apply at once).
    ingest_key_cache_seconds: float = Field(
        default=5.0, ge=0, description="Seconds ingest trusts an authenticated API key; 0 = off."
    )
    decision_clock_skew_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How far a decision `ts` may run ahead of the wall clock and still move its "
        "router's decision-time watermark (a bogus future ts cannot run the clock ahead).",
    )
    otlp_router_name: str = Field(
        default="otel", description="Router of OTLP spans without shadoweval.route.router."
    )
    litellm_router_name: str = Field(
        default="litellm",
        min_length=1,
        max_length=200,
        description="Router name of decisions posted to /v1/integrations/litellm "
        "(a `?router=` query parameter overrides it per logger).",
    )
    litellm_group_tiers: dict[str, str] = Field(
        default_factory=dict,
        description='Tier of each LiteLLM model group, e.g. {"gpt-4o-mini": "cheap", '
        '"gpt-4o": "strong"}; "*" is the default. An unmapped group is its own tier name.',
    )
    litellm_segment_key_source: str | None = Field(
        default=None,
        description="The LiteLLM label whose value is the segment (segment_key): the key of "
        "a `key:value` request tag or of the caller's metadata, or team, key_alias, user, "
        "org, project, end_user, tags. Default: the label named like segment_key.",
    )
    litellm_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Body limit of /v1/integrations/litellm: LiteLLM flushes up to 512 "
        "records of ~14 KB at once.",
    )
