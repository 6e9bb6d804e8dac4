"""What the threshold advisor asks of the sampling planner: per segment, the score band above the
threshold in force whose labels would let the next step up be tested (issue 16).

The planner (`sampling.threshold_band`) sits below analytics in the layers, so the planning job
hands it `band_advice`. Clock: decision time; the window ends just before `as_of`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from shadoweval.analytics import thresholds as advisor
from shadoweval.config import Settings
from shadoweval.sampling.models import SamplingThresholdBand

NO_SHORTFALL = "no label shortfall above the threshold in force"


def band_advice(
    session: Session, settings: Settings, router: str, as_of: datetime
) -> list[SamplingThresholdBand]:
    """One row per segment of the router's advice over the decisions and labels before
    `as_of` at the configured ε and δ; a row with segment "" when there is no advice."""
    report = advisor.advise_thresholds(
        session=session,
        settings=settings,
        router=router,
        harm_budget=settings.threshold_harm_budget,
        delta=settings.threshold_delta,
        until=as_of - timedelta(microseconds=1),
    )
    if not report.applicable or report.threshold_in_force is None:
        reason = report.not_applicable_reason or "no advice"
        return [_row(router, as_of, segment_value="", reason=reason)]
    t0 = report.threshold_in_force
    rows: list[SamplingThresholdBand] = []
    for segment in report.segments:
        if segment.segment is None:
            continue  # the pooled advice: bands are bought per segment
        common: dict[str, Any] = {"tier": report.strong_tier, "threshold_in_force": t0}
        shortfall = segment.recommendation.shortfall
        if (
            shortfall is None
            or not shortfall.labels_more
            or not math.isclose(shortfall.score_low, t0)
            or shortfall.score_high <= t0
        ):
            reason = NO_SHORTFALL if shortfall is None else shortfall.reason
            rows.append(_row(router, as_of, segment_value=segment.segment, reason=reason, **common))
            continue
        # Strong-routed decisions a day scored in [t₀, t): the strong share's drop over it.
        share = {round(p.threshold, 9): p.strong_share for p in segment.curve}
        in_band = share.get(round(t0, 9), 0.0) - share.get(round(shortfall.score_high, 9), 0.0)
        rows.append(
            _row(
                router,
                as_of,
                segment_value=segment.segment,
                score_low=shortfall.score_low,
                score_high=shortfall.score_high,
                labels_now=shortfall.labels_now,
                labels_more=shortfall.labels_more,
                band_requests_per_day=max(0.0, in_band) * segment.requests_per_day,
                reason=shortfall.reason,
                **common,
            )
        )
    return rows or [_row(router, as_of, segment_value="", reason="no segment advice")]


def _row(router: str, as_of: datetime, *, reason: str, **values: Any) -> SamplingThresholdBand:
    return SamplingThresholdBand(as_of=as_of, router=router, reason=reason[:500], **values)
