"""The shared cursor codec and dialect INSERT helper that listings and upserts rely on."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

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


def _raw_cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _raw_cursor({"id": 10**30}),  # past BIGINT: the database would fail to bind it
        _raw_cursor({"id": 2**63}),
        _raw_cursor({"id": -1}),
        _raw_cursor({"id": "7"}),
        _raw_cursor({"id": 7.5}),
        _raw_cursor({"id": True}),
        base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(),  # past the stack
    ],
)
def test_an_id_cursor_out_of_range_or_of_another_type_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        paging.decode_id(cursor)
    assert caught.value.context["field"] == "cursor"


def test_the_largest_row_id_still_decodes() -> None:
    assert paging.decode_id(paging.encode_id(paging.MAX_ROW_ID)) == 2**63 - 1
    assert paging.decode_id(paging.encode_id(0)) == 0


@pytest.mark.parametrize(
    "ts",
    [
        "2026-03-01T12:00:00",  # naive
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
        "yesterday",
    ],
)
def test_a_keyset_cursor_with_a_bad_ts_is_refused(ts: str) -> None:
    with pytest.raises(InvalidRequest):
        paging.decode_keyset(_raw_cursor({"ts": ts, "id": 1}))


def test_a_keyset_cursor_ts_comes_back_in_utc() -> None:
    key = paging.decode_keyset(_raw_cursor({"ts": "2026-03-01T14:30:05+02:00", "id": 1}))
    assert key.ts == datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    assert key.ts.utcoffset() == timedelta(0)


def test_check_instant_holds_the_ends_of_the_utc_range() -> None:
    assert paging.check_instant(datetime(1, 1, 1, tzinfo=UTC)).year == 1
    assert paging.check_instant(datetime.max.replace(tzinfo=UTC)).year == 9999
    with pytest.raises(ValueError, match="between 0001-01-01 and 9999-12-31"):
        paging.check_instant(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    with pytest.raises(ValueError, match="UTC offset"):
        paging.check_instant(datetime(2026, 1, 1))


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


def test_a_report_pages_by_position_and_refuses_a_position_we_did_not_issue() -> None:
    rows = list("abcde")
    first, cursor = paging.page_of(rows, None, 2)
    assert first == ["a", "b"]
    assert cursor is not None
    second, cursor = paging.page_of(rows, cursor, 2)
    third, last = paging.page_of(rows, cursor, 2)
    assert (second, third, last) == (["c", "d"], ["e"], None)
    assert paging.page_of(rows, None, None) == (rows, None)
    for bad in (_raw_cursor({"position": -1}), _raw_cursor({"position": "2"}), "junk"):
        with pytest.raises(InvalidRequest):
            paging.page_of(rows, bad, 2)
