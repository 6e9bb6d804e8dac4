"""The provider protocol every model backend implements, and what a call returns.

Errors: a provider raises `ProviderError` (never an SDK exception) carrying a
stable `reason` and whether a retry could help; the resilience layer retries
the retryable ones, and the shadow runner records the reason of the last one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from shadoweval.exceptions import ShadowevalError
from shadoweval.retry import parse_retry_after

# Reasons a call failed; stored on failed runs and verdicts, exported as metric labels.
RETRYABLE_REASONS = frozenset(
    {"rate_limited", "server_error", "timeout", "connection", "overloaded"}
)
FAILURE_REASONS = RETRYABLE_REASONS | frozenset(
    {
        "bad_request",  # 400/404/422: the request itself is wrong
        "authentication",  # 401/403
        "malformed_response",  # the body did not parse into the SDK's shape
        "refused",  # the model refused (stop_reason/finish_reason or refusal field)
        "truncated",  # hit max_tokens before finishing structured output
        "no_structured_output",  # asked for structured output, got none
        "circuit_open",  # the provider's circuit breaker is open
        "budget_exhausted",
        "unknown_model",
    }
)


class ProviderError(ShadowevalError):
    """A model call failed. `reason` is one of FAILURE_REASONS."""

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        provider: str,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, provider=provider, status_code=status_code)
        assert reason in FAILURE_REASONS, reason
        self.reason = reason
        self.provider = provider
        self.status_code = status_code
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE_REASONS

    @property
    def worth_requeueing(self) -> bool:
        """Whether a work item that failed this way should be tried again later: transient
        failures, and an open circuit (the provider may be healthy again by then)."""
        return self.retryable or self.reason == "circuit_open"


@dataclass(frozen=True)
class OutputSchema:
    """Ask for structured output: Anthropic forced tool use, OpenAI strict json_schema."""

    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Completion:
    """One finished model call."""

    text: str
    served_model: str  # the model id the provider reports having used
    provider: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    # The parsed object when an OutputSchema was requested (tool input / JSON content).
    structured: dict[str, Any] | None = None
    simulated: bool = False  # True only for the demo's simulated provider
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # Token convention, the same on every provider: `input_tokens` are the prompt
    # tokens billed at the full input price; cache reads and writes are counted
    # apart (OpenAI's `prompt_tokens` includes its cached tokens: the OpenAI
    # provider subtracts them).
    @property
    def prompt_tokens(self) -> int:
        """The whole prompt: input + cache reads + cache writes."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


@runtime_checkable
class Provider(Protocol):
    """A model backend. Implementations own no retries: the resilience layer does."""

    name: str

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        system: str | list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
        output_schema: OutputSchema | None = None,
        cache_system: bool = False,
    ) -> Completion:
        """Run one call. `params` carries max_tokens, temperature and the like.

        `cache_system=True` marks the system prompt as a cacheable prefix
        (Anthropic `cache_control`; OpenAI caches long prefixes by itself).
        Raises ProviderError.
        """
        ...

    async def aclose(self) -> None: ...


def reason_for_status(status_code: int) -> str:
    """The failure reason of an HTTP error status from a provider."""
    if status_code == 429:
        return "rate_limited"
    if status_code == 529:
        return "overloaded"
    if status_code == 408:
        return "timeout"
    if status_code in (401, 402, 403):
        return "authentication"
    if status_code == 409 or status_code >= 500:
        return "server_error"  # 409: a transient conflict; the SDKs retry it too
    return "bad_request"


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def content_text(content: Any) -> str:
    """The text of a message's `content`: a string, or the text of its text blocks/parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "\n".join(parts)
    return str(content)


# --- Batch APIs (Anthropic Message Batches, OpenAI Batch API) --------------------------------

BATCH_ITEM_OUTCOMES = ("succeeded", "errored", "expired", "canceled")


@dataclass(frozen=True)
class BatchRequest:
    """One call inside a batch, matched back to its work item by `custom_id`
    (1–64 characters of letters, digits, `-` and `_`: Anthropic's rule, the stricter one)."""

    custom_id: str
    model: str
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None = None
    params: dict[str, Any] | None = None
    output_schema: OutputSchema | None = None
    cache_system: bool = False


@dataclass(frozen=True)
class BatchState:
    """A submitted batch as the provider reports it."""

    batch_id: str
    ended: bool  # every item has a result (succeeded, errored, expired or canceled)
    status: str  # the provider's own word: in_progress, ended, completed, expired…
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchItemResult:
    """One item of an ended batch. `outcome` is one of BATCH_ITEM_OUTCOMES; a succeeded
    item carries its Completion (priced at the batch rate) or, when its output is unusable
    (refused, truncated, no structured output), the ProviderError the realtime call raises."""

    custom_id: str
    outcome: str
    completion: Completion | None = None
    error: ProviderError | None = None


@runtime_checkable
class BatchProvider(Protocol):
    """A backend with a batch API. Calls are not retried here: a failed submit, poll or
    download is simply tried again on the next tick of the batch jobs."""

    name: str

    async def submit_batch(self, *, requests: list[BatchRequest], tag: str) -> str:
        """Create one batch of `requests`; returns the provider's batch id. `tag` (≤ 64
        characters) identifies it for `find_batch` when the answer to this call is lost."""
        ...

    async def find_batches(self, *, tag: str, created_after: datetime, size: int) -> list[str]:
        """Ids of batches that may be the one `submit_batch(tag=tag)` created, oldest first:
        exactly that one where the API keeps a metadata tag (OpenAI), else every batch of
        `size` items created since `created_after` whose results, when it has ended, carry
        the tag in their custom_ids (Anthropic; results are then checked
        against the expected custom_ids, so a wrong guess is never booked)."""
        ...

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to stop a batch (an orphaned duplicate); its unprocessed items
        are not billed."""
        ...

    async def batch_state(self, batch_id: str) -> BatchState: ...

    async def batch_results(
        self, batch_id: str, *, output_schemas: Mapping[str, OutputSchema] | None = None
    ) -> list[BatchItemResult]:
        """Every item of an ended batch, in no particular order. `output_schemas` names the
        schema each structured item (by custom_id) was submitted with."""
        ...


def as_batch_provider(provider: object) -> BatchProvider | None:
    """The batch API behind `provider` (looking through wrappers with an `inner`), if any."""
    seen = 0
    current: object | None = provider
    while current is not None and seen < 5:
        if isinstance(current, BatchProvider):
            return current
        current = getattr(current, "inner", None)
        seen += 1
    return None
