"""Opaque keyset cursors, one codec for every paginated listing.

A cursor is the unpadded URL-safe base64 of a small JSON object: `{"id": …}` for
listings ordered by id alone, `{"ts": …, "id": …, …}` for listings ordered by
(ts, id), plus whatever a listing must check on the way back (e.g. its sort order);
`{"position": …}` for reports computed per request (segments, calibration), whose rows
have no stored key: the index of the next row in the report's order.
Clients treat it as opaque; the JSON inside is only so old cursors stay readable.
A decoded cursor is checked like any parameter: its id must fit a BIGINT and its ts must
be an aware instant both databases can hold, else it is the 400 of a cursor we did not issue.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from shadoweval.exceptions import InvalidRequest

T = TypeVar("T")

INVALID_CURSOR = "cursor is not valid; pass next_cursor from a previous page"
# Row ids are BIGINT on PostgreSQL and 64-bit INTEGER on SQLite.
MAX_ROW_ID = 2**63 - 1


def check_row_id(value: int) -> int:
    """`value` if it can be a row id (0 ≤ id < 2^63), else ValueError saying the range."""
    if not 0 <= value <= MAX_ROW_ID:
        raise ValueError(f"must be between 0 and {MAX_ROW_ID}")
    return value


def check_instant(value: datetime) -> datetime:
    """`value` in UTC if it is aware and lies within years 1–9999 in UTC, else ValueError.

    `0001-01-01T00:00:00+01:00` is a valid RFC 3339 string but its instant is in year 0,
    which Python cannot hold in UTC; neither database query can then be bound.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset (e.g. 2026-01-01T00:00:00Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("must lie between 0001-01-01 and 9999-12-31 in UTC") from exc


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
        return _row_id(_decode(cursor)["id"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise invalid_cursor() from exc


def decode_keyset(cursor: str, extra: Sequence[str] = ()) -> Keyset:
    """The (ts, id) of `cursor`; each name in `extra` must be present too."""
    try:
        data = _decode(cursor)
        return Keyset(
            ts=check_instant(datetime.fromisoformat(data["ts"])),
            id=_row_id(data["id"]),
            extra={name: data[name] for name in extra},
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise invalid_cursor() from exc


def encode_position(position: int) -> str:
    return _encode({"position": position})


def decode_position(cursor: str) -> int:
    try:
        return _row_id(_decode(cursor)["position"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise invalid_cursor() from exc


def page_of(rows: Sequence[T], cursor: str | None, limit: int | None) -> tuple[list[T], str | None]:
    """One page of a report computed per request: `limit` rows (all with None) from the
    cursor's position, and the cursor of the next page (None on the last). Positions are
    indexes in the report's order as computed now, so a page may repeat or skip a row whose
    place moved (new labels re-rank segments) between two requests."""
    start = decode_position(cursor) if cursor else 0
    end = len(rows) if limit is None else start + limit
    return list(rows[start:end]), encode_position(end) if end < len(rows) else None


def _row_id(value: Any) -> int:
    # Only the JSON integers encode_id wrote: not "7", 7.5 or true.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("cursor id is not an integer")
    return check_row_id(value)


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    # Bad base64, bytes or JSON all raise ValueError (binascii.Error, UnicodeDecodeError
    # and JSONDecodeError are subclasses); JSON of the wrong shape raises Key/TypeError,
    # JSON nested deeper than the interpreter's stack RecursionError.
    return json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
