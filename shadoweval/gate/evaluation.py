"""Pure: from the judged pairs of a gate run to its verdict per segment and overall.

The gate passes only when every tested segment and the traffic-weighted overall
test show non-inferiority (each at level α, with no multiplicity correction: a
release gate errs towards failing). Pairs whose judging failed are excluded
from the tests and counted; when more than `max_error_share` of the items
failed, the sample is no longer the one drawn (failures are rarely random:
long prompts time out) and the run is an error, not a verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from shadoweval.stats.noninferiority import LOSS, NonInferiority, PairedCounts, noninferiority_test

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class JudgedPair:
    """One replayed request after judging; `label` is None when it ended in error."""

    segment: str
    request_id: str
    label: int | None
    score_candidate: float | None = None
    score_replaced: float | None = None
    request_text: str = ""
    candidate_answer: str = ""
    replaced_answer: str = ""
    rationale: str = ""
    error: str | None = None


@dataclass(frozen=True)
class SegmentResult:
    segment: str
    traffic: int  # decisions routed to the replaced model: the segment's weight overall
    test: NonInferiority
    errors: int


@dataclass(frozen=True)
class GateEvaluation:
    router: str
    candidate_model: str
    replaced_model: str
    max_drop: float
    alpha: float
    segments: list[SegmentResult]
    overall: NonInferiority
    passed: bool
    items_total: int
    items_error: int
    cost_usd: float
    worst_examples: list[JudgedPair] = field(default_factory=list)

    @property
    def failing_segments(self) -> list[str]:
        return [s.segment for s in self.segments if not s.test.passed]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failing_segments"] = self.failing_segments
        return data


def error_share_exceeded(items_total: int, items_error: int, max_error_share: float) -> bool:
    return items_total == 0 or items_error > max_error_share * items_total


def evaluate(
    *,
    router: str,
    candidate_model: str,
    replaced_model: str,
    max_drop: float,
    alpha: float,
    pairs: Sequence[JudgedPair],
    segment_traffic: Mapping[str, int],
    cost_usd: float = 0.0,
) -> GateEvaluation:
    """Test every segment that was sampled, and all of them weighted by their traffic."""
    by_segment: dict[str, list[JudgedPair]] = {}
    for pair in pairs:
        by_segment.setdefault(pair.segment, []).append(pair)
    segments: list[SegmentResult] = []
    for segment in sorted(by_segment):
        judged = [p.label for p in by_segment[segment] if p.label is not None]
        segments.append(
            SegmentResult(
                segment=segment,
                traffic=int(segment_traffic.get(segment, 0)),
                test=noninferiority_test(
                    [PairedCounts.from_outcomes(judged)], margin=max_drop, alpha=alpha
                ),
                errors=sum(1 for p in by_segment[segment] if p.label is None),
            )
        )
    strata = [PairedCounts(s.test.wins, s.test.ties, s.test.losses) for s in segments]
    # A segment without recorded traffic (deleted since sampling) still counts by its sample.
    weights = [float(s.traffic or s.test.n) for s in segments]
    overall = noninferiority_test(strata, margin=max_drop, alpha=alpha, weights=weights)
    # Worst first: losses in failing segments, then by how much the judge preferred the
    # replaced answer.
    failing = {s.segment for s in segments if not s.test.passed}
    losses = [p for p in pairs if p.label == LOSS]
    losses.sort(
        key=lambda p: (
            p.segment not in failing,
            -((p.score_replaced or 0.0) - (p.score_candidate or 0.0)),
            p.request_id,
        )
    )
    return GateEvaluation(
        router=router,
        candidate_model=candidate_model,
        replaced_model=replaced_model,
        max_drop=max_drop,
        alpha=alpha,
        segments=segments,
        overall=overall,
        passed=overall.passed and all(s.test.passed for s in segments),
        items_total=len(pairs),
        items_error=sum(1 for p in pairs if p.label is None),
        cost_usd=cost_usd,
        worst_examples=losses[:MAX_EXAMPLES],
    )
