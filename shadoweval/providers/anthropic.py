"""Anthropic Messages API provider (anthropic 2.x SDK, built on httpx2).

Request mapping:
- `messages`: user/assistant turns as given (string or block content). Messages
  with role `system` (the OpenAI convention, as routers log them) are taken out
  and prepended to the system prompt, since the Messages API has no such role.
- `system`: a string or text blocks; `cache_system=True` sends it as text
  blocks whose last one carries `cache_control: {"type": "ephemeral"}`.
- `params`: `max_tokens` (also read from `max_completion_tokens` /
  `max_output_tokens`; default `default_max_tokens`, 1024), `stop` /
  `stop_sequences`, `metadata`; `temperature`, `top_p`, `top_k` go through
  `extra_body` only when given (`messages.create` has no such keyword; some
  newer models answer 400 to non-default sampling parameters). Other keys are
  dropped and listed in `Completion.raw["dropped_params"]`.
- `output_schema`: forced tool use, one tool named after the schema;
  `Completion.structured` is that tool call's input, and `Completion.text` its
  JSON when the model wrote no text. Models that refuse forced tool use (the
  Sonnet 5.5 model card says so) answer 400 -> `bad_request`: pick another judge.

Usage: `input_tokens` is Anthropic's `usage.input_tokens` (already excluding
cache reads and writes), `cache_read_tokens` / `cache_write_tokens` are
`cache_read_input_tokens` / `cache_creation_input_tokens`.

Failures raise ProviderError: stop_reason `refusal` -> refused; `max_tokens`
with a schema -> truncated; no tool call when one was forced ->
no_structured_output; SDK errors by status (429 rate_limited with the
retry-after(-ms) header in `retry_after_s`, 529 overloaded, 5xx server_error,
408 timeout, 401/403 authentication, other 4xx bad_request), timeouts,
connection errors, and bodies that do not parse -> malformed_response.
The client never retries (`max_retries=0`): ResilientProvider does.

Batches (`BatchProvider`): Message Batches over the same request mapping
(sampling parameters go into `params` directly), results matched by
`custom_id` and priced at the batch rate. Message Batches carry no metadata,
so `find_batches` can only list batches of the right size created since the
submission started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anthropic
import pydantic
from anthropic import AsyncAnthropic
from anthropic.types import Message

from shadoweval.providers.base import (
    BatchItemResult,
    BatchRequest,
    BatchState,
    Completion,
    OutputSchema,
    ProviderError,
    content_text,
    reason_for_status,
    retry_after_seconds,
)
from shadoweval.providers.pricing import ModelPrice, PricingTable

SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def map_anthropic_error(exc: Exception, provider: str = "anthropic") -> ProviderError:
    """The ProviderError for an exception the Anthropic SDK raised."""
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(f"request timed out: {exc}", reason="timeout", provider=provider)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(f"connection failed: {exc}", reason="connection", provider=provider)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderError(
            f"response did not validate: {exc}",
            reason="malformed_response",
            provider=provider,
            status_code=exc.response.status_code,
        )
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        return ProviderError(
            f"HTTP {status}: {exc.message}",
            reason=reason_for_status(status),
            provider=provider,
            status_code=status,
            retry_after_s=retry_after_seconds(exc.response.headers),
        )
    if isinstance(exc, json.JSONDecodeError | pydantic.ValidationError):
        return ProviderError(
            f"response body did not parse: {exc}", reason="malformed_response", provider=provider
        )
    if isinstance(exc, ValueError):  # raised before sending, e.g. "Streaming is required"
        return ProviderError(f"request rejected: {exc}", reason="bad_request", provider=provider)
    return ProviderError(
        f"{type(exc).__name__}: {exc}", reason="malformed_response", provider=provider
    )


class AnthropicProvider:
    """`Provider` over `anthropic.AsyncAnthropic` (Messages API)."""

    def __init__(
        self,
        *,
        api_key: str,
        pricing: PricingTable,
        base_url: str | None = None,
        timeout: float = 60.0,
        default_max_tokens: int = 1024,
        name: str = "anthropic",
        strict_response_validation: bool = False,
        client: AsyncAnthropic | None = None,
    ) -> None:
        """`base_url` is the API root without `/v1` (the SDK appends `/v1/messages`).

        `strict_response_validation=True` makes the SDK reject responses missing
        required fields (tests use it against the fake server).
        """
        self.name = name
        self._pricing = pricing
        self._default_max_tokens = default_max_tokens
        self._client = client or AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            _strict_response_validation=strict_response_validation,
        )

    async def aclose(self) -> None:
        await self._client.close()

    def _error(self, message: str, reason: str) -> ProviderError:
        return ProviderError(message, reason=reason, provider=self.name)

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
        price = self._pricing.price_for(model, provider=self.name)  # before spending anything
        request = self._build_request(model, messages, system, params, output_schema, cache_system)
        dropped = request.pop("_dropped")
        started = time.perf_counter()
        try:
            response = await self._client.messages.create(**request)
        except Exception as exc:
            if isinstance(exc, anthropic.AnthropicError | ValueError):
                raise map_anthropic_error(exc, self.name) from exc
            raise
        latency_ms = (time.perf_counter() - started) * 1000.0
        if not isinstance(response, Message):  # lenient mode returns text for non-JSON bodies
            raise self._error(
                f"expected a Message, got {type(response).__name__}", "malformed_response"
            )
        try:
            return self._completion(response, model, price, output_schema, latency_ms, dropped)
        except ProviderError:
            raise
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise self._error(f"unexpected response shape: {exc}", "malformed_response") from exc

    def _build_request(
        self,
        model: str,
        messages: list[dict[str, Any]],
        system: str | list[dict[str, Any]] | None,
        params: dict[str, Any] | None,
        output_schema: OutputSchema | None,
        cache_system: bool,
    ) -> dict[str, Any]:
        params = dict(params or {})
        system_texts: list[str] = []
        turns: list[dict[str, Any]] = []
        for message in messages:
            if message.get("role") in ("system", "developer"):
                system_texts.append(content_text(message.get("content")))
            else:
                turns.append({"role": message["role"], "content": message.get("content", "")})

        blocks: list[dict[str, Any]] = [{"type": "text", "text": t} for t in system_texts if t]
        if isinstance(system, str):
            if system:
                blocks.append({"type": "text", "text": system})
        elif system:
            blocks.extend(dict(block) for block in system)

        request: dict[str, Any] = {"model": model, "messages": turns}
        max_tokens = next((params.pop(k) for k in MAX_TOKENS_KEYS if k in params), None)
        for key in MAX_TOKENS_KEYS:
            params.pop(key, None)
        request["max_tokens"] = int(max_tokens or self._default_max_tokens)
        if blocks:
            if cache_system:
                blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
                request["system"] = blocks
            elif all(set(b) == {"type", "text"} for b in blocks):
                request["system"] = "\n\n".join(b["text"] for b in blocks)
            else:
                request["system"] = blocks
        stop = params.pop("stop_sequences", None) or params.pop("stop", None)
        if stop:
            request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if "metadata" in params:
            request["metadata"] = params.pop("metadata")
        extra_body = {k: params.pop(k) for k in SAMPLING_PARAMS if params.get(k) is not None}
        if extra_body:
            request["extra_body"] = extra_body
        if output_schema is not None:
            request["tools"] = [
                {
                    "name": output_schema.name,
                    "description": output_schema.description or f"Record the {output_schema.name}.",
                    "input_schema": output_schema.schema,
                }
            ]
            request["tool_choice"] = {
                "type": "tool",
                "name": output_schema.name,
                "disable_parallel_tool_use": True,
            }
        request["_dropped"] = sorted(k for k, v in params.items() if v is not None)
        return request

    def _completion(
        self,
        response: Message,
        model: str,
        price: ModelPrice,
        output_schema: OutputSchema | None,
        latency_ms: float,
        dropped: list[str],
        batch: bool = False,
    ) -> Completion:
        stop_reason = response.stop_reason
        if stop_reason == "refusal":
            raise self._error(f"{model} refused to answer", "refused")
        if output_schema is not None and stop_reason == "max_tokens":
            raise self._error(
                f"{model} hit max_tokens before finishing the {output_schema.name}", "truncated"
            )
        text = "".join(block.text for block in response.content if block.type == "text")
        structured: dict[str, Any] | None = None
        if output_schema is not None:
            tool_call = next(
                (
                    block
                    for block in response.content
                    if block.type == "tool_use" and block.name == output_schema.name
                ),
                None,
            )
            if tool_call is None or not isinstance(tool_call.input, dict):
                raise self._error(
                    f"{model} did not call the forced tool {output_schema.name!r}",
                    "no_structured_output",
                )
            structured = dict(tool_call.input)
            if not text:
                text = json.dumps(structured)

        usage = response.usage
        input_tokens = int(usage.input_tokens)
        output_tokens = int(usage.output_tokens)
        cache_read = int(usage.cache_read_input_tokens or 0)
        cache_write = int(usage.cache_creation_input_tokens or 0)
        served_model = str(response.model or model)
        served_price = self._pricing.lookup(served_model) or price
        cost = served_price.cost_usd(
            input_tokens, output_tokens, cache_read, cache_write, batch=batch
        )
        raw = response.model_dump(mode="json")
        if dropped:
            raw["dropped_params"] = dropped
        return Completion(
            text=text,
            served_model=served_model,
            provider=self.name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cost_usd=cost,
            latency_ms=latency_ms,
            finish_reason=stop_reason,
            structured=structured,
            raw=raw,
        )

    # --- Message Batches ---------------------------------------------------------------------

    async def submit_batch(self, *, requests: list[BatchRequest], tag: str) -> str:
        items: list[dict[str, Any]] = []
        for item in requests:
            self._pricing.price_for(item.model, provider=self.name)  # before spending anything
            params = self._build_request(
                item.model,
                item.messages,
                item.system,
                item.params,
                item.output_schema,
                item.cache_system,
            )
            params.pop("_dropped")
            params.update(params.pop("extra_body", None) or {})
            items.append({"custom_id": item.custom_id, "params": params})
        try:
            batch = await self._client.messages.batches.create(requests=items)  # type: ignore[arg-type]
        except (anthropic.AnthropicError, ValueError) as exc:
            raise map_anthropic_error(exc, self.name) from exc
        return str(batch.id)

    async def find_batches(self, *, tag: str, created_after: datetime, size: int) -> list[str]:
        # A Message Batch keeps no metadata, so `tag` can only be checked where results
        # exist: an ended candidate whose first custom_id lacks the tag is someone else's.
        # Candidates still in progress are returned unverified; the caller adopts one only
        # when it is the sole candidate, and checks every custom_id when collecting it.
        prefix = f"{tag}-"
        found: list[tuple[datetime, str]] = []
        try:
            async for batch in self._client.messages.batches.list(limit=100):
                if batch.created_at < created_after:
                    break  # newest first: everything after this is older still
                counts = batch.request_counts
                total = (
                    counts.processing
                    + counts.succeeded
                    + counts.errored
                    + counts.canceled
                    + counts.expired
                )
                if total != size:
                    continue
                if batch.processing_status == "ended" and not await self._first_custom_id_has(
                    batch.id, prefix
                ):
                    continue
                found.append((batch.created_at, batch.id))
        except (anthropic.AnthropicError, ValueError) as exc:
            raise map_anthropic_error(exc, self.name) from exc
        return [batch_id for _, batch_id in sorted(found)]

    async def _first_custom_id_has(self, batch_id: str, prefix: str) -> bool:
        decoder = await self._client.messages.batches.results(batch_id)
        async for item in decoder:
            return item.custom_id.startswith(prefix)
        return False

    async def cancel_batch(self, batch_id: str) -> None:
        try:
            await self._client.messages.batches.cancel(batch_id)
        except (anthropic.AnthropicError, ValueError) as exc:
            raise map_anthropic_error(exc, self.name) from exc

    async def batch_state(self, batch_id: str) -> BatchState:
        try:
            batch = await self._client.messages.batches.retrieve(batch_id)
        except (anthropic.AnthropicError, ValueError) as exc:
            raise map_anthropic_error(exc, self.name) from exc
        return BatchState(
            batch_id=batch.id,
            ended=batch.processing_status == "ended",
            status=batch.processing_status,
            counts=batch.request_counts.model_dump(),
        )

    async def batch_results(
        self, batch_id: str, *, output_schemas: Mapping[str, OutputSchema] | None = None
    ) -> list[BatchItemResult]:
        schemas = output_schemas or {}
        results: list[BatchItemResult] = []
        try:
            decoder = await self._client.messages.batches.results(batch_id)
            async for item in decoder:
                outcome = item.result.type
                if item.result.type == "succeeded":
                    message = item.result.message
                    try:
                        price = self._pricing.price_for(message.model, provider=self.name)
                        completion = self._completion(
                            message,
                            message.model,
                            price,
                            schemas.get(item.custom_id),
                            0.0,
                            [],
                            batch=True,
                        )
                    except ProviderError as unusable:
                        results.append(BatchItemResult(item.custom_id, outcome, error=unusable))
                        continue
                    results.append(BatchItemResult(item.custom_id, outcome, completion))
                elif item.result.type == "errored":
                    detail = item.result.error.error
                    failure = ProviderError(
                        f"batch item errored: {detail.type}: {detail.message}",
                        reason=_BATCH_ERROR_REASONS.get(detail.type, "server_error"),
                        provider=self.name,
                    )
                    results.append(BatchItemResult(item.custom_id, outcome, error=failure))
                else:
                    results.append(BatchItemResult(item.custom_id, outcome))
        except (anthropic.AnthropicError, ValueError) as exc:
            raise map_anthropic_error(exc, self.name) from exc
        return results


# The `error.type` of an errored batch item -> the failure reason a realtime call would get.
_BATCH_ERROR_REASONS = {
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
    "authentication_error": "authentication",
    "permission_error": "authentication",
    "billing_error": "authentication",
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
    "api_error": "server_error",
}
