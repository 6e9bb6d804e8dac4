"""Redaction patterns on payload text."""

from __future__ import annotations

from shadoweval.ingest.redaction import DEFAULT_PATTERNS, Redactor


def test_default_patterns_redact_emails_phones_and_keys() -> None:
    redactor = Redactor.from_patterns(DEFAULT_PATTERNS)
    text, hits = redactor.text(
        "Mail jane.doe@example.com or call +1 (415) 555-0100; key sk-abcdefghijklmnop1234 ok"
    )
    assert hits == 3
    assert "jane.doe" not in text
    assert "555-0100" not in text
    assert "sk-abcdefghijklmnop1234" not in text
    assert "[REDACTED:email]" in text
    assert "[REDACTED:phone]" in text
    assert "[REDACTED:api_key]" in text


def test_ordinary_text_and_numbers_survive() -> None:
    redactor = Redactor.from_patterns(DEFAULT_PATTERNS)
    text = "Order 12345 shipped on 2026-11-27 for $19.99; version 3.11.7"
    assert redactor.text(text) == (text, 0)


def test_payload_walks_messages_and_blocks_but_not_params() -> None:
    redactor = Redactor.from_patterns({"email": DEFAULT_PATTERNS["email"]})
    payload = {
        "messages": [
            {"role": "user", "content": "I am a@b.io"},
            {"role": "user", "content": [{"type": "text", "text": "and c@d.io"}]},
        ],
        "params": {"stop": ["x@y.io"]},
    }
    redacted, hits = redactor.payload(payload)
    assert hits == 2
    assert redacted["messages"][0]["content"] == "I am [REDACTED:email]"
    assert redacted["messages"][1]["content"][0]["text"] == "and [REDACTED:email]"
    assert redacted["params"] == {"stop": ["x@y.io"]}
