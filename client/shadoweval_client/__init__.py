"""Router-side client for the shadoweval decision log (`POST /v1/decisions`).

A router calls `DecisionLogger.log(decision)` in its request path. `log()` only
serialises the decision and appends it to a bounded in-memory queue; a background
thread batches the queue into NDJSON posts, retries what can be retried and counts
everything it had to give up on. Nothing in here ever raises into the request path:
logging is fail-open, because a monitoring outage must never become a routing outage.

    logger = DecisionLogger()  # SHADOWEVAL_URL and SHADOWEVAL_INGEST_KEY from the environment
    logger.log({"request_id": rid, "router": "support-router", "tier": "cheap",
                "chosen_model": "claude-haiku-4-5", "router_score": 0.31, "threshold": 0.5})
    ...
    logger.close()  # also runs at interpreter exit

`AsyncDecisionLogger` is the same on an asyncio task (`log()` stays a plain, non-blocking
method; `await flush()`, `await aclose()`). `LoggingController` wraps a RouteLLM
`Controller`'s own call (`chat.completions.create(model="router-…")`); `RouteLLMLogger`
and `route_and_log()` route with one of its routers. RouteLLM is typed structurally: it
is not a dependency.

Only the standard library, httpx and pydantic are imported: `pip install ./client`
installs this package alone (`shadoweval_client`); the server's distribution ships the
same code as `shadoweval.client`. See docs/client.md.

Layout: `_wire` (configuration, encoding, what a server answer means), `_buffer` (the
bounded queue both loggers share), `_loggers` (`_BaseLogger` and the thread logger over it)
and `_async_logger` (the asyncio logger over it), as httpx's BaseClient → Client/AsyncClient;
`routellm` (the RouteLLM glue), `retry` (Retry-After and backoff, also used by the
server's senders).
"""

from __future__ import annotations

from shadoweval_client._async_logger import AsyncDecisionLogger
from shadoweval_client._loggers import DecisionLogger
from shadoweval_client._wire import (
    DECISIONS_PATH,
    DecisionLike,
    DropPolicy,
    LoggerStats,
    parse_retry_after,
)
from shadoweval_client.routellm import (
    RoutedDecision,
    RouteLLMController,
    RouteLLMLogger,
    StrongWinRateRouter,
    SupportsLog,
    parse_router_model,
    route_and_log,
)
from shadoweval_client.routellm_controller import LoggingController, served_model_name

__all__ = [
    "DECISIONS_PATH",
    "AsyncDecisionLogger",
    "DecisionLike",
    "DecisionLogger",
    "DropPolicy",
    "LoggerStats",
    "LoggingController",
    "RouteLLMController",
    "RouteLLMLogger",
    "RoutedDecision",
    "StrongWinRateRouter",
    "SupportsLog",
    "parse_retry_after",
    "parse_router_model",
    "route_and_log",
    "served_model_name",
]
