"""The loggers read SHADOWEVAL_URL / SHADOWEVAL_INGEST_KEY when url / key are not passed."""

from __future__ import annotations

import httpx
import pytest

from shadoweval.client import AsyncDecisionLogger, DecisionLogger


def sent_with(logger_url: str | None, key: str | None) -> tuple[str, str]:
    """The URL and bearer key of the request a logger built this way sends."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"stored": 1, "duplicates": 0, "invalid": 0})

    logger = DecisionLogger(logger_url, key, transport=httpx.MockTransport(answer))
    try:
        logger.log({"request_id": "r", "router": "x", "tier": "cheap", "chosen_model": "m"})
        assert logger.flush(timeout=5)
    finally:
        logger.close(timeout=5)
    (request,) = seen
    return str(request.url), request.headers["Authorization"]


def test_environment_defaults_and_explicit_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOWEVAL_URL", "http://from-env.test")
    monkeypatch.setenv("SHADOWEVAL_INGEST_KEY", "env-key\n")  # as read from a file
    assert sent_with(None, None) == ("http://from-env.test/v1/decisions", "Bearer env-key")
    assert sent_with("http://explicit.test", "arg-key") == (
        "http://explicit.test/v1/decisions",
        "Bearer arg-key",
    )
    assert sent_with(None, "arg-key") == ("http://from-env.test/v1/decisions", "Bearer arg-key")


@pytest.mark.parametrize("logger_class", [DecisionLogger, AsyncDecisionLogger])
def test_neither_argument_nor_environment_is_a_clear_startup_error(
    logger_class: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHADOWEVAL_URL", raising=False)
    monkeypatch.delenv("SHADOWEVAL_INGEST_KEY", raising=False)
    with pytest.raises(ValueError, match="pass url= or set the SHADOWEVAL_URL environment"):
        logger_class()
    monkeypatch.setenv("SHADOWEVAL_URL", "http://from-env.test")
    monkeypatch.setenv("SHADOWEVAL_INGEST_KEY", "  ")
    with pytest.raises(ValueError, match="pass key= or set the SHADOWEVAL_INGEST_KEY"):
        logger_class()
