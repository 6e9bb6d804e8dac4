"""The client's wire format: configuration, statistics, NDJSON encoding, and what a
server answer means (retry, split, reject). Standard library, httpx and pydantic only."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as clock_time
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, TypedDict

import httpx
from pydantic import BaseModel

from shadoweval_client._version import __version__
from shadoweval_client.retry import parse_retry_after as parse_retry_after

DECISIONS_PATH = "/v1/decisions"

URL_ENV = "SHADOWEVAL_URL"
"""Where the loggers read the server's base URL from when `url` is not passed."""
KEY_ENV = "SHADOWEVAL_INGEST_KEY"
"""Where the loggers read the ingest API key from when `key` is not passed."""

DecisionLike = Mapping[str, Any] | BaseModel
"""What `log()` accepts: a mapping in the decision-log (v1) shape, or a pydantic model of it."""

DropPolicy = Literal["oldest", "newest"]
"""Which decision a full queue gives up: the oldest queued one (default) or the new one."""

_log = logging.getLogger("shadoweval.client")

_KIB = 1024
_MIB = 1024 * 1024
_NDJSON = "application/x-ndjson"
# 501 and 505 say the server will never accept this request, so resending cannot help.
_RETRYABLE = frozenset({408, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})
# Compressing a big batch takes milliseconds; the async logger does that off the event loop.
_ASYNC_INLINE_GZIP_MAX = 64 * _KIB


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counters of one logger since it was created (per process: a fork starts at zero).

    Every decision `log()` accepted ends up in exactly one of `sent`, `dropped_queue_full`,
    `dropped_rejected`, `dropped_after_retries`, `dropped_on_close`, or is still `pending`.
    Of the sent ones the server reports `stored + duplicates + invalid`.
    """

    queued: int = 0
    """Decisions `log()` accepted (serialisable, logger open); with drop="newest" this
    includes the ones then refused for a full queue."""
    sent: int = 0
    """Decisions in requests the server answered (202 or 422)."""
    stored: int = 0
    duplicates: int = 0
    """Already stored under the same (router, request_id): resends after a timeout land here."""
    invalid: int = 0
    """Refused by the server's validation (distinct item indexes of a 422's `detail`)."""
    dropped_invalid_input: int = 0
    """Refused by `log()` itself: not a mapping, not JSON (NaN, objects), or over a batch."""
    dropped_closed: int = 0
    """Passed to `log()` after `close()` began."""
    dropped_queue_full: int = 0
    dropped_rejected: int = 0
    """Refused as a whole: 401/403 (bad key), or another 4xx that resending cannot fix."""
    dropped_after_retries: int = 0
    """Given up on after `max_retries` retries (network down, 5xx, 429)."""
    dropped_on_close: int = 0
    """Still unsent when `close(timeout)` ran out of time."""
    retries: int = 0
    """Requests repeated after a retryable answer or a connection error."""
    requests: int = 0
    """HTTP requests attempted."""
    pending: int = 0
    """Queued or in flight right now."""
    last_error: str | None = None

    @property
    def dropped(self) -> int:
        """Every decision lost on the client side, for whatever reason."""
        return (
            self.dropped_invalid_input
            + self.dropped_closed
            + self.dropped_queue_full
            + self.dropped_rejected
            + self.dropped_after_retries
            + self.dropped_on_close
        )

    def as_dict(self) -> dict[str, int | str | None]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _Counters:
    queued: int = 0
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    dropped_invalid_input: int = 0
    dropped_closed: int = 0
    dropped_queue_full: int = 0
    dropped_rejected: int = 0
    dropped_after_retries: int = 0
    dropped_on_close: int = 0
    retries: int = 0
    requests: int = 0
    last_error: str | None = None


# --- configuration -------------------------------------------------------------------------


class LoggerOptions(TypedDict, total=False):
    """The tuning arguments both loggers take, each optional (defaults: `_Config`)."""

    max_batch_items: int
    max_batch_bytes: int
    max_batch_age: float
    max_queue_items: int
    max_queue_bytes: int
    drop: DropPolicy
    gzip_min_bytes: int
    max_retries: int
    backoff_base: float
    backoff_max: float
    max_retry_after: float
    timeout: float
    log_interval: float


@dataclass(frozen=True, slots=True)
class _Config:
    endpoint: str
    headers: dict[str, str]
    # The defaults of both loggers' arguments (documented on DecisionLogger).
    max_batch_items: int = 500
    max_batch_bytes: int = 2 * _MIB
    max_batch_age: float = 1.0
    max_queue_items: int = 10_000
    max_queue_bytes: int = 64 * _MIB
    drop: DropPolicy = "oldest"
    gzip_min_bytes: int = 16 * _KIB
    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    timeout: float = 10.0
    log_interval: float = 60.0

    def __post_init__(self) -> None:
        # Misconfiguration is reported at construction, at startup, never from log().
        checks = {
            "max_batch_items must be ≥ 1": self.max_batch_items >= 1,
            "max_batch_bytes must be ≥ 1024": self.max_batch_bytes >= _KIB,
            "max_batch_age must be > 0": self.max_batch_age > 0,
            "max_queue_items must be ≥ 1": self.max_queue_items >= 1,
            "max_queue_bytes must be ≥ max_batch_bytes": self.max_queue_bytes
            >= self.max_batch_bytes,
            "drop must be 'oldest' or 'newest'": self.drop in ("oldest", "newest"),
            "gzip_min_bytes must be ≥ 0": self.gzip_min_bytes >= 0,
            "max_retries must be ≥ 0": self.max_retries >= 0,
            "backoff_base must be > 0": self.backoff_base > 0,
            "backoff_max must be ≥ backoff_base": self.backoff_max >= self.backoff_base,
            "max_retry_after must be ≥ 0": self.max_retry_after >= 0,
            "timeout must be > 0": self.timeout > 0,
            "log_interval must be ≥ 0": self.log_interval >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    @property
    def http_timeout(self) -> httpx.Timeout:
        # A refused or black-holed connect should fail fast and go to backoff.
        return httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0))


def _from_env(value: str | None, env: str, argument: str) -> str:
    """An explicit argument wins; otherwise the environment; neither is a startup error."""
    if value is not None:
        return value
    found = os.environ.get(env)
    if found is None or not found.strip():
        raise ValueError(f"pass {argument}= or set the {env} environment variable")
    return found


def _endpoint(url: str) -> str:
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    return base if base.endswith(DECISIONS_PATH) else base + DECISIONS_PATH


def _headers(key: str) -> dict[str, str]:
    key = key.strip()  # keys read from files often end in a newline
    if not key or any(c.isspace() for c in key):
        raise ValueError("key must be a non-empty API key with the ingest scope")
    return {"Authorization": f"Bearer {key}", "User-Agent": f"shadoweval-client/{__version__}"}


# --- encoding ------------------------------------------------------------------------------


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    # Router scores often come out of numpy or torch as 0-d scalars.
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__.split(".")[0] in ("numpy", "torch"):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _encode(decision: object) -> bytes:
    """One NDJSON line; raises for anything that is not a strict-JSON decision object."""
    if isinstance(decision, BaseModel):
        data: dict[str, Any] = decision.model_dump(mode="json", by_alias=True, exclude_unset=True)
    elif isinstance(decision, Mapping):
        data = dict(decision)
    else:
        raise TypeError(
            f"a decision must be a mapping or a pydantic model, not {type(decision).__name__}"
        )
    # The decision time is when the router decided, not when the batch happens to leave.
    if data.get("ts") is None:
        data["ts"] = _now_rfc3339()
    # allow_nan=False: a NaN would be refused by the server as a whole line anyway; refusing
    # it here names the caller. ensure_ascii=False keeps non-English prompts small.
    text = json.dumps(
        data, default=_json_default, allow_nan=False, ensure_ascii=False, separators=(",", ":")
    )
    return text.encode("utf-8")


def _encode_batch(lines: Sequence[bytes], gzip_min_bytes: int) -> tuple[bytes, dict[str, str]]:
    body = b"\n".join(lines) + b"\n"
    headers = {"Content-Type": _NDJSON}
    if len(body) >= gzip_min_bytes:
        # mtime=0 makes a resend byte-identical, which helps anyone diffing captures.
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return body, headers


# --- server answers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    kind: Literal["delivered", "retry", "split", "rejected"]
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    retry_after: float | None = None
    error: str | None = None


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _count(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _snippet(content: bytes) -> str:
    text = content[:300].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""


def _describe_invalid(body: dict[str, Any], indexes: list[int]) -> str:
    detail = body.get("detail")
    first = detail[0] if isinstance(detail, list) and detail else None
    if not isinstance(first, dict):
        return ""
    results = body.get("results")
    index = first.get("index")
    request_id = None
    if isinstance(results, list) and isinstance(index, int) and 0 <= index < len(results):
        entry = results[index]
        request_id = entry.get("request_id") if isinstance(entry, dict) else None
    loc = ".".join(str(part) for part in first.get("loc") or []) or "(item)"
    return f"; first: item {index} request_id={request_id} {loc}: {first.get('msg')}"


def _interpret(status: int, headers: httpx.Headers, content: bytes, items: int) -> _Answer:
    if 200 <= status < 300 or status == 422:
        body = _json_object(content)
        stored = _count(body.get("stored"), items if status != 422 else 0)
        duplicates = _count(body.get("duplicates"))
        if status != 422:
            return _Answer("delivered", stored, duplicates, _count(body.get("invalid")))
        # The contract: a 422 still stored the valid items, so the batch is done; the invalid
        # ones would fail again, and resending the rest would only count duplicates.
        detail = body.get("detail")
        indexes = sorted(
            {
                d["index"]
                for d in (detail if isinstance(detail, list) else [])
                if isinstance(d, dict) and isinstance(d.get("index"), int)
            }
        )
        invalid = len(indexes) or _count(body.get("invalid"), max(0, items - stored - duplicates))
        error = (
            f"HTTP 422: {invalid} of {items} decisions invalid{_describe_invalid(body, indexes)}"
        )
        return _Answer("delivered", stored, duplicates, invalid, error=error)
    error = f"HTTP {status}{_snippet(content)}"
    if status in _RETRYABLE:
        return _Answer(
            "retry", retry_after=parse_retry_after(headers.get("retry-after")), error=error
        )
    if status == 413:
        return _Answer("split", error=error)
    return _Answer("rejected", error=error)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
