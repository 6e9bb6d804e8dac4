"""The request guard: a key, clean parameters and a bounded body, before a route runs.

Plain ASGI in front of every route, so that what a route's own dependencies cannot
promise holds for all of them:

1. **Authentication before any body is read.** FastAPI reads and parses a JSON body
   before it resolves a route's dependencies, so the scope check alone let an anonymous
   client make the API buffer 300 MB, and answered invalid JSON without a key with 422.
   Every `/v1/…` request must carry a valid key here (401 otherwise); the route's own
   dependency still checks the key's scope and stays the authority on revocation.
   Operational routes outside `/v1` (`/healthz`, `/readyz`, `/metrics`, the docs) keep
   their own rules.
2. **Parameters are text.** A query or path parameter with a NUL character (PostgreSQL
   cannot bind it) or bytes that are not UTF-8 (a lone surrogate) is a 422 naming it.
3. **A body limit, enforced while reading.** A declared `Content-Length` over the limit
   is refused unread; a body that grows past it stops being read at the limit. The limit
   is `api_max_body_bytes` (admin and operate bodies are small), except on the ingest
   routes: they read their raw stream within their own, larger limits (`ingest/body.py`,
   413 with their own advice), so here they are capped only by the largest of those.
4. **Body strings PostgreSQL can store.** A JSON body of any other route (keys, pool,
   alert rules, gates, review labels, silences) with NUL or a lone surrogate in a string
   is a 422 naming its field path, on both databases; the ingest routes reject such an
   item alone and keep the rest of the batch (`ingest/storable.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SqlalchemyTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from shadoweval.auth.models import Principal
from shadoweval.auth.service import KeyCache
from shadoweval.db import driver_operational_errors
from shadoweval.exceptions import AuthenticationFailed, PayloadTooLarge

PROTECTED_PREFIX = "/v1/"
# Routes that read their raw body within their own limits and check strings per item.
INGEST_PATHS = frozenset(
    {"/v1/decisions", "/v1/feedback", "/v1/traces", "/v1/integrations/litellm"}
)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# In JSON text: a raw NUL, the escape of NUL, or the escape of a surrogate (paired or lone).
_UNSTORABLE_MARKER = re.compile(rb"\x00|\\u0000|\\u[dD][89a-fA-F]")
# An answer the guard gives itself: status, JSON body, extra headers.
Refusal = tuple[int, dict[str, Any], dict[str, str] | None]
# `{name}` in a template after re.escape, which escapes the braces.
_ESCAPED_PARAMETER = re.compile(r"\\\{(\w+)\\\}")


DatabaseErrorAnswer = Callable[[Request, Exception], Awaitable[Response]]


class RequestGuard:
    """`on_database_error` answers a database failure while the key is looked up: the
    app's own handler, so a stall or a full disk reads the same here as in any route."""

    def __init__(self, app: ASGIApp, *, on_database_error: DatabaseErrorAnswer) -> None:
        self.app = app
        self.on_database_error = on_database_error
        self._database_errors: tuple[type[Exception], ...] = (
            OperationalError,
            SqlalchemyTimeoutError,
            *driver_operational_errors(),
        )
        self._path_templates: list[re.Pattern[str]] | None = None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        protected = path.startswith(PROTECTED_PREFIX) or path == PROTECTED_PREFIX.rstrip("/")
        if protected:
            try:
                authenticated = await self._authenticate(scope)
            except self._database_errors as error:
                response = await self.on_database_error(Request(scope), error)
                response.headers["connection"] = "close"  # the body is left unread
                await response(scope, receive, send)
                return
            if not isinstance(authenticated, Principal):
                await _answer(send, *authenticated)
                return
            refusal = self._check_parameters(scope)
            if refusal is not None:
                await _answer(send, *refusal)
                return
        settings = scope["app"].state.settings
        limit: int = settings.api_max_body_bytes
        if path in INGEST_PATHS:
            limit = max(limit, settings.ingest_max_bytes, settings.litellm_max_bytes)
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, *_too_large(limit))
            return
        if protected and path not in INGEST_PATHS and scope["method"] in _WRITE_METHODS:
            await self._run_checked(scope, receive, send, limit)
        else:
            await self._run_within(scope, receive, send, limit)

    # --- 1. authentication ------------------------------------------------------------

    async def _authenticate(self, scope: AsgiScope) -> Principal | Refusal:
        """The key's principal, or the refusal to answer."""
        state = scope["app"].state
        try:
            token = bearer_token_from_header(_header(scope, b"authorization"))
            cache = _key_cache(state)
            principal = cache.get(token)
            if principal is None:
                principal = await run_in_threadpool(
                    cache.authenticate, engine=state.engine, key=token
                )
        except AuthenticationFailed as error:
            body = {"detail": error.message, "code": error.code}
            return 401, body, {"WWW-Authenticate": "Bearer"}
        # Read by the request log (RequestObserver) like the one the scope check sets.
        scope.setdefault("state", {})["key_prefix"] = principal.prefix
        return principal

    # --- 2. parameters ----------------------------------------------------------------

    def _check_parameters(self, scope: AsgiScope) -> Refusal | None:
        errors: list[dict[str, Any]] = []
        for raw_pair in bytes(scope.get("query_string", b"")).split(b"&"):
            raw_name, _, raw_value = raw_pair.partition(b"=")
            name = _unquote(raw_name).decode("utf-8", "replace")
            for part, raw in (("name", raw_name), ("value", raw_value)):
                reason = _text_problem(_unquote(raw))
                if reason:
                    errors.append(_error(["query", name], f"parameter {part} {reason}"))
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        reason = _text_problem(unquote_to_bytes(raw_path.partition(b"?")[0]))
        if reason:
            errors.append(_error(["path", *self._path_parameter_names(scope)], reason))
        if not errors:
            return None
        return 422, {"detail": errors, "code": "invalid_parameters"}, None

    def _path_parameter_names(self, scope: AsgiScope) -> list[str]:
        """The path parameter holding the bad text, found by the route's template in the
        OpenAPI document (the server decoded bad bytes to replacement characters)."""
        if self._path_templates is None:
            self._path_templates = [
                re.compile("^" + _ESCAPED_PARAMETER.sub(r"(?P<\1>[^/]+)", re.escape(t)) + "$")
                for t in scope["app"].openapi()["paths"]
                if "{" in t
            ]
        for pattern in self._path_templates:
            match = pattern.match(scope["path"])
            if match:
                return [
                    name
                    for name, value in match.groupdict().items()
                    if "\x00" in value or "\ufffd" in value
                ][:1]
        return []

    # --- 3. body limit ----------------------------------------------------------------

    async def _run_within(self, scope: AsgiScope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        exceeded = answered = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if not exceeded:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                # Whatever the route made of the interrupted read (FastAPI turns it into a
                # 400 "error parsing the body"), the answer is the 413 that caused it.
                answered = True
                await _answer(send, *_too_large(limit))

        try:
            await self.app(scope, limited_receive, guarded_send)
        except PayloadTooLarge:
            if not answered:
                await _answer(send, *_too_large(limit))

    # --- 4. body strings --------------------------------------------------------------

    async def _run_checked(
        self, scope: AsgiScope, receive: Receive, send: Send, limit: int
    ) -> None:
        """Read the (small) body within the limit, refuse unstorable strings, then hand the
        same bytes to the route."""
        chunks: list[bytes] = []
        size, more, last = 0, True, None
        while more:
            message = await receive()
            if message["type"] != "http.request":
                last = message  # the client went away: the route sees it after the body
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, *_too_large(limit))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        location = _unstorable_string(body)
        if location is not None:
            loc, reason = location
            error = _error(["body", *loc], reason)
            await _answer(send, 422, {"detail": [error], "code": "invalid_parameters"}, None)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return last if last is not None else await receive()

        await self.app(scope, replay, send)


def _unstorable_string(body: bytes) -> tuple[list[Any], str] | None:
    """The field path and reason of the first string (key or value) in a JSON body that
    holds NUL or a lone surrogate; None when there is none or the body is not JSON (the
    route's own parsing answers that)."""
    if not _UNSTORABLE_MARKER.search(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[list[Any], Any]] = [([], document)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                reason = _string_problem(key)
                if reason:
                    return [*loc, key], f"key {reason}"
                stack.append(([*loc, key], item))
        elif isinstance(value, list):
            stack.extend(([*loc, index], item) for index, item in enumerate(value))
        elif isinstance(value, str):
            reason = _string_problem(value)
            if reason:
                return loc, reason
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters"
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return "must not contain a lone surrogate (\\ud800–\\udfff)"
    return None


def _key_cache(state: Any) -> KeyCache:
    # The ingest routes' cache (`ingest.router`), so that their own check is a cache hit.
    cache: KeyCache | None = getattr(state, "ingest_key_cache", None)
    if cache is None:
        cache = state.ingest_key_cache = KeyCache(state.settings.ingest_key_cache_seconds)
    cache.ttl_s = state.settings.ingest_key_cache_seconds
    return cache


def bearer_token_from_header(header: str) -> str:
    """The key of an `Authorization: Bearer <key>` header; AuthenticationFailed otherwise."""
    if not header:
        raise AuthenticationFailed("missing API key; send `Authorization: Bearer <key>`")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("malformed Authorization header; expected `Bearer <key>`")
    return token.strip()


def _header(scope: AsgiScope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _unquote(raw: bytes) -> bytes:
    return unquote_to_bytes(raw.replace(b"+", b" "))


def _text_problem(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8 (a lone surrogate or a stray byte)"
    if "\x00" in text:
        return "must not contain NUL characters"
    return None


def _error(loc: list[str], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": "value_error"}


def _too_large(limit: int) -> Refusal:
    error = PayloadTooLarge(f"body exceeds the limit of {limit} bytes per request")
    return 413, {"detail": error.message, "code": error.code, "limit_bytes": limit}, None


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None
) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        # The body may be left unread: the connection cannot carry another request.
        (b"connection", b"close"),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
