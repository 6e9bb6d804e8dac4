"""A judged verdict for a stored decision, shared by the alert tests that seed labels."""

from __future__ import annotations

from datetime import datetime

from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict


def judged_verdict(
    decision: Decision,
    *,
    score: float,
    strong_needed: int,
    finished_at: datetime | None = None,
) -> Verdict:
    """A done, forward (cheap-routed) verdict by judge `judge-a`, weight 1."""
    return Verdict(
        decision_id=decision.id or 0,
        router=decision.router,
        request_id=decision.request_id,
        ts=decision.ts,
        segment_value=decision.segment_value,
        routed_tier="cheap",
        direction="forward",
        inclusion_probability=1.0,
        router_score=score,
        cheaper_tier="cheap",
        stronger_tier="strong",
        cheaper_model="haiku",
        stronger_model="sonnet",
        judge_key="judge-a",
        judge_model="judge",
        prompt_hash="abc",
        status="done",
        strong_needed=strong_needed,
        cheap_acceptable=1 - strong_needed,
        next_attempt_at=decision.ts,
        created_at=decision.ts,
        finished_at=finished_at or decision.ts,
    )
