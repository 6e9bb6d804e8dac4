"""RouteLLM glue: route a request with a RouteLLM `Controller` and log the decision.

RouteLLM is typed structurally (Protocols): it is not a dependency."""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import math
import time
import uuid
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
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
    strong_model, weak_model = _model_pair(controller, strong_model, weak_model)
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


def _model_pair(
    controller: RouteLLMController, strong_model: str | None, weak_model: str | None
) -> tuple[str, str]:
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
        self.strong_model, self.weak_model = _model_pair(controller, strong_model, weak_model)
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


# --- wrapping the controller's own call ----------------------------------------------------


@dataclass
class _Routing:
    """What RouteLLM's router did inside one wrapped call (filled by `_ScoringRouter`)."""

    router_name: str
    request_id: str | None = None
    segment: dict[str, str] | None = None
    features: dict[str, float | int | str | bool] | None = None
    score: float | None = None
    threshold: float | None = None
    model: str | None = None
    strong: bool | None = None
    latency_ms: float | None = None


@dataclass
class _Call:
    """The answer of one wrapped controller call, set by the caller of `_logged_call`."""

    response: Any = None


_ROUTING: contextvars.ContextVar[_Routing | None] = contextvars.ContextVar(
    "shadoweval_routellm_routing", default=None
)


class _ScoringRouter:
    """Stands in for a router in `controller.routers` and records the score it routes on.

    RouteLLM's Controller routes with `router.route(prompt, threshold, model_pair)`, which
    scores once and picks strong when score ≥ threshold (`Router.route`). This does exactly
    that with the wrapped router's own score and notes score, threshold and model for the
    wrapped call running in this context; outside one it only routes, so the controller's
    other uses (`controller.route`, evaluations) behave as before.
    """

    def __init__(self, inner: StrongWinRateRouter) -> None:
        self.inner = inner

    def calculate_strong_win_rate(self, prompt: str) -> float:
        return self.inner.calculate_strong_win_rate(prompt)

    def route(self, prompt: str, threshold: float, routed_pair: Any) -> str:
        started = time.perf_counter()
        score = float(self.inner.calculate_strong_win_rate(prompt))
        strong = score >= threshold
        model: str = routed_pair.strong if strong else routed_pair.weak
        routing = _ROUTING.get()
        if routing is not None:
            routing.score = score
            routing.threshold = float(threshold)
            routing.model = model
            routing.strong = strong
            routing.latency_ms = (time.perf_counter() - started) * 1000
        return model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RouteLLMCompletion(Protocol):
    """A RouteLLM `Controller` with its OpenAI-style call (`completion` / `acompletion`)."""

    @property
    def routers(self) -> Mapping[str, StrongWinRateRouter]: ...

    def completion(self, **kwargs: Any) -> Any: ...

    async def acompletion(self, **kwargs: Any) -> Any: ...


def served_model_name(called: str, served: str | None) -> str:
    """The model a provider reports, in the form the router called it, so the two compare.

    LiteLLM is called with `provider/model` (`openai/gpt-4o-mini`) but the answer reports
    the provider's own id (`gpt-4o-mini`, or a snapshot `gpt-4o-mini-2024-07-18`); the
    provider prefix of the called name is put back on a served name that has none.
    """
    if not served:
        return called
    if "/" in called and "/" not in served:
        return f"{called.split('/', 1)[0]}/{served}"
    return served


def _attr(obj: Any, name: str) -> Any:
    """A field of a LiteLLM/OpenAI response object or of its dict form."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _response_cost(response: Any) -> float | None:
    """What LiteLLM says the call cost: its own `response_cost`, else `completion_cost()`;
    None when it cannot price the model (a custom or self-hosted one)."""
    hidden = getattr(response, "_hidden_params", None)
    cost = hidden.get("response_cost") if isinstance(hidden, Mapping) else None
    if cost is None:
        try:
            # RouteLLM's own dependency, imported by name: the client does not depend on it.
            litellm = importlib.import_module("litellm")
            cost = litellm.completion_cost(completion_response=response)
        except Exception:
            cost = None
    try:
        value = float(cost) if cost is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _answer_fields(response: Any, called: str) -> dict[str, Any]:
    """response, usage, served_model and cost_usd of a chat completion; {} for a stream."""
    choices = _attr(response, "choices")
    if not isinstance(choices, Sequence) or not choices:
        return {}  # a stream, or no answer: the decision is logged without one
    first = choices[0]
    message = _attr(first, "message")
    text = _attr(message, "content") if message is not None else None
    fields: dict[str, Any] = {
        "response": {
            "text": text if isinstance(text, str) else None,
            "finish_reason": _attr(first, "finish_reason"),
        },
        "served_model": served_model_name(called, _attr(response, "model")),
    }
    usage = _attr(response, "usage")
    if usage is not None:
        tokens = {
            "input_tokens": _attr(usage, "prompt_tokens"),
            "output_tokens": _attr(usage, "completion_tokens"),
        }
        fields["usage"] = {k: v for k, v in tokens.items() if isinstance(v, int) and v >= 0}
    cost = _response_cost(response)
    if cost is not None:
        fields["cost_usd"] = cost
    return fields


class _Completions:
    def __init__(self, owner: LoggingController) -> None:
        self.create = owner.completion
        self.acreate = owner.acompletion


class LoggingController:
    """A RouteLLM `Controller` whose own call logs each request's decision, exactly once.

        controller = Controller(routers=["mf"], strong_model="openai/gpt-4o",
                                weak_model="openai/gpt-4o-mini", api_base=..., api_key=...)
        client = LoggingController(controller, logger, name="support-router")
        response = client.chat.completions.create(model="router-mf-0.11593", messages=msgs)

    `chat.completions.create` / `completion` (and `acreate` / `acompletion`) take what the
    controller takes (`model="router-<router>-<threshold>"`, or `router=` and `threshold=`)
    and return its answer unchanged. RouteLLM itself parses the model name, routes and calls
    LiteLLM with its `api_base` / `api_key`; the decision logged afterwards carries the score
    RouteLLM routed on (the router scores once), the model RouteLLM called as
    `chosen_model`, the answer's `served_model` in the same form (`served_model_name`),
    usage, latency and LiteLLM's cost when it can price the model. A call that fails after
    routing is logged without an answer, then the error is raised; a call RouteLLM refuses
    before routing (bad model name, unknown router) logs nothing.

    Wrapping replaces each router in `controller.routers` by a recording stand-in that
    routes by the same rule (score ≥ threshold → strong); every other attribute is the
    controller's.
    """

    def __init__(
        self,
        controller: RouteLLMCompletion,
        logger: SupportsLog,
        *,
        name: str | None = None,
        router_version: str | None = None,
        include_request: bool = True,
        strong_tier: str = "strong",
        weak_tier: str = "cheap",
    ) -> None:
        routers = controller.routers
        if not isinstance(routers, MutableMapping):
            raise ValueError("controller.routers must be a mutable mapping (RouteLLM's dict)")
        for router_name, router in list(routers.items()):
            if not isinstance(router, _ScoringRouter):
                routers[router_name] = _ScoringRouter(router)
        self.controller = controller
        self.logger = logger
        self.name = name
        self.router_version = router_version
        self.include_request = include_request
        self.strong_tier = strong_tier
        self.weak_tier = weak_tier
        self.chat = SimpleNamespace(completions=_Completions(self))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.controller, name)

    def completion(
        self,
        *,
        request_id: str | None = None,
        segment: Mapping[str, str] | None = None,
        features: Mapping[str, float | int | str | bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The controller's `completion(**kwargs)`, with the decision logged once.

        `request_id` (default: the answer's id), `segment` and `features` go to the log only.
        """
        with self._logged_call(kwargs, request_id, segment, features) as call:
            call.response = self.controller.completion(**kwargs)
        return call.response

    async def acompletion(
        self,
        *,
        request_id: str | None = None,
        segment: Mapping[str, str] | None = None,
        features: Mapping[str, float | int | str | bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The controller's `acompletion(**kwargs)`, with the decision logged once.

        `request_id` (default: the answer's id), `segment` and `features` go to the log only.
        """
        with self._logged_call(kwargs, request_id, segment, features) as call:
            call.response = await self.controller.acompletion(**kwargs)
        return call.response

    @contextlib.contextmanager
    def _logged_call(
        self,
        kwargs: Mapping[str, Any],
        request_id: str | None,
        segment: Mapping[str, str] | None,
        features: Mapping[str, float | int | str | bool] | None,
    ) -> Iterator[_Call]:
        """Around one controller call (sync or async): record the routing, then log it once,
        without an answer when the call raised."""
        routing = _Routing(
            router_name=_router_name(kwargs),
            request_id=request_id,
            segment=dict(segment) if segment else None,
            features=dict(features) if features else None,
        )
        call = _Call()
        token = _ROUTING.set(routing)
        ts = _now_rfc3339()
        started = time.perf_counter()
        try:
            yield call
        except BaseException:
            self._log(routing, kwargs, ts, None, None)
            raise
        finally:
            _ROUTING.reset(token)
        self._log(routing, kwargs, ts, call.response, (time.perf_counter() - started) * 1000)

    def _log(
        self,
        routing: _Routing,
        kwargs: Mapping[str, Any],
        ts: str,
        response: Any,
        latency_ms: float | None,
    ) -> None:
        if routing.model is None:
            return  # refused before routing: there is no decision to log
        try:
            self.logger.log(self._decision(routing, kwargs, ts, response, latency_ms))
        except Exception as exc:
            with contextlib.suppress(Exception):
                _log.warning("shadoweval decision log: RouteLLM decision not logged: %s", exc)

    def _decision(
        self,
        routing: _Routing,
        kwargs: Mapping[str, Any],
        ts: str,
        response: Any,
        latency_ms: float | None,
    ) -> dict[str, Any]:
        assert routing.model is not None
        strong_model, weak_model = _model_pair(self.controller, None, None)
        tier = self.strong_tier if routing.strong else self.weak_tier
        extra: dict[str, Any] = {}
        score = routing.score
        if score is not None and not math.isfinite(score):
            score = None  # a NaN routed weak, as RouteLLM's rule does; the field is a number
        elif score is not None and not 0.0 <= score <= 1.0:
            extra["router_score_raw"] = score
            score = min(1.0, max(0.0, score))
        request_id = routing.request_id or _attr(response, "id") or uuid.uuid4().hex
        decision: dict[str, Any] = {
            "request_id": str(request_id),
            "router": self.name or f"routellm-{routing.router_name}",
            "ts": ts,
            "tier": tier,
            "chosen_model": routing.model,
            "router_score": score,
            "score_semantics": SCORE_SEMANTICS,
            "threshold": routing.threshold,
            "candidates": [
                {"model": strong_model, "tier": self.strong_tier},
                {"model": weak_model, "tier": self.weak_tier},
            ],
            "router_latency_ms": routing.latency_ms,
            "routellm_router": routing.router_name,
            **extra,
        }
        if self.router_version is not None:
            decision["router_version"] = self.router_version
        if routing.segment:
            decision["segment"] = routing.segment
        if routing.features:
            decision["features"] = routing.features
        messages = kwargs.get("messages")
        if self.include_request and isinstance(messages, Sequence) and messages:
            decision["request"] = {"messages": [dict(message) for message in messages]}
        if response is not None:
            decision.update(_answer_fields(response, routing.model))
            decision["latency_ms"] = latency_ms
        return decision


def _router_name(kwargs: Mapping[str, Any]) -> str:
    """The router a call names, as RouteLLM reads it (the model name wins over `router=`)."""
    model = kwargs.get("model")
    if isinstance(model, str):
        parts = model.split("-", 2)
        if len(parts) == 3:
            return parts[1]
    return str(kwargs.get("router"))
