"""A fake LLM provider speaking the real HTTP shapes of both SDKs' calls.

Routes (responses pass the SDKs' `_strict_response_validation=True`):

- `POST /v1/messages`: Anthropic Messages. Text answers; forced tool use
  (`tool_choice={"type": "tool", "name": ...}`) answers with a `tool_use` block;
  a system block carrying `cache_control` reports `cache_creation_input_tokens`
  the first time its prefix is seen and `cache_read_input_tokens` afterwards.
- `POST /v1/chat/completions`: OpenAI Chat Completions. Text answers;
  `response_format={"type": "json_schema", ...}` answers with JSON content;
  a prompt of at least `openai_cache_min_tokens` (default 1024) whose prefix
  was sent before reports `prompt_tokens_details.cached_tokens` (the common
  prefix, floored to a multiple of 128, as OpenAI does).

Answers are deterministic: `"[<model>] answer: <last user message[:60]>"`;
tokens are whitespace-separated words (input: every system and message text;
output: the answer text, or the JSON of the structured object). A structured
request whose schema has `winner`/`score_a`/`score_b` gets a verdict with
scores from a hash of the prompt; any other schema a minimal object.

Faults, on demand:
- magic strings in the LAST user message: `FAULT:<kind>` or
  `FAULT:<kind>=<value>` (value: the status for `status`/`server_error`, the
  seconds for `slow` and `rate_limit`), and the aliases `FAIL_500`, `FAIL_429`,
  `FAIL_400`, `BAD_JSON` (= no_structured_output content);
- a queue: `POST /_control/faults` with one fault or `{"faults": [...]}`, each
  `{"kind", "count": 1 (null = until reset), "model": id prefix or null,
  "api": "anthropic"|"openai"|null, "status", "retry_after", "retry_after_ms",
  "sleep_s"}`; the first matching fault with calls left applies, e.g.
  `{"kind": "rate_limit", "count": 2, "model": "gpt-4o", "retry_after": 0.1}`.

Fault kinds: `rate_limit` (429 with retry-after / retry-after-ms headers),
`server_error` (500 or `status`), `overloaded` (Anthropic 529, OpenAI 503),
`status` (any `status`, e.g. 400/401/403/404/422), `slow` (sleep `sleep_s`
seconds, default 5, then answer), `malformed_json` (200 with a broken JSON
body), `invalid_shape` (200 with JSON missing required fields), `no_tool_call`
(structured request answered with plain text), `out_of_range_scores` (verdict
scores 42 and 0), `refusal` (stop_reason "refusal" / message.refusal),
`truncated` (stop_reason "max_tokens" / finish_reason "length"), `prefer_a`
(the verdict always says A wins).

Control: `GET /_control/calls` -> `{"count", "calls": [{api, path, model,
headers, body, fault}], "max_concurrent", "in_flight"}`; `POST /_control/reset`
clears calls, faults, caches and config; `POST /_control/config` sets
`latency_s` (sleep before every answer), `openai_cache_min_tokens`,
`model_aliases` ({requested: served} model ids reported back).

`with running_fake_provider() as fake:` starts it under uvicorn in a
background thread on a free local port; `fake.url` is the Anthropic base_url,
`fake.openai_url` the OpenAI one (`/v1`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

ALIASES = {
    "FAIL_500": ("server_error", None),
    "FAIL_429": ("rate_limit", "0"),
    "FAIL_400": ("status", "400"),
    "BAD_JSON": ("no_tool_call", None),
}
FAULT_KINDS = frozenset(
    {
        "rate_limit",
        "server_error",
        "overloaded",
        "status",
        "slow",
        "malformed_json",
        "invalid_shape",
        "no_tool_call",
        "out_of_range_scores",
        "refusal",
        "truncated",
        "prefer_a",
    }
)


@dataclass
class Fault:
    kind: str
    count: int | None = 1
    model: str | None = None
    api: str | None = None
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    sleep_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {sorted(FAULT_KINDS)}")

    def matches(self, api: str, model: str) -> bool:
        return (
            self.count != 0
            and (self.api is None or self.api == api)
            and (self.model is None or model.startswith(self.model))
        )


@dataclass
class FakeState:
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    in_flight: int = 0
    max_concurrent: int = 0
    latency_s: float = 0.0
    openai_cache_min_tokens: int = 1024
    model_aliases: dict[str, str] = field(default_factory=dict)
    # When set, the fake judge prefers the answer containing this text, in either position.
    judge_prefers: str | None = None
    anthropic_cached: set[str] = field(default_factory=set)
    openai_prompts: list[list[str]] = field(default_factory=list)
    counter: int = 0
    # Batch APIs (see install_batch_routes): stored batches and files, how long a batch
    # stays in progress, per-item result overrides, and how many batches were created.
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_delay_s: float = 0.0
    batch_item_faults: list[dict[str, Any]] = field(default_factory=list)
    batch_creates: int = 0

    generation: int = 0

    def reset(self) -> None:
        """Back to a fresh state. Calls still being answered (a `slow` one) belong to the
        old generation and no longer count in flight."""
        fresh = FakeState(generation=self.generation + 1)
        for name in vars(fresh):
            setattr(self, name, getattr(fresh, name))


def words(text: str) -> int:
    return len(text.split())


def text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return str(content)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def magic_fault(prompt: str) -> Fault | None:
    for alias, (kind, value) in ALIASES.items():
        if alias in prompt:
            return _fault_with_value(kind, value)
    marker = prompt.find("FAULT:")
    if marker < 0:
        return None
    rest = prompt[marker + len("FAULT:") :].split()
    token = rest[0] if rest else ""
    kind, _, value = token.partition("=")
    if kind not in FAULT_KINDS:
        return None
    return _fault_with_value(kind, value or None)


def _fault_with_value(kind: str, value: str | None) -> Fault:
    fault = Fault(kind=kind, count=None)
    if value is None:
        return fault
    if kind in ("status", "server_error"):
        fault.status = int(value)
    elif kind == "slow":
        fault.sleep_s = float(value)
    elif kind == "rate_limit":
        fault.retry_after = float(value)
    return fault


def digest(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def is_verdict_schema(schema: dict[str, Any]) -> bool:
    properties = schema.get("properties", {})
    return isinstance(properties, dict) and {"winner", "score_a", "score_b"} <= set(properties)


def fill_schema(schema: dict[str, Any], seed: bytes) -> Any:
    if schema.get("enum"):
        options = list(schema["enum"])
        return options[seed[0] % len(options)]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {
            key: fill_schema(sub, seed[i + 1 :] or seed)
            for i, (key, sub) in enumerate(schema.get("properties", {}).items())
        }
    if kind == "integer":
        low, high = int(schema.get("minimum", 0)), int(schema.get("maximum", 10))
        return low + seed[0] % (high - low + 1)
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    return "fake"


def _preferred_position(prompt: str, prefers: str | None) -> str | None:
    """Which answer ("A"/"B") of a judge prompt contains `prefers`, if exactly one does."""
    if not prefers or "[The Start of Assistant B's Answer]" not in prompt:
        return None
    section_a, _, section_b = prompt.partition("[The Start of Assistant B's Answer]")
    in_a = prefers in section_a.partition("[The Start of Assistant A's Answer]")[2]
    in_b = prefers in section_b
    if in_a == in_b:
        return None
    return "A" if in_a else "B"


def structured_object(
    schema: dict[str, Any], prompt: str, fault: Fault | None, prefers: str | None = None
) -> dict[str, Any]:
    seed = digest("structured", prompt)
    if not is_verdict_schema(schema):
        value = fill_schema(schema, seed)
        return value if isinstance(value, dict) else {"value": value}
    kind = fault.kind if fault else None
    preferred = _preferred_position(prompt, prefers) if kind is None else None
    if preferred is not None:
        # A position-independent judge: the answer containing the configured text wins.
        score_a, score_b = (8, 3) if preferred == "A" else (3, 8)
    elif kind == "prefer_a":
        score_a, score_b = 8, 4
    elif kind == "out_of_range_scores":
        score_a, score_b = 42, 0
    else:
        score_a, score_b = 1 + seed[0] % 10, 1 + seed[1] % 10
    winner = "A" if score_a > score_b else "B" if score_b > score_a else "tie"
    if kind == "prefer_a":
        winner = "A"
    return {
        "winner": winner,
        "score_a": score_a,
        "score_b": score_b,
        "reasoning": f"fake judge: A scores {score_a}, B scores {score_b}",
    }


def _error_response(api: str, fault: Fault) -> Response:
    headers: dict[str, str] = {}
    if fault.kind == "rate_limit":
        status = 429
        kind = "rate_limit_error"
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
    elif fault.kind == "overloaded":
        status = 529 if api == "anthropic" else 503
        kind = "overloaded_error"
    elif fault.kind == "server_error":
        status = fault.status or 500
        kind = "api_error"
    else:
        status = fault.status or 400
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            422: "invalid_request_error",
        }.get(status, "api_error")
    message = f"fake {fault.kind} ({status})"
    if api == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_fake_provider_app(state: FakeState | None = None) -> FastAPI:
    """The fake's FastAPI app; `app.state.fake` is its FakeState."""
    app = FastAPI(title="fake LLM provider")
    fake = state or FakeState()
    app.state.fake = fake

    def pick_fault(api: str, model: str, prompt: str) -> Fault | None:
        magic = magic_fault(prompt)
        if magic is not None:
            return magic
        for fault in fake.faults:
            if fault.matches(api, model):
                if fault.count is not None:
                    fault.count -= 1
                fake.faults = [f for f in fake.faults if f.count != 0]
                return fault
        return None

    async def handle(request: Request, api: str) -> Response:
        body = await request.json()
        model = str(body.get("model", ""))
        messages = list(body.get("messages", []))
        prompt = last_user_text(messages)
        fault = pick_fault(api, model, prompt)
        fake.calls.append(
            {
                "api": api,
                "path": request.url.path,
                "model": model,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
                "fault": asdict(fault) if fault else None,
                "ts": time.time(),
            }
        )
        fake.counter += 1
        generation = fake.generation
        fake.in_flight += 1
        fake.max_concurrent = max(fake.max_concurrent, fake.in_flight)
        try:
            if fake.latency_s > 0:
                await asyncio.sleep(fake.latency_s)
            if fault is not None and fault.kind == "slow":
                await asyncio.sleep(fault.sleep_s if fault.sleep_s is not None else 5.0)
            if fault is not None and fault.kind in (
                "rate_limit",
                "server_error",
                "overloaded",
                "status",
            ):
                return _error_response(api, fault)
            if fault is not None and fault.kind == "malformed_json":
                return Response('{"id": "broken", "content": [', media_type="application/json")
            if fault is not None and fault.kind == "invalid_shape":
                return JSONResponse({"id": f"broken-{fake.counter}", "unexpected": True})
            served = fake.model_aliases.get(model, model)
            if api == "anthropic":
                return JSONResponse(anthropic_answer(fake, body, served, prompt, fault))
            return JSONResponse(openai_answer(fake, body, served, prompt, fault))
        finally:
            if fake.generation == generation:
                fake.in_flight -= 1

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        return await handle(request, "anthropic")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await handle(request, "openai")

    install_batch_routes(app, fake)

    @app.post("/_control/faults")
    async def add_faults(request: Request) -> dict[str, Any]:
        payload = await request.json()
        items = payload.get("faults", [payload]) if isinstance(payload, dict) else payload
        added = [Fault(**item) for item in items]
        fake.faults.extend(added)
        return {"queued": [asdict(f) for f in fake.faults]}

    @app.get("/_control/calls")
    async def calls() -> dict[str, Any]:
        return {
            "count": len(fake.calls),
            "calls": fake.calls,
            "max_concurrent": fake.max_concurrent,
            "in_flight": fake.in_flight,
            "faults": [asdict(f) for f in fake.faults],
        }

    @app.post("/_control/reset")
    async def reset() -> dict[str, bool]:
        fake.reset()
        return {"reset": True}

    @app.post("/_control/config")
    async def config(request: Request) -> dict[str, Any]:
        payload = await request.json()
        for key in (
            "latency_s",
            "openai_cache_min_tokens",
            "model_aliases",
            "judge_prefers",
            "batch_delay_s",
            "batch_item_faults",
        ):
            if key in payload:
                setattr(fake, key, payload[key])
        return {
            "batch_delay_s": fake.batch_delay_s,
            "batch_item_faults": fake.batch_item_faults,
            "latency_s": fake.latency_s,
            "openai_cache_min_tokens": fake.openai_cache_min_tokens,
            "model_aliases": fake.model_aliases,
            "judge_prefers": fake.judge_prefers,
        }

    return app


def anthropic_answer(
    fake: FakeState, body: dict[str, Any], served: str, prompt: str, fault: Fault | None
) -> dict[str, Any]:
    system = body.get("system")
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])
    )
    system_words = [words(text_of([b])) for b in blocks]
    message_words = sum(words(text_of(m.get("content"))) for m in body.get("messages", []))
    total_input = sum(system_words) + message_words
    cache_write = cache_read = 0
    marked = [i for i, b in enumerate(blocks) if b.get("cache_control")]
    if marked:
        end = marked[-1] + 1
        prefix_key = hashlib.sha256(
            json.dumps([text_of([b]) for b in blocks[:end]]).encode()
        ).hexdigest()
        prefix_words = sum(system_words[:end])
        if prefix_key in fake.anthropic_cached:
            cache_read = prefix_words
        else:
            cache_write = prefix_words
            fake.anthropic_cached.add(prefix_key)
    input_tokens = total_input - cache_read - cache_write

    kind = fault.kind if fault else None
    tool_choice = body.get("tool_choice") or {}
    forced_tool = tool_choice.get("name") if tool_choice.get("type") == "tool" else None
    content: list[dict[str, Any]]
    stop_reason = "end_turn"
    if kind == "refusal":
        content, stop_reason = [], "refusal"
        output_text = ""
    elif forced_tool and kind not in ("no_tool_call", "truncated"):
        tool: dict[str, Any] = next(
            (t for t in body.get("tools", []) if t.get("name") == forced_tool), {}
        )
        obj = structured_object(tool.get("input_schema", {}), prompt, fault, fake.judge_prefers)
        tool_id = f"toolu_fake_{fake.counter}"
        content = [{"type": "tool_use", "id": tool_id, "name": forced_tool, "input": obj}]
        stop_reason = "tool_use"
        output_text = json.dumps(obj)
    else:
        output_text = f"[{served}] answer: {prompt[:60]}"
        if kind == "truncated":
            output_text = output_text[: max(1, len(output_text) // 2)]
            stop_reason = "max_tokens"
        content = [{"type": "text", "text": output_text}]
    return {
        "id": f"msg_fake_{fake.counter}",
        "type": "message",
        "role": "assistant",
        "model": served,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": words(output_text),
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        },
    }


def openai_answer(
    fake: FakeState, body: dict[str, Any], served: str, prompt: str, fault: Fault | None
) -> dict[str, Any]:
    prompt_words: list[str] = []
    for message in body.get("messages", []):
        prompt_words.extend(text_of(message.get("content")).split())
    cached = 0
    if len(prompt_words) >= fake.openai_cache_min_tokens:
        common = 0
        for earlier in fake.openai_prompts:
            n = 0
            for a, b in zip(earlier, prompt_words, strict=False):
                if a != b:
                    break
                n += 1
            common = max(common, n)
        if common >= fake.openai_cache_min_tokens:
            cached = common // 128 * 128
        fake.openai_prompts.append(prompt_words)

    kind = fault.kind if fault else None
    response_format = body.get("response_format") or {}
    schema = (
        response_format.get("json_schema", {}).get("schema")
        if response_format.get("type") == "json_schema"
        else None
    )
    refusal: str | None = None
    finish_reason = "stop"
    content: str | None
    if kind == "refusal":
        content, refusal = None, "I can't help with that."
    elif schema is not None and kind == "no_tool_call":
        content = "I think answer A is better, but I will not format it."
    elif schema is not None:
        content = json.dumps(structured_object(schema, prompt, fault, fake.judge_prefers))
        if kind == "truncated":
            content, finish_reason = content[: len(content) // 2], "length"
    else:
        content = f"[{served}] answer: {prompt[:60]}"
        if kind == "truncated":
            content, finish_reason = content[: max(1, len(content) // 2)], "length"
    completion_tokens = words(content or refusal or "")
    return {
        "id": f"chatcmpl-fake-{fake.counter}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt_words),
            "completion_tokens": completion_tokens,
            "total_tokens": len(prompt_words) + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


# --- Batch APIs: Anthropic Message Batches, OpenAI Files + Batches ---------------------------

BATCH_RESULT_OVERRIDES = frozenset({"errored", "expired", "canceled"})
ERROR_FAULT_KINDS = frozenset({"rate_limit", "server_error", "overloaded", "status"})


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _batch_override(fake: FakeState, custom_id: str, prompt: str) -> str | None:
    """The result forced on one batch item by `batch_item_faults`, consuming one use."""
    for rule in fake.batch_item_faults:
        if rule.get("count", 1) == 0:
            continue
        wanted_id, wanted_text = rule.get("custom_id_contains"), rule.get("prompt_contains")
        if wanted_id is not None and wanted_id not in custom_id:
            continue
        if wanted_text is not None and wanted_text not in prompt:
            continue
        if rule.get("count", 1) is not None:
            rule["count"] = rule.get("count", 1) - 1
        result = str(rule.get("result", "errored"))
        assert result in BATCH_RESULT_OVERRIDES, result
        return result
    return None


def _batch_item(fake: FakeState, api: str, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One item's outcome: {"type": succeeded|errored|expired|canceled, ...}."""
    messages = list(body.get("messages", []))
    prompt = last_user_text(messages)
    model = str(body.get("model", ""))
    fake.calls.append(
        {
            "api": api,
            "path": "batch",
            "model": model,
            "headers": {},
            "body": body,
            "fault": None,
            "ts": time.time(),
            "custom_id": custom_id,
        }
    )
    fake.counter += 1
    override = _batch_override(fake, custom_id, prompt)
    if override is not None:
        return {"type": override}
    fault = magic_fault(prompt)
    if fault is not None and fault.kind in ERROR_FAULT_KINDS:
        return {"type": "errored", "status": 500 if fault.kind != "status" else fault.status or 400}
    served = fake.model_aliases.get(model, model)
    if api == "anthropic":
        return {"type": "succeeded", "body": anthropic_answer(fake, body, served, prompt, fault)}
    return {"type": "succeeded", "body": openai_answer(fake, body, served, prompt, fault)}


def _finish_batch(fake: FakeState, batch: dict[str, Any], *, cancel: bool = False) -> None:
    """End a batch: answer every item (or cancel it). Runs once, when its delay has passed."""
    if batch["ended_at"] is not None:
        return
    results = {}
    for custom_id, body in batch["requests"]:
        results[custom_id] = (
            {"type": "canceled"} if cancel else _batch_item(fake, batch["api"], custom_id, body)
        )
    batch["results"] = results
    batch["ended_at"] = time.time()
    batch["canceled"] = cancel


def _due(fake: FakeState, batch: dict[str, Any]) -> None:
    if batch["ended_at"] is None and time.time() - batch["created"] >= fake.batch_delay_s:
        _finish_batch(fake, batch)


def _anthropic_counts(batch: dict[str, Any]) -> dict[str, int]:
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if batch["results"] is None:
        counts["processing"] = len(batch["requests"])
    else:
        for result in batch["results"].values():
            counts[result["type"]] += 1
    return counts


def _anthropic_batch(batch: dict[str, Any], base_url: str) -> dict[str, Any]:
    ended = batch["ended_at"]
    return {
        "id": batch["id"],
        "type": "message_batch",
        "processing_status": "ended" if ended is not None else "in_progress",
        "request_counts": _anthropic_counts(batch),
        "created_at": _iso(batch["created"]),
        "expires_at": _iso(batch["created"] + 86400),
        "ended_at": _iso(ended) if ended is not None else None,
        "cancel_initiated_at": _iso(ended) if batch["canceled"] else None,
        "archived_at": None,
        "results_url": f"{base_url}v1/messages/batches/{batch['id']}/results"
        if ended is not None
        else None,
    }


def _anthropic_result_line(custom_id: str, result: dict[str, Any]) -> dict[str, Any]:
    kind = result["type"]
    if kind == "succeeded":
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": result["body"]}}
    if kind == "errored":
        status = result.get("status", 500)
        error_type = "invalid_request_error" if status < 500 else "api_error"
        return {
            "custom_id": custom_id,
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": error_type, "message": f"fake batch item error ({status})"},
                },
            },
        }
    return {"custom_id": custom_id, "result": {"type": kind}}


def _openai_file(fake: FakeState, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
    file_id = f"file-fake-{len(fake.files) + 1}"
    fake.files[file_id] = {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "content": content,
    }
    return fake.files[file_id]


def _public_file(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "content"}


def _openai_outputs(fake: FakeState, batch: dict[str, Any]) -> None:
    """Write the output and error files of an ended OpenAI batch (once)."""
    if batch["results"] is None or batch.get("output_file_id") or batch.get("error_file_id"):
        return
    output, errors = [], []
    for n, (custom_id, result) in enumerate(batch["results"].items()):
        line: dict[str, Any] = {"id": f"batch_req_fake_{batch['id']}_{n}", "custom_id": custom_id}
        kind = result["type"]
        if kind == "succeeded":
            line.update(
                response={"status_code": 200, "request_id": f"req_{n}", "body": result["body"]},
                error=None,
            )
            output.append(line)
        elif kind == "errored":
            status = result.get("status", 500)
            body = {
                "error": {
                    "message": f"fake batch item error ({status})",
                    "type": "api_error",
                    "param": None,
                    "code": None,
                }
            }
            line.update(
                response={"status_code": status, "request_id": f"req_{n}", "body": body}, error=None
            )
            errors.append(line)
        else:
            code = "batch_expired" if kind == "expired" else "batch_cancelled"
            line.update(response=None, error={"code": code, "message": f"fake {kind} item"})
            errors.append(line)
    for name, lines in (("output_file_id", output), ("error_file_id", errors)):
        if lines:
            content = "".join(json.dumps(line) + "\n" for line in lines).encode()
            batch[name] = _openai_file(
                fake, content, f"{batch['id']}_{name}.jsonl", "batch_output"
            )["id"]


def _openai_batch(fake: FakeState, batch: dict[str, Any]) -> dict[str, Any]:
    _openai_outputs(fake, batch)
    results = batch["results"]
    if results is None:
        status, completed, failed = "in_progress", 0, 0
    else:
        kinds = [r["type"] for r in results.values()]
        completed = kinds.count("succeeded")
        failed = len(kinds) - completed
        status = (
            "cancelled" if batch["canceled"] else "expired" if "expired" in kinds else "completed"
        )
    ended = batch["ended_at"]
    return {
        "id": batch["id"],
        "object": "batch",
        "endpoint": batch["endpoint"],
        "input_file_id": batch["input_file_id"],
        "completion_window": "24h",
        "status": status,
        "created_at": int(batch["created"]),
        "in_progress_at": int(batch["created"]),
        "completed_at": int(ended) if ended is not None and status == "completed" else None,
        "expired_at": int(ended) if ended is not None and status == "expired" else None,
        "cancelled_at": int(ended) if ended is not None and status == "cancelled" else None,
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        "request_counts": {
            "total": len(batch["requests"]),
            "completed": completed,
            "failed": failed,
        },
        "metadata": batch["metadata"],
        "errors": None,
    }


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart body, name -> (filename, bytes), with the stdlib only."""
    import email.parser
    import email.policy

    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def install_batch_routes(app: FastAPI, fake: FakeState) -> None:
    """Anthropic `/v1/messages/batches` and OpenAI `/v1/files` + `/v1/batches`.

    A batch stays `in_progress` for `batch_delay_s` seconds after its creation and
    is answered when it is first looked at after that (each item as the realtime
    route would answer it; magic error strings make the item `errored`).
    `batch_item_faults` ({"result": errored|expired|canceled, "custom_id_contains",
    "prompt_contains", "count": 1 (null = always)}) force given items' results.
    `GET /_control/batches` -> {"creates": batches created, "batches": [{id, api, size}]}.
    """

    def not_found(api: str) -> Response:
        return _error_response(api, Fault(kind="status", status=404, count=None))

    @app.post("/v1/messages/batches")
    async def create_message_batch(request: Request) -> Response:
        body = await request.json()
        requests = [(str(r["custom_id"]), dict(r["params"])) for r in body.get("requests", [])]
        ids = [custom_id for custom_id, _ in requests]
        if not requests or len(set(ids)) != len(ids):
            return _error_response("anthropic", Fault(kind="status", status=400, count=None))
        fake.batch_creates += 1
        batch_id = f"msgbatch_fake_{fake.batch_creates:04d}"
        fake.batches[batch_id] = {
            "id": batch_id,
            "api": "anthropic",
            "created": time.time(),
            "requests": requests,
            "results": None,
            "ended_at": None,
            "canceled": False,
            "metadata": None,
        }
        return JSONResponse(_anthropic_batch(fake.batches[batch_id], str(request.base_url)))

    @app.get("/v1/messages/batches")
    async def list_message_batches(request: Request) -> Response:
        items = [b for b in fake.batches.values() if b["api"] == "anthropic"]
        data = [_anthropic_batch(b, str(request.base_url)) for b in reversed(items)]
        return JSONResponse(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @app.get("/v1/messages/batches/{batch_id}")
    async def retrieve_message_batch(batch_id: str, request: Request) -> Response:
        batch = fake.batches.get(batch_id)
        if batch is None or batch["api"] != "anthropic":
            return not_found("anthropic")
        _due(fake, batch)
        return JSONResponse(_anthropic_batch(batch, str(request.base_url)))

    @app.post("/v1/messages/batches/{batch_id}/cancel")
    async def cancel_message_batch(batch_id: str, request: Request) -> Response:
        batch = fake.batches.get(batch_id)
        if batch is None or batch["api"] != "anthropic":
            return not_found("anthropic")
        _finish_batch(fake, batch, cancel=True)
        return JSONResponse(_anthropic_batch(batch, str(request.base_url)))

    @app.get("/v1/messages/batches/{batch_id}/results")
    async def message_batch_results(batch_id: str) -> Response:
        batch = fake.batches.get(batch_id)
        if batch is None or batch["api"] != "anthropic":
            return not_found("anthropic")
        _due(fake, batch)
        if batch["results"] is None:
            return _error_response("anthropic", Fault(kind="status", status=404, count=None))
        lines = [_anthropic_result_line(cid, r) for cid, r in batch["results"].items()]
        return Response(
            "".join(json.dumps(line) + "\n" for line in reversed(lines)),  # any order
            media_type="application/binary",
        )

    @app.post("/v1/files")
    async def create_file(request: Request) -> Response:
        fields = _parse_multipart(request.headers.get("content-type", ""), await request.body())
        filename, content = fields.get("file", (None, b""))
        purpose = fields.get("purpose", (None, b""))[1].decode()
        return JSONResponse(
            _public_file(_openai_file(fake, content, filename or "upload", purpose))
        )

    @app.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str) -> Response:
        record = fake.files.get(file_id)
        return JSONResponse(_public_file(record)) if record else not_found("openai")

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        record = fake.files.get(file_id)
        if record is None:
            return not_found("openai")
        return Response(record["content"], media_type="application/octet-stream")

    @app.post("/v1/batches")
    async def create_batch(request: Request) -> Response:
        body = await request.json()
        record = fake.files.get(str(body.get("input_file_id")))
        if record is None or body.get("completion_window") != "24h":
            return _error_response("openai", Fault(kind="status", status=400, count=None))
        requests = []
        for line in record["content"].decode().splitlines():
            if line.strip():
                item = json.loads(line)
                if item.get("url") != body.get("endpoint"):
                    return _error_response("openai", Fault(kind="status", status=400, count=None))
                requests.append((str(item["custom_id"]), dict(item["body"])))
        fake.batch_creates += 1
        batch_id = f"batch_fake_{fake.batch_creates:04d}"
        fake.batches[batch_id] = {
            "id": batch_id,
            "api": "openai",
            "created": time.time(),
            "requests": requests,
            "results": None,
            "ended_at": None,
            "canceled": False,
            "metadata": body.get("metadata"),
            "endpoint": body.get("endpoint"),
            "input_file_id": record["id"],
        }
        return JSONResponse(_openai_batch(fake, fake.batches[batch_id]))

    @app.get("/v1/batches")
    async def list_batches() -> Response:
        items = [b for b in fake.batches.values() if b["api"] == "openai"]
        data = [_openai_batch(fake, b) for b in reversed(items)]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @app.get("/v1/batches/{batch_id}")
    async def retrieve_batch(batch_id: str) -> Response:
        batch = fake.batches.get(batch_id)
        if batch is None or batch["api"] != "openai":
            return not_found("openai")
        _due(fake, batch)
        return JSONResponse(_openai_batch(fake, batch))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str) -> Response:
        batch = fake.batches.get(batch_id)
        if batch is None or batch["api"] != "openai":
            return not_found("openai")
        _finish_batch(fake, batch, cancel=True)
        return JSONResponse(_openai_batch(fake, batch))

    @app.get("/_control/batches")
    async def batch_control() -> dict[str, Any]:
        return {
            "creates": fake.batch_creates,
            "batches": [
                {
                    "id": b["id"],
                    "api": b["api"],
                    "size": len(b["requests"]),
                    "ended": b["ended_at"] is not None,
                }
                for b in fake.batches.values()
            ],
        }


@dataclass
class FakeProviderServer:
    """A running fake: its URLs and a client for its control API."""

    url: str
    app: FastAPI

    @property
    def anthropic_url(self) -> str:
        return self.url

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def state(self) -> FakeState:
        state: FakeState = self.app.state.fake
        return state

    def _control(self, method: str, path: str, payload: Any = None) -> Any:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            response = client.request(method, path, json=payload)
            response.raise_for_status()
            return response.json()

    def add_faults(self, *faults: dict[str, Any]) -> None:
        self._control("POST", "/_control/faults", {"faults": list(faults)})

    def calls(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "/_control/calls")
        return result

    def reset(self) -> None:
        self._control("POST", "/_control/reset", {})

    def configure(self, **config: Any) -> None:
        self._control("POST", "/_control/config", config)

    def batches(self) -> dict[str, Any]:
        """Batches created so far (`creates`) and each one's id, api and size."""
        result: dict[str, Any] = self._control("GET", "/_control/batches")
        return result


@contextmanager
def running_fake_provider(host: str = "127.0.0.1") -> Iterator[FakeProviderServer]:
    """The fake under uvicorn in a background thread on a free port of `host`."""
    app = create_fake_provider_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake provider server did not start")
        time.sleep(0.01)
    try:
        yield FakeProviderServer(url=f"http://{host}:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main() -> None:
    """`python -m shadoweval.testing.fake_provider --port 0 --latency-s 0.3`: serve until killed,
    printing the base URL on the first line of stdout."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--batch-delay-s", type=float, default=0.0)
    args = parser.parse_args()
    app = create_fake_provider_app()
    app.state.fake.latency_s = args.latency_s
    app.state.fake.batch_delay_s = args.batch_delay_s
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(f"http://{args.host}:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
