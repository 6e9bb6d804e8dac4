"""The router-side client, as the server distribution ships it.

The code lives once, in the `shadoweval_client` package (`client/shadoweval_client/`),
which `pip install ./client` installs alone with only httpx and pydantic. This package
re-exports it so `from shadoweval.client import …` keeps working where the whole server
is installed. See docs/client.md.
"""

from __future__ import annotations

from shadoweval_client import (
    DECISIONS_PATH,
    AsyncDecisionLogger,
    DecisionLike,
    DecisionLogger,
    DropPolicy,
    LoggerStats,
    LoggingController,
    RoutedDecision,
    RouteLLMController,
    RouteLLMLogger,
    StrongWinRateRouter,
    SupportsLog,
    parse_retry_after,
    parse_router_model,
    route_and_log,
    served_model_name,
)

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
