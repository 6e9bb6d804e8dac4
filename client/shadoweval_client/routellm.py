"""RouteLLM glue: route a request with a RouteLLM `Controller` and log the decision.

RouteLLM is typed structurally (Protocols): it is not a dependency."""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shadoweval_client._wire import DecisionLike, _describe, _log, _now_rfc3339

# --- RouteLLM ------------------------------------------------------------------------------

SCORE_SEMANTICS = "p_strong_needed"


class StrongWinRateRouter(Protocol):
    """A RouteLLM router (`routellm.routers.routers.Router`), as far as this module uses it."""

    def calculate_strong_win_rate(self, prompt: str) -> float: ...


class RouteLLMController(Protocol):
    """A RouteLLM `Controller`: loaded routers by name (mf, bert, causal_llm, sw_ranking…).

    The controller's `model_pair` (strong, weak) is used when no models are passed.
    """

    @property
    def routers(self) -> Mapping[str, StrongWinRateRouter]: ...


class SupportsLog(Protocol):
    """`DecisionLogger` or `AsyncDecisionLogger`, or anything with the same `log()`."""

    def log(self, decision: DecisionLike) -> bool: ...


def parse_router_model(model: str) -> tuple[str, float]:
    """`"router-mf-0.11593"` → `("mf", 0.11593)`, as RouteLLM's Controller reads model names."""
    parts = model.split("-", 2)
    if len(parts) != 3 or parts[0] != "router":
        raise ValueError(f"{model!r} is not of the form router-<router>-<threshold>")
    return parts[1], _check_threshold(float(parts[2]))


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
    return value


def _last_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """What RouteLLM scores: the content of the last message (its routers saw first turns)."""
    if not messages:
        raise ValueError("prompt_messages is empty")
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: score their text, as RouteLLM cannot
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, Mapping) and block.get("type") == "text"
        )
    return "" if content is None else str(content)


@dataclass(eq=False)
class RoutedDecision:
    """One RouteLLM routing decision and the decision-log item describing it.

    `ts` was taken when routing happened. Call `log()` once the answer is in, so the item
    carries the response the judge compares against; logging is once per decision (the
    server keeps the first write of a request_id), so later calls do nothing.
    """

    model: str
    tier: str
    strong: bool
    score: float | None
    threshold: float
    request_id: str
    decision: dict[str, Any]
    logger: SupportsLog = field(repr=False)
    logged: bool = False

    def log(
        self,
        *,
        response_text: str | None = None,
        finish_reason: str | None = None,
        **fields: Any,
    ) -> bool:
        """Log the decision with what happened after routing (usage, cost_usd, latency_ms,
        served_model…). Never raises; False when already logged or not accepted."""
        if self.logged:
            return False
        self.logged = True
        try:
            item = dict(self.decision)
            if response_text is not None or finish_reason is not None:
                item["response"] = {"text": response_text, "finish_reason": finish_reason}
            item.update(fields)
            return self.logger.log(item)
        except Exception as exc:
            with contextlib.suppress(Exception):
                _log.warning("shadoweval decision log: RouteLLM decision not logged: %s", exc)
            return False


def _routellm_decide(
    controller: RouteLLMController,
    router_name: str,
    threshold: float,
    prompt_messages: Sequence[Mapping[str, Any]],
    strong_model: str | None,
    weak_model: str | None,
    logger: SupportsLog,
    *,
    name: str | None,
    router_version: str | None,
    request_id: str | None,
    segment: Mapping[str, str] | None,
    features: Mapping[str, float | int | str | bool] | None,
    include_request: bool,
    fallback: Literal["strong", "weak"] | None,
    strong_tier: str,
    weak_tier: str,
    fields: Mapping[str, Any],
) -> RoutedDecision:
    threshold = _check_threshold(threshold)
    strong_model, weak_model = strong_and_weak_models(controller, strong_model, weak_model)
    router = controller.routers.get(router_name)
    if router is None:
        raise ValueError(
            f"router {router_name!r} is not loaded; loaded: {sorted(controller.routers)}"
        )
    prompt = _last_prompt(prompt_messages)
    ts = _now_rfc3339()
    extra: dict[str, Any] = {"routellm_router": router_name}
    started = time.perf_counter()
    try:
        # Scored once: RouteLLM's route() would score again and return neither number.
        raw: float | None = float(router.calculate_strong_win_rate(prompt))
    except Exception as exc:
        if fallback is None:
            raise
        raw = None
        extra["router_error"] = _describe(exc)[:200]
    router_latency_ms = (time.perf_counter() - started) * 1000
    # RouteLLM's rule, score ≥ threshold; a NaN routes weak, as it does there.
    strong = fallback == "strong" if raw is None else raw >= threshold
    score: float | None = None
    if raw is not None and math.isfinite(raw):
        # Float error can put a 1 − p a hair below 0; the log field is bounded to [0, 1].
        score = min(1.0, max(0.0, raw))
        if abs(score - raw) > 1e-6:
            extra["router_score_raw"] = raw
    model = strong_model if strong else weak_model
    tier = strong_tier if strong else weak_tier
    rid = request_id or uuid.uuid4().hex
    decision: dict[str, Any] = {
        "request_id": rid,
        "router": name or f"routellm-{router_name}",
        "ts": ts,
        "tier": tier,
        "chosen_model": model,
        "router_score": score,
        "score_semantics": SCORE_SEMANTICS,
        "threshold": threshold,
        "candidates": [
            {"model": strong_model, "tier": strong_tier},
            {"model": weak_model, "tier": weak_tier},
        ],
        "router_latency_ms": router_latency_ms,
        "fallback": raw is None,
        **extra,
    }
    if router_version is not None:
        decision["router_version"] = router_version
    if segment:
        decision["segment"] = dict(segment)
    if features:
        decision["features"] = dict(features)
    if include_request:
        decision["request"] = {"messages": [dict(message) for message in prompt_messages]}
    decision.update(fields)
    return RoutedDecision(
        model=model,
        tier=tier,
        strong=strong,
        score=score,
        threshold=threshold,
        request_id=rid,
        decision=decision,
        logger=logger,
    )


def strong_and_weak_models(
    controller: RouteLLMController, strong_model: str | None, weak_model: str | None
) -> tuple[str, str]:
    """The explicit models, else the controller's `model_pair`."""
    pair = getattr(controller, "model_pair", None)
    strong = strong_model or getattr(pair, "strong", None)
    weak = weak_model or getattr(pair, "weak", None)
    if not isinstance(strong, str) or not isinstance(weak, str):
        raise ValueError("pass strong_model and weak_model (the controller has no model_pair)")
    return strong, weak


def route_and_log(
    controller: RouteLLMController,
    router_name: str,
    threshold: float,
    prompt_messages: Sequence[Mapping[str, Any]],
    strong_model: str | None,
    weak_model: str | None,
    logger: SupportsLog,
    *,
    name: str | None = None,
    router_version: str | None = None,
    request_id: str | None = None,
    segment: Mapping[str, str] | None = None,
    features: Mapping[str, float | int | str | bool] | None = None,
    include_request: bool = True,
    fallback: Literal["strong", "weak"] | None = None,
    strong_tier: str = "strong",
    weak_tier: str = "cheap",
    **fields: Any,
) -> RoutedDecision:
    """Route with a RouteLLM controller's router and log the decision now.

    Scores the last message once with `calculate_strong_win_rate`, routes strong when the
    score ≥ `threshold` (RouteLLM's rule) and logs router_score, threshold,
    score_semantics="p_strong_needed", the router name and the chosen model. `name` is the
    decision log's `router` (default `routellm-<router_name>`); `strong_model` /
    `weak_model` default to the controller's `model_pair`.

    Logging now means the item has no response, so shadoweval can watch the scores but
    cannot judge this request; to log after the answer, use `RouteLLMLogger.route()`.

    Raises ValueError for a bad threshold, an unloaded router or empty messages, and
    re-raises a scoring error unless `fallback` names the tier to route to instead (then
    logged with fallback=true and no score). Logging itself never raises.
    """
    routed = _routellm_decide(
        controller,
        router_name,
        threshold,
        prompt_messages,
        strong_model,
        weak_model,
        logger,
        name=name,
        router_version=router_version,
        request_id=request_id,
        segment=segment,
        features=features,
        include_request=include_request,
        fallback=fallback,
        strong_tier=strong_tier,
        weak_tier=weak_tier,
        fields=fields,
    )
    routed.log()
    return routed


class RouteLLMLogger:
    """A RouteLLM controller, one of its routers and a threshold, bound to a logger.

        controller = Controller(routers=["mf"], strong_model="gpt-4-1106-preview",
                                weak_model="mixtral-8x7b-instruct-v0.1")
        routellm = RouteLLMLogger(controller, logger, router_name="mf", threshold=0.11593,
                                  name="support-router")
        routed = routellm.route(messages)                 # score computed once, ts now
        answer = call_model(routed.model, messages)
        routed.log(response_text=answer.text, usage={...}, latency_ms=...)

    Misconfiguration (unknown router, threshold outside [0, 1], no model pair) raises
    ValueError here, at startup.
    """

    def __init__(
        self,
        controller: RouteLLMController,
        logger: SupportsLog,
        *,
        router_name: str,
        threshold: float,
        strong_model: str | None = None,
        weak_model: str | None = None,
        name: str | None = None,
        router_version: str | None = None,
        include_request: bool = True,
        fallback: Literal["strong", "weak"] | None = None,
        strong_tier: str = "strong",
        weak_tier: str = "cheap",
    ) -> None:
        if router_name not in controller.routers:
            raise ValueError(
                f"router {router_name!r} is not loaded; loaded: {sorted(controller.routers)}"
            )
        self.controller = controller
        self.logger = logger
        self.router_name = router_name
        self.threshold = _check_threshold(threshold)
        self.strong_model, self.weak_model = strong_and_weak_models(
            controller, strong_model, weak_model
        )
        self.name = name or f"routellm-{router_name}"
        self.router_version = router_version
        self.include_request = include_request
        self.fallback = fallback
        self.strong_tier = strong_tier
        self.weak_tier = weak_tier

    def route(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        request_id: str | None = None,
        segment: Mapping[str, str] | None = None,
        features: Mapping[str, float | int | str | bool] | None = None,
        **fields: Any,
    ) -> RoutedDecision:
        """Decide now; log later with `RoutedDecision.log(response_text=…)`."""
        return _routellm_decide(
            self.controller,
            self.router_name,
            self.threshold,
            messages,
            self.strong_model,
            self.weak_model,
            self.logger,
            name=self.name,
            router_version=self.router_version,
            request_id=request_id,
            segment=segment,
            features=features,
            include_request=self.include_request,
            fallback=self.fallback,
            strong_tier=self.strong_tier,
            weak_tier=self.weak_tier,
            fields=fields,
        )

    def route_and_log(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        request_id: str | None = None,
        segment: Mapping[str, str] | None = None,
        features: Mapping[str, float | int | str | bool] | None = None,
        **fields: Any,
    ) -> RoutedDecision:
        """Decide and log now, without the response (see `route_and_log`)."""
        routed = self.route(
            messages, request_id=request_id, segment=segment, features=features, **fields
        )
        routed.log()
        return routed
