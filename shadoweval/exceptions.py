"""The one error tree of shadoweval.

Services raise these; `shadoweval.app` maps each class to an HTTP status in one
place, and the CLI prints their message. Every error carries a stable `code`
that clients can branch on and a human-readable message.

    ShadowevalError
    ├── InvalidRequest            the request as a whole cannot be understood (400)
    │   ├── EmptyBody
    │   └── MalformedBody         not JSON / NDJSON
    ├── UnsupportedMediaType      wrong Content-Type or Content-Encoding (415)
    ├── PayloadTooLarge           over a size or item-count limit (413)
    ├── NotFound                  (404)
    ├── AuthenticationFailed      no key, unknown, revoked or expired key (401)
    ├── PermissionDenied          the key lacks the scope (403)
    ├── DatabaseNotReady          unreachable or not migrated (503)
    ├── InvalidConfiguration      a configured file (e.g. alert rules) does not validate (500)
    ├── Overloaded                the database cannot keep up; retry after `retry_after_s` (503)
    │   └── DatabaseStalled       the database did not answer within its timeout (503)
    └── StorageFull               the database's disk is full: an operator must act (507)
"""

from __future__ import annotations

from typing import Any


class ShadowevalError(Exception):
    """Base of every error shadoweval raises on purpose."""

    code = "error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context


class InvalidRequest(ShadowevalError):
    code = "invalid_request"


class EmptyBody(InvalidRequest):
    code = "empty_body"


class MalformedBody(InvalidRequest):
    code = "malformed_body"


class UnsupportedMediaType(ShadowevalError):
    code = "unsupported_media_type"


class PayloadTooLarge(ShadowevalError):
    code = "payload_too_large"


class NotFound(ShadowevalError):
    code = "not_found"


class AuthenticationFailed(ShadowevalError):
    code = "unauthenticated"


class PermissionDenied(ShadowevalError):
    code = "forbidden"


class DatabaseNotReady(ShadowevalError):
    code = "database_not_ready"


class InvalidConfiguration(ShadowevalError):
    """The deployment's configuration is wrong, not the request: `errors` hold field paths."""

    code = "invalid_configuration"

    def __init__(self, message: str, *, source: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, source=source, errors=errors)
        self.source = source
        self.errors = errors


class Overloaded(ShadowevalError):
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class DatabaseStalled(Overloaded):
    code = "database_stalled"


class StorageFull(ShadowevalError):
    """Not transient like Overloaded: retrying does not help until space is freed."""

    code = "storage_full"
