"""RouteLLM's own `Controller` call, logged: `LoggingController` wraps a Controller so that
`controller.completion(model="router-mf-0.116", …)` (RouteLLM's README) routes, answers
and logs one decision with the router's score, the threshold and the served answer.

RouteLLM is typed structurally (Protocols): it is not a dependency."""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import math
import time
import uuid
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

from shadoweval_client._wire import _log, _now_rfc3339
from shadoweval_client.routellm import (
    SCORE_SEMANTICS,
    StrongWinRateRouter,
    SupportsLog,
    strong_and_weak_models,
)

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
        strong_model, weak_model = strong_and_weak_models(self.controller, None, None)
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
