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


PREFILTER_PATTERNS = {
    **DEFAULT_PATTERNS,
    "ticket": r"TICKET-(?:[A-Z]{2,3}-)?\d{4,}",
    "negated": r"<[^<>\s]{3,}>",
    "grouped": r"(?:ab|cd)(x\d)+y",
    "lookaround": r"(?<=id=)\w{6}(?!\w)",
    "caseless": r"(?i)secret\d",
    "possessive": r"q++z",
    "long_run": r"[a-z]{12,}",
    "run_with_space": r"[a-z ]{14}",
}


def test_the_prefilter_never_skips_a_text_its_pattern_matches() -> None:
    """Random texts of fragments that make every pattern match sometimes, and miss often."""
    import random

    rng = random.Random(7)
    fragments = [
        *"ab cdxyzq@.+-_()<>7\n",
        *[
            "555",
            "0100",
            "+1",
            "(415)",
            "TICKET-",
            "AB-",
            "1234",
            "id=",
            "x1",
            "abcdef",
            "cdx1",
            "x2y",
        ],
        *["secret", "SECRET", "sk-", "abcdefghijklmnopq", "example", ".com", "qq", "Ω"],
        *["\u2028", "\xa0", "\u3000", "\t"],  # whitespace str.split splits on
    ]
    redactor = Redactor.from_patterns(PREFILTER_PATTERNS)
    matched = dict.fromkeys(PREFILTER_PATTERNS, 0)
    for _ in range(40_000):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 16)))
        for name, pattern, prefilter in redactor.patterns:
            if pattern.search(text):
                matched[name] += 1
                assert not prefilter.rules_out(text), (name, text)
    # Each pattern matched often enough for the check to mean something.
    assert all(count >= 10 for count in matched.values()), matched


def test_the_prefilter_skips_default_patterns_on_prose_without_their_characters() -> None:
    redactor = Redactor.from_patterns(DEFAULT_PATTERNS)
    prefilters = {name: prefilter for name, _pattern, prefilter in redactor.patterns}
    prose = "the router sent the cheap model a question about a refund"
    assert prefilters["email"].rules_out(prose)  # no "@"
    assert prefilters["phone"].rules_out(prose)  # no digit
    assert not prefilters["email"].rules_out("write to a@b.io")
    assert not prefilters["phone"].rules_out("call 555 0100")
    # api_key needs 16 key characters in a row: no word of prose is that long.
    assert prefilters["api_key"].run_without_space == 16
    assert prefilters["api_key"].rules_out(prose + " sk-short")
    assert not prefilters["api_key"].rules_out(prose + "\u2028sk-abcdefghijklmnop1234")
