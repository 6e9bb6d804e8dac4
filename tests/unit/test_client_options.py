"""Both loggers take the same options through one base (no network: nothing is logged)."""

from __future__ import annotations

import pytest

from shadoweval.client import AsyncDecisionLogger, DecisionLogger


@pytest.mark.parametrize("logger_class", [DecisionLogger, AsyncDecisionLogger])
def test_options_and_their_checks_are_shared(logger_class: type) -> None:
    logger = logger_class("http://router.test/", "key", max_batch_items=7, drop="newest")
    try:
        assert logger.endpoint == "http://router.test/v1/decisions"
        assert repr(logger) == f"{logger_class.__name__}('http://router.test/v1/decisions')"
        assert logger.stats().pending == 0
    finally:
        close = getattr(logger, "close", None)
        if close is not None:
            close()
    with pytest.raises(ValueError, match="max_batch_items must be ≥ 1"):
        logger_class("http://router.test", "key", max_batch_items=0)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['max_batch'\]"):
        logger_class("http://router.test", "key", max_batch=5)
