"""Which provider serves a model, built once from the settings.

`build_provider_registry(settings)` returns a `ProviderRegistry`;
`registry.for_model(model)` gives the provider (wrapped in a ResilientProvider,
one per provider, so limits and the circuit breaker are shared by all of its
models) for the longest prefix of `settings.provider_for_model_prefix` that the
model id starts with, else `settings.default_provider`. With
`use_simulated_provider=True` every model is served by the simulated provider.

Clients are created on first use, so a deployment that only uses OpenAI needs
no Anthropic key. A real provider without a key raises `ProviderNotConfigured`
(a ProviderError with reason "authentication") naming the environment variable
to set. Create, use and `aclose()` a registry inside one event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shadoweval.providers.base import Provider, ProviderError
from shadoweval.providers.pricing import PricingTable
from shadoweval.providers.resilience import ResilientProvider

if TYPE_CHECKING:
    from shadoweval.config import Settings

KNOWN_PROVIDERS = ("anthropic", "openai", "simulated")
KEY_ENV = {"anthropic": "SHADOWEVAL_ANTHROPIC_API_KEY", "openai": "SHADOWEVAL_OPENAI_API_KEY"}


class ProviderNotConfigured(ProviderError):
    """A provider is needed but cannot be built (no API key, unknown provider name)."""

    code = "provider_not_configured"


def pricing_table(settings: Settings) -> PricingTable:
    """The default prices with `settings.pricing_overrides` applied."""
    return PricingTable.from_settings(settings)


class ProviderRegistry:
    """Providers by name, built lazily, and the model -> provider routing."""

    def __init__(
        self,
        settings: Settings,
        *,
        pricing: PricingTable | None = None,
        strict_response_validation: bool = False,
    ) -> None:
        """`strict_response_validation` builds the SDK clients in strict mode (tests)."""
        self.settings = settings
        self.pricing = pricing or pricing_table(settings)
        self._strict = strict_response_validation
        self._providers: dict[str, ResilientProvider] = {}
        for name in {*settings.provider_for_model_prefix.values(), settings.default_provider}:
            if name not in KNOWN_PROVIDERS:
                raise ValueError(
                    f"unknown provider {name!r} in provider settings; known: {KNOWN_PROVIDERS}"
                )

    def provider_name_for(self, model: str) -> str:
        """The name of the provider that serves `model`."""
        if self.settings.use_simulated_provider:
            return "simulated"
        prefixes = self.settings.provider_for_model_prefix
        matches = [prefix for prefix in prefixes if model.startswith(prefix)]
        if not matches:
            return self.settings.default_provider
        return prefixes[max(matches, key=len)]

    def for_model(self, model: str) -> Provider:
        """The (resilient) provider for `model`; raises ProviderNotConfigured."""
        return self.provider(self.provider_name_for(model))

    def provider(self, name: str) -> ResilientProvider:
        """The (resilient) provider called `name`, built on first use."""
        existing = self._providers.get(name)
        if existing is not None:
            return existing
        wrapped = self._wrap(self._build(name))
        self._providers[name] = wrapped
        return wrapped

    def _build(self, name: str) -> Provider:
        settings = self.settings
        if name == "simulated":
            from shadoweval.providers.simulated import SimulatedProvider

            return SimulatedProvider(pricing=self.pricing)
        if name == "anthropic":
            if not settings.anthropic_api_key:
                raise self._missing_key(name)
            from shadoweval.providers.anthropic import AnthropicProvider

            return AnthropicProvider(
                api_key=settings.anthropic_api_key,
                base_url=settings.anthropic_base_url,
                timeout=settings.provider_timeout_s,
                pricing=self.pricing,
                strict_response_validation=self._strict,
            )
        if name == "openai":
            if not settings.openai_api_key:
                raise self._missing_key(name)
            from shadoweval.providers.openai import OpenAIProvider

            return OpenAIProvider(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url,
                timeout=settings.provider_timeout_s,
                pricing=self.pricing,
                strict_response_validation=self._strict,
            )
        raise ProviderNotConfigured(
            f"unknown provider {name!r}; known: {', '.join(KNOWN_PROVIDERS)}",
            reason="bad_request",
            provider=name,
        )

    def _missing_key(self, name: str) -> ProviderNotConfigured:
        return ProviderNotConfigured(
            f"provider {name!r} is needed but has no API key: set {KEY_ENV[name]} "
            "(or SHADOWEVAL_USE_SIMULATED_PROVIDER=true for the demo)",
            reason="authentication",
            provider=name,
        )

    def _wrap(self, inner: Provider) -> ResilientProvider:
        s = self.settings
        return ResilientProvider(
            inner,
            max_in_flight=s.provider_max_in_flight,
            requests_per_minute=s.provider_requests_per_minute,
            tokens_per_minute=s.provider_tokens_per_minute,
            max_attempts=s.provider_max_attempts,
            backoff_base_s=s.provider_backoff_base_s,
            backoff_max_s=s.provider_backoff_max_s,
            circuit_failure_threshold=s.circuit_failure_threshold,
            circuit_reset_s=s.circuit_reset_s,
        )

    def stats(self) -> dict[str, dict[str, Any]]:
        """`ResilientProvider.stats()` of every provider built so far, by name."""
        return {name: provider.stats() for name, provider in self._providers.items()}

    async def aclose(self) -> None:
        """Close every client built so far."""
        providers, self._providers = self._providers, {}
        for provider in providers.values():
            await provider.aclose()


def build_provider_registry(
    settings: Settings,
    *,
    pricing: PricingTable | None = None,
    strict_response_validation: bool = False,
) -> ProviderRegistry:
    """The registry for these settings; see the module docstring."""
    return ProviderRegistry(
        settings, pricing=pricing, strict_response_validation=strict_response_validation
    )
