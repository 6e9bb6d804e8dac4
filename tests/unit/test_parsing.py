"""Body parsing: JSON object, array, NDJSON, encodings and limits — no server needed."""

from __future__ import annotations

import gzip
import zlib

import pytest

from shadoweval.exceptions import (
    EmptyBody,
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from shadoweval.ingest.parsing import RawJson, check_media_type, decode_content, parse_items


def test_object_array_and_ndjson() -> None:
    assert parse_items(b'{"a": 1}', "application/json", max_items=10).items == [{"a": 1}]
    assert parse_items(b'[{"a": 1}, 2]', "application/json", max_items=10).items == [{"a": 1}, 2]
    parsed = parse_items(b'{"a": 1}\n\n{"a": 2}\n', "application/x-ndjson", max_items=10)
    assert parsed.items == [{"a": 1}, {"a": 2}]
    assert parsed.unparsable == {}


def test_ndjson_under_application_json_is_recognised() -> None:
    parsed = parse_items(b'{"a": 1}\n{"a": 2}', "application/json", max_items=10)
    assert parsed.items == [{"a": 1}, {"a": 2}]


def test_ndjson_lines_end_at_newline_only() -> None:
    # U+2028, U+2029 and U+0085 are legal raw inside a JSON string: a prompt holding them is
    # one decision, not two broken lines; CRLF line ends still work.
    prompt = "first\u2028second\u2029third\x85fourth"
    body = ('{"a": 1}\r\n' + '{"prompt": "' + prompt + '"}\r\n{"a": 3}').encode()
    for defer in (False, True):
        parsed = parse_items(body, "application/x-ndjson", max_items=10, defer_decoding=defer)
        assert parsed.unparsable == {}
        items = [i.decoded()[0] for i in parsed.items] if defer else parsed.items
        assert items == [{"a": 1}, {"prompt": prompt}, {"a": 3}]


def test_bad_ndjson_line_is_reported_by_index_and_line() -> None:
    parsed = parse_items(b'{"a": 1}\n\n{oops\n{"a": 3}', "application/x-ndjson", max_items=10)
    assert parsed.items[0] == {"a": 1}
    assert parsed.items[2] == {"a": 3}
    assert list(parsed.unparsable) == [1]
    assert parsed.unparsable[1].startswith("line 3 is not JSON")


def test_deferred_ndjson_lines_stay_text_and_say_their_line_when_not_json() -> None:
    body = b'{"a": 1}\n\n{oops\n'
    parsed = parse_items(body, "application/x-ndjson", max_items=10, defer_decoding=True)
    assert all(isinstance(item, RawJson) for item in parsed.items)
    assert parsed.items[0].decoded() == ({"a": 1}, None)
    value, reason = parsed.items[1].decoded()
    assert value is None
    assert reason is not None
    assert reason.startswith("line 3 is not JSON")


def test_utf8_bom_is_tolerated() -> None:
    assert parse_items(b'\xef\xbb\xbf{"a": 1}', "application/json", max_items=1).items == [{"a": 1}]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", EmptyBody),
        (b"  \n", EmptyBody),
        (b"[]", EmptyBody),
        (b'"text"', MalformedBody),
        (b"{", MalformedBody),
        (b"\xff", MalformedBody),
    ],
)
def test_unreadable_bodies(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_items(body, "application/json", max_items=10)


def test_item_limit_names_the_limit() -> None:
    with pytest.raises(PayloadTooLarge, match="limit of 2 decisions"):
        parse_items(b"[1, 2, 3]", "application/json", max_items=2)


def test_media_types() -> None:
    assert check_media_type("application/json; charset=utf-8") == "application/json"
    assert check_media_type("Application/X-NDJSON") == "application/x-ndjson"
    for bad in (None, "", "text/plain", "multipart/form-data"):
        with pytest.raises(UnsupportedMediaType):
            check_media_type(bad)


def test_decode_content() -> None:
    raw = b'{"a": 1}' * 100
    assert decode_content(raw, None, max_bytes=10_000) == raw
    assert decode_content(gzip.compress(raw), "gzip", max_bytes=10_000) == raw
    assert decode_content(zlib.compress(raw), "deflate", max_bytes=10_000) == raw
    with pytest.raises(PayloadTooLarge):
        decode_content(gzip.compress(raw), "gzip", max_bytes=100)
    with pytest.raises(MalformedBody):
        decode_content(b"plain", "gzip", max_bytes=100)
    with pytest.raises(UnsupportedMediaType):
        decode_content(raw, "br", max_bytes=10_000)


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' + b"9" * 5000 + b"}"],
    ids=["nesting", "an integer of 5,000 digits"],
)
def test_json_python_cannot_read_is_a_malformed_body(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_items(body, "application/json", max_items=10)


def test_an_ndjson_line_python_cannot_read_is_that_line_s_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    parsed = parse_items(b'{"a": 1}\n' + deep + b'\n{"b": 2}', "application/x-ndjson", max_items=10)
    assert parsed.items[0] == {"a": 1}
    assert parsed.items[2] == {"b": 2}
    assert "nests too deeply" in parsed.unparsable[1]
