"""OpenAI Chat Completions provider (openai 3.x SDK, built on httpx2).

Works with api.openai.com and any OpenAI-compatible server (vLLM, Ollama, a
LiteLLM proxy): `base_url` must end in `/v1` (the SDK appends
`/chat/completions`); a base_url without it is completed with `/v1`.

Request mapping:
- `system` (string or text blocks) becomes a leading `system` message.
  `cache_system` has no wire effect: OpenAI caches long prefixes by itself.
- `messages` pass through; a content list made only of text blocks (the
  Anthropic shape) is flattened to a string.
- `params`: `max_tokens` / `max_completion_tokens` / `max_output_tokens` ->
  `max_completion_tokens` (default `default_max_tokens`, 1024; for reasoning
  models it also covers the hidden reasoning tokens: give them room, or the
  answer comes back empty with finish_reason `length`). `temperature`, `top_p`,
  `stop` / `stop_sequences`, `seed`, `presence_penalty`, `frequency_penalty`,
  `reasoning_effort`, `verbosity`, `prompt_cache_key` pass through; other keys
  are dropped and listed in `Completion.raw["dropped_params"]`.
- `output_schema`: `response_format={"type": "json_schema", "json_schema":
  {"name", "schema", "strict": True}}`; strict mode needs
  `additionalProperties: false` and every property required. The message
  content is parsed as JSON into `Completion.structured`.

Usage and cost: OpenAI's `prompt_tokens` INCLUDES the cached tokens
(`prompt_tokens_details.cached_tokens`). Following the convention of
`Completion` on every provider, `input_tokens = prompt_tokens - cached_tokens`
(billed at the input price) and `cache_read_tokens = cached_tokens` (billed at
the cached-input price); `Completion.prompt_tokens` gives the sum back.
`prompt_tokens_details.cache_write_tokens` is informational (OpenAI bills no
cache-write surcharge) and stays in `raw`. When a compatible server reports no
usage at all, tokens are estimated at 4 characters per token and
`raw["usage_estimated"]` is True, so a call is never recorded as free.

Failures raise ProviderError: a non-null `message.refusal` or finish_reason
`content_filter` -> refused; finish_reason `length` with a schema -> truncated;
content that is not a JSON object when a schema was asked for ->
no_structured_output; SDK errors mapped as in the Anthropic provider.

Batches (`BatchProvider`): one JSONL file of `/v1/chat/completions` lines
(`files.create(purpose="batch")`), then `batches.create` with
`metadata={"shadoweval_tag": tag}` so `find_batches` can find it again. Results
come from the output file (status 200) and the error file (other statuses ->
`errored`; `batch_expired` -> `expired`; `batch_cancelled` -> `canceled`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import openai
import pydantic
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

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

MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
BATCH_ENDPOINT: Final = "/v1/chat/completions"
BATCH_TAG_KEY = "shadoweval_tag"
BATCH_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
PASSTHROUGH_PARAMS = (
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
    "verbosity",
    "prompt_cache_key",
)


def map_openai_error(exc: Exception, provider: str = "openai") -> ProviderError:
    """The ProviderError for an exception the OpenAI SDK raised."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"request timed out: {exc}", reason="timeout", provider=provider)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"connection failed: {exc}", reason="connection", provider=provider)
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError(
            f"response did not validate: {exc}",
            reason="malformed_response",
            provider=provider,
            status_code=exc.status_code,
        )
    if isinstance(exc, openai.APIStatusError):
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
    if isinstance(exc, ValueError):
        return ProviderError(f"request rejected: {exc}", reason="bad_request", provider=provider)
    return ProviderError(
        f"{type(exc).__name__}: {exc}", reason="malformed_response", provider=provider
    )


def _estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


class OpenAIProvider:
    """`Provider` over `openai.AsyncOpenAI` (Chat Completions)."""

    def __init__(
        self,
        *,
        api_key: str,
        pricing: PricingTable,
        base_url: str | None = None,
        timeout: float = 60.0,
        default_max_tokens: int = 1024,
        max_tokens_param: str = "max_completion_tokens",
        name: str = "openai",
        strict_response_validation: bool = False,
        client: AsyncOpenAI | None = None,
    ) -> None:
        """`max_tokens_param="max_tokens"` serves compatible servers that only know the
        older name. `strict_response_validation=True` is for tests against the fake."""
        self.name = name
        self._pricing = pricing
        self._default_max_tokens = default_max_tokens
        self._max_tokens_param = max_tokens_param
        if base_url is not None:
            base_url = base_url.rstrip("/")
            if not base_url.endswith("/v1"):
                base_url += "/v1"
        self._client = client or AsyncOpenAI(
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
        request, dropped = self._build_request(model, messages, system, params, output_schema)
        started = time.perf_counter()
        try:
            response = await self._client.chat.completions.create(**request)
        except Exception as exc:
            if isinstance(exc, openai.OpenAIError | ValueError):
                raise map_openai_error(exc, self.name) from exc
            raise
        latency_ms = (time.perf_counter() - started) * 1000.0
        if not isinstance(response, ChatCompletion):  # lenient mode returns text for non-JSON
            raise self._error(
                f"expected a ChatCompletion, got {type(response).__name__}", "malformed_response"
            )
        try:
            return self._completion(
                response, model, price, request, output_schema, latency_ms, dropped
            )
        except ProviderError:
            raise
        except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
            raise self._error(f"unexpected response shape: {exc}", "malformed_response") from exc

    def _build_request(
        self,
        model: str,
        messages: list[dict[str, Any]],
        system: str | list[dict[str, Any]] | None,
        params: dict[str, Any] | None,
        output_schema: OutputSchema | None,
    ) -> tuple[dict[str, Any], list[str]]:
        params = dict(params or {})
        wire_messages: list[dict[str, Any]] = []
        system_text = content_text(system) if system else ""
        if system_text:
            wire_messages.append({"role": "system", "content": system_text})
        for message in messages:
            content = message.get("content", "")
            if isinstance(content, list) and all(
                isinstance(b, dict) and b.get("type") == "text" for b in content
            ):
                content = content_text(content)
            wire_messages.append({**message, "content": content})

        request: dict[str, Any] = {"model": model, "messages": wire_messages}
        max_tokens = next((params[k] for k in MAX_TOKENS_KEYS if params.get(k)), None)
        for key in MAX_TOKENS_KEYS:
            params.pop(key, None)
        request[self._max_tokens_param] = int(max_tokens or self._default_max_tokens)
        stop = params.pop("stop", None) or params.pop("stop_sequences", None)
        params.pop("stop_sequences", None)
        if stop:
            request["stop"] = stop
        for key in PASSTHROUGH_PARAMS:
            value = params.pop(key, None)
            if value is not None:
                request[key] = value
        if output_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": output_schema.name,
                    "schema": output_schema.schema,
                    "strict": True,
                    **(
                        {"description": output_schema.description}
                        if output_schema.description
                        else {}
                    ),
                },
            }
        return request, sorted(k for k, v in params.items() if v is not None)

    def _completion(
        self,
        response: ChatCompletion,
        model: str,
        price: ModelPrice,
        request: dict[str, Any],
        output_schema: OutputSchema | None,
        latency_ms: float,
        dropped: list[str],
        batch: bool = False,
    ) -> Completion:
        if not response.choices:
            raise self._error("the response has no choices", "malformed_response")
        choice = response.choices[0]
        message = choice.message
        finish_reason = choice.finish_reason
        if message.refusal:
            raise self._error(f"{model} refused: {message.refusal}", "refused")
        if finish_reason == "content_filter":
            raise self._error(f"{model}'s answer was withheld by its content filter", "refused")
        if output_schema is not None and finish_reason == "length":
            raise self._error(
                f"{model} hit the token limit before finishing the {output_schema.name}",
                "truncated",
            )
        text = message.content or ""
        structured: dict[str, Any] | None = None
        if output_schema is not None:
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise self._error(
                    f"{model} returned content that is not JSON for {output_schema.name!r}",
                    "no_structured_output",
                ) from exc
            if not isinstance(parsed, dict):
                raise self._error(
                    f"{model} returned JSON that is not an object for {output_schema.name!r}",
                    "no_structured_output",
                )
            structured = parsed

        raw: dict[str, Any] = response.model_dump(mode="json")
        usage = response.usage
        if usage is not None:
            details = usage.prompt_tokens_details
            cached = int(details.cached_tokens or 0) if details is not None else 0
            cached = min(cached, int(usage.prompt_tokens))
            input_tokens = int(usage.prompt_tokens) - cached
            output_tokens = int(usage.completion_tokens)
        else:
            prompt_chars = json.dumps(request["messages"])
            cached = 0
            input_tokens = _estimate_tokens(prompt_chars)
            output_tokens = _estimate_tokens(text)
            raw["usage_estimated"] = True
        served_model = str(response.model or model)
        served_price = self._pricing.lookup(served_model) or price
        cost = served_price.cost_usd(input_tokens, output_tokens, cached, 0, batch=batch)
        if dropped:
            raw["dropped_params"] = dropped
        return Completion(
            text=text,
            served_model=served_model,
            provider=self.name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cached,
            cache_write_tokens=0,
            cost_usd=cost,
            latency_ms=latency_ms,
            finish_reason=finish_reason,
            structured=structured,
            raw=raw,
        )

    # --- Batch API ---------------------------------------------------------------------------

    async def submit_batch(self, *, requests: list[BatchRequest], tag: str) -> str:
        lines: list[str] = []
        for item in requests:
            self._pricing.price_for(item.model, provider=self.name)  # before spending anything
            body, _ = self._build_request(
                item.model, item.messages, item.system, item.params, item.output_schema
            )
            lines.append(
                json.dumps(
                    {
                        "custom_id": item.custom_id,
                        "method": "POST",
                        "url": BATCH_ENDPOINT,
                        "body": body,
                    }
                )
            )
        data = ("\n".join(lines) + "\n").encode()
        try:
            uploaded = await self._client.files.create(
                file=(f"{tag}.jsonl", data, "application/jsonl"), purpose="batch"
            )
            batch = await self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata={BATCH_TAG_KEY: tag},
            )
        except (openai.OpenAIError, ValueError) as exc:
            raise map_openai_error(exc, self.name) from exc
        return str(batch.id)

    async def find_batches(self, *, tag: str, created_after: datetime, size: int) -> list[str]:
        after = created_after.astimezone(UTC).timestamp()
        try:
            async for batch in self._client.batches.list(limit=100):
                if batch.created_at < after:
                    break  # newest first
                if (batch.metadata or {}).get(BATCH_TAG_KEY) == tag:
                    return [batch.id]
        except (openai.OpenAIError, ValueError) as exc:
            raise map_openai_error(exc, self.name) from exc
        return []

    async def cancel_batch(self, batch_id: str) -> None:
        try:
            await self._client.batches.cancel(batch_id)
        except (openai.OpenAIError, ValueError) as exc:
            raise map_openai_error(exc, self.name) from exc

    async def batch_state(self, batch_id: str) -> BatchState:
        try:
            batch = await self._client.batches.retrieve(batch_id)
        except (openai.OpenAIError, ValueError) as exc:
            raise map_openai_error(exc, self.name) from exc
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        return BatchState(
            batch_id=batch.id,
            ended=batch.status in BATCH_ENDED,
            status=batch.status,
            counts=counts,
        )

    async def batch_results(
        self, batch_id: str, *, output_schemas: Mapping[str, OutputSchema] | None = None
    ) -> list[BatchItemResult]:
        schemas = output_schemas or {}
        results: list[BatchItemResult] = []
        try:
            batch = await self._client.batches.retrieve(batch_id)
            for file_id in (batch.output_file_id, batch.error_file_id):
                if not file_id:
                    continue
                content = await self._client.files.content(file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        results.append(self._batch_item(json.loads(line), schemas))
        except (openai.OpenAIError, ValueError) as exc:
            raise map_openai_error(exc, self.name) from exc
        return results

    def _batch_item(
        self, line: dict[str, Any], schemas: Mapping[str, OutputSchema]
    ) -> BatchItemResult:
        custom_id = str(line.get("custom_id"))
        response = line.get("response") or None
        if response is None:
            code = str((line.get("error") or {}).get("code") or "")
            if code == "batch_expired":
                return BatchItemResult(custom_id, "expired")
            if code == "batch_cancelled":
                return BatchItemResult(custom_id, "canceled")
            error = self._error(f"batch item failed: {line.get('error')}", "server_error")
            return BatchItemResult(custom_id, "errored", error=error)
        status = int(response.get("status_code") or 0)
        if status != 200:
            failure = ProviderError(
                f"batch item answered HTTP {status}: {response.get('body')}"[:2000],
                reason=reason_for_status(status),
                provider=self.name,
                status_code=status,
            )
            return BatchItemResult(custom_id, "errored", error=failure)
        try:
            completion_body = ChatCompletion.model_validate(response.get("body"))
            model = str(completion_body.model)
            price = self._pricing.price_for(model, provider=self.name)
            completion = self._completion(
                completion_body,
                model,
                price,
                {"messages": []},
                schemas.get(custom_id),
                0.0,
                [],
                batch=True,
            )
        except ProviderError as unusable:
            return BatchItemResult(custom_id, "succeeded", error=unusable)
        except (pydantic.ValidationError, AttributeError, TypeError, KeyError, IndexError) as exc:
            error = self._error(f"unexpected batch item shape: {exc}", "malformed_response")
            return BatchItemResult(custom_id, "succeeded", error=error)
        return BatchItemResult(custom_id, "succeeded", completion)
