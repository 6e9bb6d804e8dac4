"""The shared cursor codec and dialect INSERT helper that listings and upserts rely on."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from shadoweval import paging
from shadoweval.db import dialect_insert
from shadoweval.exceptions import InvalidRequest

TS = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


def test_id_cursor_round_trips_and_is_opaque() -> None:
    cursor = paging.encode_id(42)
    assert paging.decode_id(cursor) == 42
    assert "=" not in cursor
    assert "42" not in cursor


def test_keyset_cursor_round_trips_with_its_extra_fields() -> None:
    cursor = paging.encode_keyset(TS, 7, order="asc")
    key = paging.decode_keyset(cursor, extra=("order",))
    assert (key.ts, key.id, dict(key.extra)) == (TS, 7, {"order": "asc"})


def test_wire_format_of_cursors_already_issued_is_kept() -> None:
    # Cursors handed out before the codec was shared must still decode.
    raw = json.dumps({"ts": TS.isoformat(), "id": 9, "order": "desc"}).encode()
    old = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert paging.encode_keyset(TS, 9, order="desc") == old
    assert paging.decode_keyset(old).id == 9


@pytest.mark.parametrize(
    "cursor",
    [
        "junk",
        "x",
        "!!!!",
        "",
        base64.urlsafe_b64encode(b'{"id": "seven"}').decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_we_did_not_issue_is_a_400_naming_the_parameter(cursor: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        paging.decode_id(cursor)
    assert caught.value.context == {"loc": ["query", "cursor"], "field": "cursor"}


def test_keyset_cursor_missing_a_required_field_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        paging.decode_keyset(paging.encode_id(3))
    with pytest.raises(InvalidRequest):
        paging.decode_keyset(paging.encode_keyset(TS, 3), extra=("order",))


def test_dialect_insert_follows_the_bind() -> None:
    lite = create_engine("sqlite://")
    assert dialect_insert(lite) is sqlite.insert
    with lite.connect() as connection, Session(lite) as session:
        assert dialect_insert(connection) is sqlite.insert
        assert dialect_insert(session) is sqlite.insert
    # Building a PostgreSQL engine does not connect, so no server is needed here.
    assert dialect_insert(create_engine("postgresql+psycopg://")) is postgresql.insert
