"""The demo's simulated provider: answers and judges without a network.

For `shadoweval demo` ONLY (`settings.use_simulated_provider=True`). Every
Completion has `simulated=True`, `provider="simulated"` and text starting with
`[simulated <model>]`, so nothing it produces can pass for a real answer.
Output is a deterministic function of the model and the messages (sha256).

The hidden quality tag
----------------------
The demo traffic generator puts one marker in the LAST user message of a
request (build it with `sim_tag`; remove it with `strip_sim_tags` before
showing a prompt or sending it anywhere real)::

    <!--shadoweval-sim difficulty=0.62 quality.claude-haiku-4-5=0.41 quality.gpt-5=0.83-->

- `quality.<model>=q` (0..1): the quality of `<model>`'s answer. The key may
  also be a prefix of the model id (`quality.claude-haiku=0.4`); the longest
  matching one wins.
- `quality=q`: the quality of any model not listed.
- `difficulty=d` (0..1, default 0.5): used when no quality applies; the
  quality is then derived from a built-in strength per model family
  (opus / gpt-5 / o-series strong, sonnet / gpt-4.1 / gpt-4o middle,
  haiku / mini / nano weaker) lowered by the difficulty.
A small deterministic jitter (within +-0.03) is added to every quality.

Answers
-------
An answer ends with a marker the simulated judge reads back::

    <!--shadoweval-sim-answer model=claude-haiku-4-5 quality=0.412-->

`simulate_answer_text(model, messages)` returns exactly the text the provider
would answer, so the traffic generator can log the routed answer consistently.

Judging
-------
When the request asks for an OutputSchema named `verdict`, the provider acts as
a pairwise judge and returns `structured = {"winner": "A"|"B"|"tie", "score_a":
int 1..10, "score_b": int 1..10, "reasoning": str}`. Answer A is the FIRST
answer marker that appears in the request's messages (in message order), answer
B the second. Each score is `1 + round(9 * quality)`; the winner is the one with
the higher score, `tie` when the scores are equal, so both orders of a pair
give consistent verdicts. An answer without a marker (e.g. a real one) gets a
quality from the hash of the request. Any other OutputSchema gets a minimal
object filled from its JSON schema.

Position bias (optional; off unless the request's tag asks for it): a tag field
`judge.position_bias=b` (0..1) makes the judge, in a share b of its calls,
prefer answer A whatever the qualities (its scores then agree with that
verdict). Whether a call is biased is a deterministic hash of the judge request,
so the two orders of one pair are biased independently, and because the pipeline
judges both orders the bias shows as inconsistent pairs, as an LLM judge's does.
The judge finds the field in the conversation it is shown (the tagged user
message), so scenario generators set it per request: `sim_tag(...,
judge_position_bias=b)` (`shadoweval bench scenario` sets b = 1 on a tenth of its
requests, a judge biased on those items in both orders, so it knows every label).

Tokens are about 4 characters each; costs come from the pricing table (an
unknown model raises `unknown_model`, as on the real providers).
`cache_system=True` reports a cache write the first time this instance sees a
system prompt and cache reads afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from shadoweval.providers.base import Completion, OutputSchema, content_text
from shadoweval.providers.pricing import PricingTable

TAG_RE = re.compile(r"<!--shadoweval-sim\s+([^>]*?)\s*-->")
ANSWER_RE = re.compile(
    r"<!--shadoweval-sim-answer\s+model=(?P<model>\S+)\s+quality=(?P<quality>[0-9.]+)\s*-->"
)
VERDICT_SCHEMA_NAME = "verdict"
POSITION_BIAS_FIELD = "judge.position_bias"

# Strength by model family, checked in order (first substring that matches).
_STRENGTH: tuple[tuple[str, float], ...] = (
    ("nano", 0.45),
    ("mini", 0.6),
    ("haiku", 0.6),
    ("opus", 0.92),
    ("fable", 0.92),
    ("mythos", 0.92),
    ("gpt-5", 0.88),
    ("o3", 0.88),
    ("o1", 0.85),
    ("sonnet", 0.85),
    ("gpt-4.1", 0.75),
    ("gpt-4o", 0.72),
)
_DEFAULT_STRENGTH = 0.7

_WORDS = tuple(
    " ".join(
        (
            "the answer considers the question carefully and explains each step with examples",
            "context trade-offs caveats and a short summary so that the reader can act on it",
            "first second finally therefore because however in practice for instance overall",
        )
    ).split(" ")
)


def sim_tag(
    *,
    difficulty: float | None = None,
    quality: float | None = None,
    qualities: Mapping[str, float] | None = None,
    judge_position_bias: float | None = None,
) -> str:
    """The hidden marker the demo traffic generator appends to the last user message."""
    fields: list[str] = []
    if judge_position_bias is not None:
        if not 0.0 <= judge_position_bias <= 1.0:
            raise ValueError(f"judge_position_bias must lie in [0, 1], got {judge_position_bias}")
        fields.append(f"{POSITION_BIAS_FIELD}={judge_position_bias:.3f}")
    if difficulty is not None:
        fields.append(f"difficulty={difficulty:.3f}")
    if quality is not None:
        fields.append(f"quality={quality:.3f}")
    for model, value in (qualities or {}).items():
        if not model or any(c.isspace() or c in "=>" for c in model):
            raise ValueError(f"model id not usable in a sim tag: {model!r}")
        fields.append(f"quality.{model}={value:.3f}")
    return f"<!--shadoweval-sim {' '.join(fields)}-->"


def strip_sim_tags(text: str) -> str:
    """`text` without the hidden request markers."""
    return TAG_RE.sub("", text).strip()


def read_answer_quality(text: str) -> float | None:
    """The quality the simulated provider wrote into one of its answers, if any."""
    match = ANSWER_RE.search(text)
    return float(match.group("quality")) if match else None


def _digest(*parts: Any) -> bytes:
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).digest()


def _unit(digest: bytes, index: int = 0) -> float:
    """A number in [0, 1) from 4 bytes of a digest."""
    return int.from_bytes(digest[4 * index : 4 * index + 4], "big") / 2**32


def _tokens(text: str) -> int:
    return (len(text) + 3) // 4 if text else 0


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _parse_tag(text: str) -> dict[str, float]:
    match = TAG_RE.search(text)
    fields: dict[str, float] = {}
    if match is None:
        return fields
    for item in match.group(1).split():
        key, sep, value = item.partition("=")
        if not sep:
            continue
        try:
            fields[key] = float(value)
        except ValueError:
            continue
    return fields


def _strength(model: str) -> float:
    lowered = model.lower()
    for needle, strength in _STRENGTH:
        if needle in lowered:
            return strength
    return _DEFAULT_STRENGTH


def answer_quality(model: str, messages: list[dict[str, Any]]) -> float:
    """The quality the simulated `model` answers `messages` with (0..1, 3 decimals)."""
    tag = _parse_tag(_last_user_text(messages))
    base: float | None = tag.get(f"quality.{model}")
    if base is None:
        prefixes = [
            k for k in tag if k.startswith("quality.") and model.startswith(k[len("quality.") :])
        ]
        if prefixes:
            base = tag[max(prefixes, key=len)]
    if base is None:
        base = tag.get("quality")
    if base is None:
        difficulty = _clamp(tag.get("difficulty", 0.5))
        base = _strength(model) * (1.0 - 0.45 * difficulty)
    jitter = (_unit(_digest("quality", model, messages)) - 0.5) * 0.06
    return round(_clamp(base + jitter), 3)


def simulate_answer_text(model: str, messages: list[dict[str, Any]], max_tokens: int = 1024) -> str:
    """Exactly the text `SimulatedProvider.complete` answers (without a schema)."""
    text, _quality, _truncated = _answer(model, messages, max_tokens)
    return text


def _answer(model: str, messages: list[dict[str, Any]], max_tokens: int) -> tuple[str, float, bool]:
    quality = answer_quality(model, messages)
    digest = _digest("answer", model, messages)
    question = " ".join(strip_sim_tags(_last_user_text(messages)).split())
    excerpt = question[:80] + ("…" if len(question) > 80 else "")
    n_words = 30 + int(170 * quality) + int(60 * _unit(digest, 1))
    # Rotate through the digest bytes with an offset so long answers do not repeat every 32 words.
    # (divmod over local sizes: scenario generators build tens of thousands of these.)
    size, vocabulary = len(digest), len(_WORDS)
    words = [
        _WORDS[(digest[rest] + turn) % vocabulary]
        for turn, rest in (divmod(i, size) for i in range(n_words))
    ]
    marker = f"<!--shadoweval-sim-answer model={model} quality={quality:.3f}-->"
    head = f"[simulated {model}] On “{excerpt}”:"
    budget_words = max(1, (max_tokens * 4 - len(head) - len(marker)) // 7)
    truncated = n_words > budget_words
    body = " ".join(words[:budget_words])
    return f"{head} {body}.\n{marker}", quality, truncated


def _fill_schema(schema: Mapping[str, Any], digest: bytes, depth: int = 0) -> Any:
    """A minimal value that satisfies a simple JSON schema."""
    if schema.get("enum"):
        options = list(schema["enum"])
        return options[digest[depth % len(digest)] % len(options)]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties: Mapping[str, Any] = schema.get("properties", {})
        return {
            key: _fill_schema(sub, digest, depth + i + 1)
            for i, (key, sub) in enumerate(properties.items())
        }
    if kind == "array":
        return []
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0.0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "simulated"


def _score(quality: float) -> int:
    return 1 + round(9 * _clamp(quality))


def simulated_verdict(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict the simulated judge gives for a pairwise judge request."""
    text = "\n".join(content_text(m.get("content")) for m in messages)
    found = [float(m.group("quality")) for m in ANSWER_RE.finditer(text)]
    digest = _digest("verdict", messages)
    quality_a = found[0] if len(found) > 0 else round(0.3 + 0.5 * _unit(digest, 0), 3)
    quality_b = found[1] if len(found) > 1 else round(0.3 + 0.5 * _unit(digest, 1), 3)
    score_a, score_b = _score(quality_a), _score(quality_b)
    winner = "A" if score_a > score_b else "B" if score_b > score_a else "tie"
    bias = _clamp(_parse_tag(text).get(POSITION_BIAS_FIELD, 0.0))
    if bias > 0.0 and _unit(_digest("position", messages), 2) < bias:
        # A position-biased call: A wins, and the scores say so too (a judge that
        # prefers the first answer rates it higher, it does not contradict itself).
        winner = "A"
        score_a, score_b = max(score_a, score_b), min(score_a, score_b)
        if score_a == score_b:
            if score_a < 10:
                score_a += 1
            else:
                score_b -= 1
    return {
        "winner": winner,
        "score_a": score_a,
        "score_b": score_b,
        "reasoning": (
            f"[simulated judge] Answer A reads as quality {quality_a:.2f} (score {score_a}), "
            f"answer B as {quality_b:.2f} (score {score_b})."
        ),
    }


class SimulatedProvider:
    """A deterministic stand-in for every model; see the module docstring."""

    def __init__(
        self,
        *,
        pricing: PricingTable,
        name: str = "simulated",
        default_max_tokens: int = 1024,
        sleep_scale: float = 0.0,
    ) -> None:
        """`sleep_scale` > 0 really sleeps `latency_ms * sleep_scale` (for a lively demo)."""
        self.name = name
        self._pricing = pricing
        self._default_max_tokens = default_max_tokens
        self._sleep_scale = sleep_scale
        self._cached_systems: set[bytes] = set()

    async def aclose(self) -> None:
        return None

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
        price = self._pricing.price_for(model, provider=self.name)
        params = params or {}
        max_tokens = int(
            params.get("max_tokens")
            or params.get("max_completion_tokens")
            or self._default_max_tokens
        )
        structured: dict[str, Any] | None = None
        raw: dict[str, Any] = {"simulated": True}
        finish_reason = "stop"
        if output_schema is not None:
            if output_schema.name == VERDICT_SCHEMA_NAME:
                structured = simulated_verdict(messages)
            else:
                filled = _fill_schema(output_schema.schema, _digest("schema", model, messages))
                structured = filled if isinstance(filled, dict) else {"value": filled}
            text = f"[simulated {model}] {json.dumps(structured, sort_keys=True)}"
        else:
            text, quality, truncated = _answer(model, messages, max_tokens)
            raw["quality"] = quality
            if truncated:
                finish_reason = "length"

        system_text = content_text(system) if system else ""
        message_text = "\n".join(content_text(m.get("content")) for m in messages)
        system_tokens = _tokens(system_text)
        input_tokens = _tokens(message_text) + system_tokens + 3 * len(messages)
        cache_read = cache_write = 0
        if cache_system and system_tokens:
            key = _digest("system", system_text)
            if key in self._cached_systems:
                cache_read = system_tokens
            else:
                cache_write = system_tokens
                self._cached_systems.add(key)
            input_tokens -= system_tokens
        output_tokens = _tokens(text)
        if finish_reason == "length":
            output_tokens = min(output_tokens, max_tokens)
        latency_ms = round(180.0 + 9.0 * output_tokens + 0.05 * input_tokens, 1)
        if self._sleep_scale > 0:
            await asyncio.sleep(latency_ms / 1000.0 * self._sleep_scale)
        return Completion(
            text=text,
            served_model=model,
            provider=self.name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cost_usd=price.cost_usd(input_tokens, output_tokens, cache_read, cache_write),
            latency_ms=latency_ms,
            finish_reason=finish_reason,
            structured=structured,
            simulated=True,
            raw=raw,
        )
