"""The weighted (Hájek) harm rate of forward pairs from the verdict window snapshots.

One reduction for every place that shows "the harm rate": `/metrics`
(`shadoweval_harm_ratio`) and the `quality_drop` alert, so on-call reads the same
number, with the same 95 % interval, as the hour-resolution rows of `/v1/segments`
for the same hours (labels weighted by 1/π, never a plain share of labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
from sqlalchemy import Float, Integer, Table, case, func, literal, select
from sqlalchemy import cast as cast_to
from sqlalchemy.orm import Session

from shadoweval.analytics.models import VerdictWindowSnapshot
from shadoweval.stats.expected_harm import (
    BootstrappedMap,
    ExpectedHarm,
    GapTest,
    bootstrap_calibration,
    expected_harm_of_weighted_scores,
    expected_observed_gap,
)
from shadoweval.stats.ppi import PpiEstimate, ppi_harm_rate_from_sums
from shadoweval.stats.rates import (
    RateEstimate,
    WeightedSums,
    hajek_rate_from_sums,
    process_rate_from_sums,
)

SNAPSHOT_TABLE = cast(Table, VerdictWindowSnapshot.__table__)  # type: ignore[attr-defined]

HarmKey = tuple[str, str, str]  # router, segment value, judge key


def label_sums(labels: Any, w: Any, w2: Any, wy: Any, vw: Any, vwy: Any) -> WeightedSums:
    """The `WeightedSums` of summed snapshot columns (NULL as 0) for the 0/1 harm label."""
    return WeightedSums(
        int(labels or 0),
        float(w or 0),
        float(w2 or 0),
        float(wy or 0),
        float(vw or 0),
        float(vwy or 0),
        float(vwy or 0),  # Σv·y² = Σv·y for 0/1 labels
    )


def harm_rates(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    router: str | None = None,
    segment: str | None = None,
    judge_key: str | None = None,
    level: str = "finite",
) -> dict[HarmKey, RateEstimate]:
    """Per (router, segment, judge): the Hájek harm rate of the hour windows starting in
    [since, until), forward pairs only (the cheap tier's answer against the strong one's).

    `level` "process" gives the process-level (superpopulation) interval of
    `rates.process_rate_from_sums`, the one `/v1/segments` and alert bodies show;
    "finite" the finite-population one (`/metrics` still reads it)."""
    if level not in ("finite", "process"):
        raise ValueError(f"level must be finite or process, got {level!r}")
    reduce = process_rate_from_sums if level == "process" else hajek_rate_from_sums
    s = SNAPSHOT_TABLE.c
    query = (
        select(
            s.router,
            s.segment_value,
            s.judge_key,
            func.sum(s.labels),
            func.sum(s.sum_w),
            func.sum(s.sum_w2),
            func.sum(s.sum_wy),
            func.sum(s.sum_vw),
            func.sum(s.sum_vwy),
        )
        .where(s.window == "hour", s.direction == "forward")
        .group_by(s.router, s.segment_value, s.judge_key)
    )
    for column, value in ((s.router, router), (s.segment_value, segment), (s.judge_key, judge_key)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(s.window_start >= since)
    if until is not None:
        query = query.where(s.window_start < until)
    out: dict[HarmKey, RateEstimate] = {}
    for key_router, key_segment, key_judge, labels, w, w2, wy, vw, vwy in session.execute(query):
        sums = label_sums(labels, w, w2, wy, vw, vwy)
        out[(key_router, key_segment, key_judge)] = reduce(sums)
    return out


def first_hour_with_labels_after(
    session: Session, *, router: str, segment: str, judge_key: str, skip: int
) -> datetime | None:
    """The start of the hour window holding the (skip+1)-th forward label of a segment,
    in decision time: where the sequential test's monitoring began after its `skip`
    reference labels. None while there are not that many labels."""
    s = SNAPSHOT_TABLE.c
    rows = session.execute(
        select(s.window_start, s.labels)
        .where(
            s.window == "hour",
            s.direction == "forward",
            s.router == router,
            s.segment_value == segment,
            s.judge_key == judge_key,
            s.labels > 0,
        )
        .order_by(s.window_start)
    )
    seen = 0
    for window_start, labels in rows:
        seen += int(labels)
        if seen > skip:
            return cast(datetime, window_start)
    return None


# --- human-corrected (PPI) and label-free expected harm --------------------------------------

# Labels a segment needs before it gets its own score → P(harm) map; below it the router's
# labels over every segment calibrate it.
MIN_SEGMENT_CALIBRATION_LABELS = 200
# The newest labels a calibration map is fitted on: bounds the work of a request.
MAX_CALIBRATION_LABELS = 5000


@dataclass(frozen=True)
class HumanSample:
    """The reviewed pairs of the uniform review sample in one (router, segment, judge) row."""

    judge_label: list[float]
    human_label: list[float]
    inclusion_probability: list[float]
    review_probability: list[float]


def _ceil_hour(ts: datetime) -> datetime:
    floor = ts.replace(minute=0, second=0, microsecond=0)
    return floor if floor == ts else floor + timedelta(hours=1)


def review_sample_labels(
    session: Session,
    *,
    review_probability: float,
    since: datetime | None = None,
    until: datetime | None = None,
    router: str | None = None,
    segment: str | None = None,
    by_hour: bool = False,
) -> dict[tuple[str, str, str, datetime | None], HumanSample]:
    """Per (router, segment, judge, hour or None): forward pairs of the uniform review
    sample that have a human label, as PPI reads them. One label per pair (the first
    stored), reduced like the judge's (`feedback.labels`): harm = 1 − served acceptable.
    Only labels the uniform queue served count (`review_label.queue`): the stratified and
    escalation queues' labels, and labels from before the queue was recorded, are not a
    known-probability sample. A uniform label on a pair that is not in the sample at
    `review_probability` (the setting was lowered since) is left out too. With a window,
    the pairs of the hour windows starting in [since, until), the windows `/v1/segments`
    sums over."""
    from shadoweval.feedback.labels import review_served_acceptable
    from shadoweval.feedback.models import ReviewLabel, ReviewQueueMode
    from shadoweval.feedback.queue import in_review_sample
    from shadoweval.judge.models import Verdict, VerdictStatus

    verdicts = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
    labels = cast(Table, ReviewLabel.__table__)  # type: ignore[attr-defined]
    v = verdicts.c
    query = (
        select(
            v.id,
            v.router,
            v.request_id,
            v.segment_value,
            v.judge_key,
            v.strong_needed,
            v.inclusion_probability,
            labels.c.label,
            v.ts,
        )
        .join(labels, labels.c.verdict_id == v.id)
        .where(
            v.direction == "forward",
            v.status == VerdictStatus.DONE,
            v.strong_needed.is_not(None),
            v.inclusion_probability > 0,
            labels.c.queue == ReviewQueueMode.UNIFORM,
        )
        .order_by(labels.c.id)
    )
    for column, value in ((v.router, router), (v.segment_value, segment)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(v.ts >= _ceil_hour(since))
    if until is not None:
        query = query.where(v.ts < _ceil_hour(until))
    seen: set[int] = set()
    out: dict[tuple[str, str, str, datetime | None], HumanSample] = {}
    for verdict_id, r, request_id, seg, judge, strong_needed, pi, label, ts in session.execute(
        query
    ).all():
        if verdict_id in seen or not in_review_sample(r, request_id, review_probability):
            continue
        seen.add(verdict_id)
        hour = ts.replace(minute=0, second=0, microsecond=0) if by_hour else None
        sample = out.setdefault((r, seg, judge, hour), HumanSample([], [], [], []))
        sample.judge_label.append(float(strong_needed))
        sample.human_label.append(float(1 - review_served_acceptable(label, "forward")))
        sample.inclusion_probability.append(float(pi))
        sample.review_probability.append(review_probability)
    return out


def ppi_rate(sums: WeightedSums, sample: HumanSample | None) -> PpiEstimate:
    """PPI++ harm rate of a row: its judge sums and its uniform-sample human labels."""
    if sample is None:
        sample = HumanSample([], [], [], [])
    return ppi_harm_rate_from_sums(
        sums,
        sample.judge_label,
        sample.human_label,
        sample.inclusion_probability,
        sample.review_probability,
    )


@dataclass(frozen=True)
class CalibrationLabels:
    score: list[float]
    label: list[float]
    inclusion_probability: list[float]
    scope: str  # "segment" or "router"


def calibration_labels(
    session: Session,
    *,
    router: str,
    segment: str,
    judge_key: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> CalibrationLabels:
    """The newest judged forward pairs with a router score in [since, until) (decision time),
    of the segment when it has MIN_SEGMENT_CALIBRATION_LABELS, else of the whole router."""
    from shadoweval.judge.models import Verdict, VerdictStatus

    verdicts = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
    v = verdicts.c

    def fetch(by_segment: bool) -> list[Any]:
        query = select(v.router_score, v.strong_needed, v.inclusion_probability).where(
            v.router == router,
            v.judge_key == judge_key,
            v.direction == "forward",
            v.status == VerdictStatus.DONE,
            v.strong_needed.is_not(None),
            v.router_score.is_not(None),
            v.inclusion_probability > 0,
        )
        if by_segment:
            query = query.where(v.segment_value == segment)
        if since is not None:
            query = query.where(v.ts >= since)
        if until is not None:
            query = query.where(v.ts < until)
        query = query.order_by(v.ts.desc(), v.id.desc()).limit(MAX_CALIBRATION_LABELS)
        return list(session.execute(query))

    rows, scope = fetch(True), "segment"
    if len(rows) < MIN_SEGMENT_CALIBRATION_LABELS:
        rows, scope = fetch(False), "router"
    return CalibrationLabels(
        [min(1.0, max(0.0, float(r[0]))) for r in rows],
        [float(r[1]) for r in rows],
        [float(r[2]) for r in rows],
        scope,
    )


# Expected harm reads the window's cheap-routed scores in bins this wide: a segment's
# hundreds of thousands of decisions become at most 10,001 (bin, count, mean score) rows,
# and each bootstrap map predicts at the bins' means. Within a bin the map moves by at
# most its slope × 1e-4 (an isotonic step falls wholly on one side), far inside the
# bootstrap interval; reading every score took 16 s for /v1/segments?expected=true at
# 1 M decisions.
SCORE_BINS = 10_000


@dataclass(frozen=True)
class ScoreBins:
    """Cheap-routed decisions grouped by router score: per bin its group (the hour start,
    or None), decision count and mean score (clamped to [0, 1])."""

    groups: list[Any]
    counts: np.ndarray[Any, Any]
    scores: np.ndarray[Any, Any]


def cheap_routed_score_bins(
    session: Session,
    *,
    router: str,
    segment: str,
    since: datetime,
    until: datetime,
    by_hour: bool = False,
) -> ScoreBins:
    """The segment's cheap-routed decisions in [since, until) with a router score, every
    decision, sampled or not (the tiers forward pairs came from), counted per score bin
    (`SCORE_BINS` over [0, 1]) and, with `by_hour`, per UTC hour of decision ts: grouped
    in SQL, so no per-decision row reaches Python."""
    from shadoweval.db import aware_utc
    from shadoweval.ingest.models import Decision
    from shadoweval.judge.models import Verdict
    from shadoweval.sql import hour_start

    decisions = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
    verdicts = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
    cheap_tiers = (
        select(verdicts.c.routed_tier)
        .where(verdicts.c.router == router, verdicts.c.direction == "forward")
        .distinct()
    )
    d = decisions.c
    clamped = case(
        (d.router_score < 0.0, literal(0.0)),
        (d.router_score > 1.0, literal(1.0)),
        else_=cast_to(d.router_score, Float),
    )
    score_bin = cast_to(clamped * SCORE_BINS, Integer)
    hour = hour_start(session.connection(), d.ts) if by_hour else literal(None)
    query = (
        select(hour, func.count(), func.avg(clamped))
        .where(
            d.router == router,
            d.segment_value == segment,
            d.tier.in_(cheap_tiers),
            d.router_score.is_not(None),
            d.ts >= since,
            d.ts < until,
        )
        .group_by(*((hour,) if by_hour else ()), score_bin)
    )
    rows = session.execute(query).all()
    return ScoreBins(
        groups=[aware_utc(row[0]) for row in rows],
        counts=np.array([row[1] for row in rows], dtype=np.float64),
        scores=np.array([row[2] for row in rows], dtype=np.float64),
    )


def bootstrap(labels: CalibrationLabels, *, n_boot: int) -> BootstrappedMap | None:
    """The score → P(harm) map of these labels and its bootstrap refits; None without labels."""
    if not labels.label:
        return None
    return bootstrap_calibration(
        labels.score, labels.label, labels.inclusion_probability, n_boot=n_boot
    )


def expected_harm(
    fitted: BootstrappedMap | None, bins: ScoreBins, *, confidence: float = 0.95
) -> dict[Any, ExpectedHarm]:
    """Expected harm per group of binned decisions (e.g. hour): the count-weighted mean of
    P(harm | bin's mean score), with the bootstrap percentile interval over the map's
    refits, the same refits for every group (`stats.expected_harm.expected_harm_by_group`
    over the bins); nothing without a map or decisions. Pure."""
    if fitted is None or not bins.counts.size:
        return {}
    return expected_harm_of_weighted_scores(
        fitted, bins.groups, bins.scores, bins.counts, confidence=confidence
    )


def gap_test(
    reference: CalibrationLabels, observed: CalibrationLabels, fitted: BootstrappedMap | None
) -> GapTest | None:
    """Expected vs observed harm on the window's labels, the map (`fitted`) fitted on the
    earlier `reference` labels."""
    if fitted is None or not reference.label or not observed.label:
        return None
    return expected_observed_gap(
        [],
        [],
        [],
        observed.score,
        observed.label,
        observed.inclusion_probability,
        bootstrapped=fitted,
    )
