"""Sampling policy: the deterministic hash, Poisson inclusion, segment values."""

from __future__ import annotations

import hashlib
import math

import pytest

from shadoweval.sampling import policy


def test_hash_is_the_documented_sha256_prefix() -> None:
    digest = hashlib.sha256(b"router-a\x00req-1").digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64
    assert policy.sampling_hash("router-a", "req-1") == expected


def test_hash_depends_on_router_and_request_id() -> None:
    base = policy.sampling_hash("r", "1")
    assert policy.sampling_hash("r", "1") == base
    assert policy.sampling_hash("r", "2") != base
    assert policy.sampling_hash("s", "1") != base
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert policy.sampling_hash("ab", "c") != policy.sampling_hash("a", "bc")


@pytest.mark.parametrize("pi", [0.01, 0.1, 0.5])
def test_inclusion_rate_matches_pi(pi: float) -> None:
    n = 40_000
    hits = sum(policy.is_sampled("router", f"req-{i}", pi) for i in range(n))
    # Within 4.5 binomial standard deviations (fails by chance ~1 in 150,000 runs).
    assert abs(hits - n * pi) < 4.5 * math.sqrt(n * pi * (1 - pi))


def test_larger_pi_samples_a_superset() -> None:
    ids = [f"q-{i}" for i in range(2_000)]
    small = {i for i in ids if policy.is_sampled("r", i, 0.1)}
    large = {i for i in ids if policy.is_sampled("r", i, 0.3)}
    assert small < large


def test_edge_probabilities() -> None:
    ids = [f"e-{i}" for i in range(500)]
    assert not any(policy.is_sampled("r", i, 0.0) for i in ids)
    assert all(policy.is_sampled("r", i, 1.0) for i in ids)


def test_constant_rate_by_tier() -> None:
    rates = {"cheap": 0.2, "strong": 0.05}
    assert policy.constant_inclusion_probability("cheap", rates, 0.3) == 0.2
    assert policy.constant_inclusion_probability("mid", rates, 0.3) == 0.3


def test_segment_value_of() -> None:
    assert policy.segment_value_of({"topic": "code", "lang": "en"}, "topic", "(none)") == "code"
    assert policy.segment_value_of({"lang": "en"}, "topic", "(none)") == "(none)"
    assert policy.segment_value_of({"topic": ""}, "topic", "(none)") == "(none)"
