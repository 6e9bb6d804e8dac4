"""Retry timing shared by every sender: reading `Retry-After`, and exponential backoff with
jitter. The code lives in the client distribution (`client/shadoweval_client/retry.py`),
which installs without the server's dependencies; the server's senders use it from here."""

from __future__ import annotations

from shadoweval_client.retry import (
    backoff_ceiling,
    equal_jitter,
    full_jitter,
    parse_retry_after,
)

__all__ = ["backoff_ceiling", "equal_jitter", "full_jitter", "parse_retry_after"]
