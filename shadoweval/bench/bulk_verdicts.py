"""The finished-verdict rows `bench analytics` and `bench scale` bulk-load (COPY or
executemany), built in one place so both benches label their decisions alike."""

from __future__ import annotations

from typing import Any

VERDICT_COLUMNS = (
    "decision_id, router, request_id, ts, segment_value, routed_tier, direction, "
    "inclusion_probability, router_score, score_semantics, cheaper_tier, stronger_tier, "
    "cheaper_model, stronger_model, judge_key, judge_model, prompt_hash, status, attempts, "
    "next_attempt_at, created_at, outcome, consistent, strong_needed, cheap_acceptable, "
    "score_delta, judge_cost_usd, judge_latency_ms, simulated"
)


def verdict_row(
    *,
    decision_id: int,
    router: str,
    request_id: str,
    ts: str,
    segment_value: str,
    router_score: float,
    harm: bool,
    inclusion_probability: float,
) -> tuple[Any, ...]:
    """A done forward verdict of a cheap-routed decision (haiku against sonnet, one judge),
    in `VERDICT_COLUMNS` order; `ts` as the loader's timestamp text."""
    return (
        decision_id,
        router,
        request_id,
        ts,
        segment_value,
        "cheap",
        "forward",
        inclusion_probability,
        router_score,
        "p_strong_needed",
        "cheap",
        "strong",
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "judge#bench",
        "judge",
        "bench",
        "done",
        1,
        ts,
        ts,
        "stronger_wins" if harm else "tie",
        True,
        int(harm),
        1 - int(harm),
        3.0 if harm else 0.0,
        0.002,
        800.0,
        False,
    )
