"""Model providers: keys and URLs (secrets only from the environment), routing of models to
providers, rate limits, retries, the circuit breaker, prices."""

from pydantic import BaseModel, Field


class ProviderSettings(BaseModel):
    """How model calls reach their providers, and at what price."""

    anthropic_api_key: str | None = Field(default=None, repr=False)
    anthropic_base_url: str | None = Field(
        default=None, description="Anthropic API root, e.g. http://host:port (no /v1)."
    )
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API root ending in /v1 (vLLM, Ollama, a LiteLLM proxy).",
    )
    provider_for_model_prefix: dict[str, str] = Field(
        default_factory=lambda: {
            "claude": "anthropic",
            "gpt": "openai",
            "o1": "openai",
            "o3": "openai",
            "o4": "openai",
        },
        description="Which provider serves a model, by the longest matching id prefix.",
    )
    default_provider: str = Field(
        default="openai", description="Provider for models no prefix matches."
    )
    use_simulated_provider: bool = Field(
        default=False, description="Serve every model from the demo's simulated provider."
    )
    provider_timeout_s: float = Field(default=60.0, gt=0)
    provider_max_in_flight: int = Field(
        default=16, ge=1, description="Concurrent calls per provider."
    )
    provider_requests_per_minute: float = Field(default=1000.0, gt=0)
    provider_tokens_per_minute: float = Field(default=2_000_000.0, gt=0)
    provider_max_attempts: int = Field(default=4, ge=1)
    provider_backoff_base_s: float = Field(default=1.0, ge=0)
    provider_backoff_max_s: float = Field(default=60.0, ge=0)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_s: float = Field(default=30.0, gt=0)
    pricing_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="USD per million tokens by model id, e.g. "
        '{"my-model": {"input": 1, "output": 5, "cache_read": 0.1, "cache_write": 1.25}}.',
    )
