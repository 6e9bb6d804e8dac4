"""Opaque keyset cursors, one codec for every paginated listing.

A cursor is the unpadded URL-safe base64 of a small JSON object: `{"id": …}` for
listings ordered by id alone, `{"ts": …, "id": …, …}` for listings ordered by
(ts, id), plus whatever a listing must check on the way back (e.g. its sort order).
Clients treat it as opaque; the JSON inside is only so old cursors stay readable.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shadoweval.exceptions import InvalidRequest

INVALID_CURSOR = "cursor is not valid; pass next_cursor from a previous page"


@dataclass(frozen=True)
class Keyset:
    """A decoded (ts, id) cursor and the extra fields its listing asked for."""

    ts: datetime
    id: int
    extra: Mapping[str, Any] = field(default_factory=dict)


def invalid_cursor() -> InvalidRequest:
    # Both spellings of the parameter's location: `loc` like request validation errors,
    # `field` for clients of the listings that reported it that way first.
    return InvalidRequest(INVALID_CURSOR, loc=["query", "cursor"], field="cursor")


def encode_id(item_id: int) -> str:
    return _encode({"id": item_id})


def encode_keyset(ts: datetime, item_id: int, **extra: str) -> str:
    return _encode({"ts": ts.isoformat(), "id": item_id, **extra})


def decode_id(cursor: str) -> int:
    try:
        return int(_decode(cursor)["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid_cursor() from exc


def decode_keyset(cursor: str, extra: Sequence[str] = ()) -> Keyset:
    """The (ts, id) of `cursor`; each name in `extra` must be present too."""
    try:
        data = _decode(cursor)
        return Keyset(
            ts=datetime.fromisoformat(data["ts"]),
            id=int(data["id"]),
            extra={name: data[name] for name in extra},
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid_cursor() from exc


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    # Bad base64, bytes or JSON all raise ValueError (binascii.Error, UnicodeDecodeError
    # and JSONDecodeError are subclasses); JSON of the wrong shape raises Key/TypeError.
    return json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
