"""The threshold advisor: what each segment's threshold should be, read from the router's own
sampled labels over the last decision days (decision time), with a guarantee and a forecast.

Reads, for one router, the decisions of the window (score, tier, π, own cost), their finished
verdicts of one judge (`strong_needed`, forward and reverse) and the shadow run's cost on the
other tier, and hands them to `stats.thresholds`. The window ends at the router's decision-time
watermark (`clock.py`), never at the wall clock, so a replayed log gives the same advice.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import and_, select
from sqlmodel import Session

from shadoweval import clock
from shadoweval.analytics import threshold_window
from shadoweval.config import Settings
from shadoweval.exceptions import NotFound
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.shadow.models import RunKind, ShadowMode, ShadowRun, WorkStatus
from shadoweval.sql import table_of
from shadoweval.stats import threshold_bins, threshold_recommendation
from shadoweval.stats import thresholds as threshold_stats

DECISION_TABLE = table_of(Decision)
VERDICT_TABLE = table_of(Verdict)
SHADOW_TABLE = table_of(ShadowRun)

P_STRONG_NEEDED = "p_strong_needed"
# A batch-mode shadow is billed at half the realtime price (DESIGN.md, Sampling); the
# request routed to that tier would pay the realtime price.
BATCH_PRICE_FACTOR = 2.0


class ThresholdPoint(BaseModel):
    """One threshold of the grid; bands are simultaneous over the grid at `confidence`."""

    threshold: float
    strong_share: float = Field(description="share of requests routed strong at t (exact)")
    harm_rate: float = Field(description="share of all traffic served a cheap answer that loses")
    harm_low: float
    harm_high: float
    harm_rate_among_cheap: float | None = Field(description="harm / share served cheap")
    cost_per_request_usd: float = Field(description="USD")
    cost_low_usd: float
    cost_high_usd: float
    savings_vs_always_strong_usd: float = Field(description="USD per request")
    savings_vs_in_force_usd: float = Field(description="USD per request; positive saves")
    savings_vs_in_force_low_usd: float
    savings_vs_in_force_high_usd: float
    labels_in_band: int = Field(description="labels with a score between t and the threshold")


class LabelShortfallOut(BaseModel):
    score_low: float
    score_high: float
    labels_now: int
    labels_more: int | None = Field(description="null: more labels would not help")
    reason: str


class RecommendationOut(BaseModel):
    """Learn then Test: the cheapest threshold with harm ≤ harm_budget w.p. ≥ 1 − delta."""

    threshold: float | None = Field(description="null: no recommendation (see reason)")
    change: str = Field(description="raise | lower | keep | none")
    reason: str
    harm_rate: float | None = None
    harm_high: float | None = Field(default=None, description="upper end of its band")
    cost_per_request_usd: float | None = None
    savings_usd_per_day: float | None = Field(
        default=None,
        description="USD per decision day at the window's traffic against the threshold in "
        "force; negative: the move costs money",
    )
    savings_usd_per_day_low: float | None = None
    savings_usd_per_day_high: float | None = None
    tests_passed: int = Field(default=0, description="thresholds certified in the sequence")
    shortfall: LabelShortfallOut | None = None


class SegmentThresholds(BaseModel):
    segment: str | None = Field(description="segment value; null: all segments pooled")
    n_requests: int
    n_labels: int
    requests_per_day: float
    estimator: str = Field(description="hajek or doubly_robust (the lower-variance one)")
    curve: list[ThresholdPoint]
    recommendation: RecommendationOut


class ThresholdReport(BaseModel):
    router: str
    applicable: bool
    not_applicable_reason: str | None = Field(
        default=None, description="why no curve: no usable score, no threshold, …"
    )
    window_since: datetime | None = Field(default=None, description="decision time, exclusive")
    window_until: datetime | None = Field(default=None, description="the router's watermark")
    window_days: float
    judge_key: str | None = None
    threshold_in_force: float | None = None
    cheap_tier: str | None = None
    strong_tier: str | None = None
    harm_budget: float
    delta: float
    confidence: float
    excluded_requests: int = Field(
        default=0, description="decisions of the window without a p_strong_needed score"
    )
    segments: list[SegmentThresholds] = Field(default_factory=list)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def advise_thresholds(
    *,
    session: Session,
    settings: Settings,
    router: str,
    segment: str | None = None,
    harm_budget: float = 0.05,
    delta: float = 0.1,
    confidence: float = 0.95,
    until: datetime | None = None,
) -> ThresholdReport:
    """The curve and recommendation per segment (and pooled when no segment is asked for);
    the window ends at `until` (decision time; the sampling planner passes a fixed bound)
    or else at the router's watermark."""
    now = until or clock.decision_now(
        session, router, skew_seconds=settings.decision_clock_skew_seconds
    )
    if now is None:
        raise NotFound(f"router {router!r} has no decisions", router=router)
    days = float(settings.threshold_window_days)
    since = now - timedelta(days=days)
    report = ThresholdReport(
        router=router,
        applicable=False,
        window_since=since,
        window_until=now,
        window_days=days,
        harm_budget=harm_budget,
        delta=delta,
        confidence=confidence,
    )

    c = DECISION_TABLE.c
    window = [c.router == router, c.ts > since, c.ts <= now]
    if segment is not None:
        window.append(c.segment_value == segment)
    counts = threshold_window.window_counts(session, window, P_STRONG_NEEDED)
    usable = [*window, c.router_score.is_not(None), c.score_semantics == P_STRONG_NEEDED]
    reason = _not_applicable(counts, segment)
    t0 = threshold_window.threshold_in_force(session, usable) if reason is None else None
    if reason is None and t0 is None:
        reason = "the decisions carry no threshold in force"
    if reason is None and len(counts.tiers) > 2:
        reason = (
            f"{len(counts.tiers)} tiers ({', '.join(sorted(counts.tiers))}): the advisor "
            "handles one cheap/strong pair"
        )
    if reason is not None or t0 is None:
        report.not_applicable_reason = reason
        return report

    labels = _labels(session, router=router, since=since, until=now)
    judge_key = _judge_with_most_labels(labels)
    labels = {k: v for k, v in labels.items() if v["judge_key"] == judge_key}
    cheap_tier, strong_tier = _tier_pair(labels, counts.tiers)
    report.applicable = True
    report.judge_key = judge_key
    report.threshold_in_force = t0
    report.cheap_tier, report.strong_tier = cheap_tier, strong_tier
    report.excluded_requests = counts.total - counts.usable
    report.segments = _segments_advice(
        session,
        usable,
        labels,
        counts.segments,
        settings=settings,
        pooled=segment is None,
        t0=t0,
        strong_tier=strong_tier,
        days=days,
        harm_budget=harm_budget,
        delta=delta,
        confidence=confidence,
    )
    return report


def _not_applicable(counts: threshold_window.WindowCounts, segment: str | None) -> str | None:
    if not counts.total:
        return "no decisions in the window" + (
            f" for segment {segment!r}" if segment is not None else ""
        )
    if not counts.scored:
        return (
            "the router logs no router_score (e.g. LiteLLM model groups): there is no score "
            "to put a threshold on"
        )
    if not counts.usable:
        return (
            f"router_score means {counts.meaning!r}, not {P_STRONG_NEEDED!r}: only a P(strong "
            "needed) score routed by 'strong when score ≥ threshold' has a threshold to advise"
        )
    return None


def _labels(
    session: Session, *, router: str, since: datetime, until: datetime
) -> dict[int, dict[str, Any]]:
    """Finished verdicts of the window by decision id, with the shadow's cost (USD, at the
    realtime price) on the other tier."""
    v = VERDICT_TABLE.c
    r = SHADOW_TABLE.c
    query = (
        select(
            v.decision_id,
            v.judge_key,
            v.strong_needed,
            v.inclusion_probability,
            v.cheaper_tier,
            v.stronger_tier,
            r.cost_usd,
            r.mode,
            r.status,
        )
        .select_from(
            VERDICT_TABLE.outerjoin(
                SHADOW_TABLE,
                and_(r.decision_id == v.decision_id, r.kind == RunKind.SHADOW.value),
            )
        )
        .where(
            v.router == router,
            v.ts > since,
            v.ts <= until,
            v.status == VerdictStatus.DONE,
            v.strong_needed.is_not(None),
            v.inclusion_probability > 0,
        )
    )
    out: dict[int, dict[str, Any]] = {}
    for row in session.execute(query):
        other_cost = math.nan
        if row.cost_usd is not None and row.status == WorkStatus.SUCCEEDED:
            factor = BATCH_PRICE_FACTOR if row.mode == ShadowMode.BATCH else 1.0
            other_cost = float(row.cost_usd) * factor
        out[int(row.decision_id)] = {
            "judge_key": row.judge_key,
            "strong_needed": float(row.strong_needed),
            "pi": float(row.inclusion_probability),
            "pair": (row.cheaper_tier, row.stronger_tier),
            "other_cost": other_cost,
        }
    return out


def _judge_with_most_labels(labels: dict[int, dict[str, Any]]) -> str | None:
    # Verdicts of two judges are never pooled (DESIGN.md, Judge).
    counts = Counter(v["judge_key"] for v in labels.values())
    return counts.most_common(1)[0][0] if counts else None


def _tier_pair(
    labels: dict[int, dict[str, Any]], tiers: dict[str, tuple[int, float]]
) -> tuple[str, str]:
    """(cheap, strong) from the verdicts' tier pair; without verdicts, by name or mean cost
    (`tiers`: decisions and their summed cost per tier)."""
    pairs = Counter(v["pair"] for v in labels.values())
    if pairs:
        cheap, strong = pairs.most_common(1)[0][0]
        return str(cheap), str(strong)
    if "strong" in tiers or "cheap" in tiers:
        return "cheap", "strong"
    ordered = sorted(tiers, key=lambda tier: tiers[tier][1] / tiers[tier][0])
    return ordered[0], ordered[-1]


def _segments_advice(
    session: Session,
    usable: list[Any],
    labels: dict[int, dict[str, Any]],
    segment_values: list[str],
    *,
    settings: Settings,
    pooled: bool,
    t0: float,
    strong_tier: str,
    days: float,
    harm_budget: float,
    delta: float,
    confidence: float,
) -> list[SegmentThresholds]:
    """The curve and advice per segment, and pooled when asked and there are several.

    Only the labelled decisions come back one by one; the rest of the window enters as
    sums per (segment, routed tier, score bin) that the database adds up
    (`threshold_window.binned_traffic`, `stats.threshold_bins`)."""
    grid = threshold_stats.default_grid(t0)
    rows = threshold_window.labelled_decisions(session, usable, labels)
    groups: list[str | None] = list(segment_values)
    if pooled and len(segment_values) > 1:
        groups.append(None)
    units = {
        value: _labelled_units(rows, labels, segment_values, value, strong_tier) for value in groups
    }
    coefficients = {value: threshold_bins.outcome_coefficients(u) for value, u in units.items()}
    traffic = threshold_window.binned_traffic(
        session,
        usable,
        grid=[float(t) for t in grid],
        strong_tier=strong_tier,
        segments=segment_values,
        coefficients=coefficients,
    )
    advice = []
    for value in groups:
        curve = threshold_bins.threshold_curve_from_bins(
            traffic=traffic[value],
            labelled=units[value],
            grid=grid,
            coefficients=coefficients[value],
            threshold_in_force=t0,
            replicates=settings.threshold_bootstrap_replicates,
            confidence=confidence,
        )
        recommendation = threshold_recommendation.recommend(
            curve,
            harm_budget=harm_budget,
            risk=delta,
            min_labels=settings.threshold_min_labels,
            min_band_labels=settings.threshold_min_band_labels,
        )
        per_day = curve.n_requests / days
        advice.append(
            SegmentThresholds(
                segment=value,
                n_requests=curve.n_requests,
                n_labels=curve.n_labels,
                requests_per_day=per_day,
                estimator=curve.estimator,
                curve=curve_points(curve),
                recommendation=_recommendation_out(recommendation, per_day),
            )
        )
    return advice


def _labelled_units(
    rows: list[Any],
    labels: dict[int, dict[str, Any]],
    segment_values: list[str],
    value: str | None,
    strong_tier: str,
) -> threshold_bins.LabelledUnits:
    """The labelled decisions of one segment (all, pooled: None), strata by segment."""
    members = [r for r in rows if value is None or r.segment_value == value]
    found = [labels[int(r.id)] for r in members]
    code = {v: i for i, v in enumerate(segment_values if value is None else [value])}
    return threshold_bins.LabelledUnits(
        score=np.array([r.router_score for r in members], dtype=float),
        strong_routed=np.array([r.tier == strong_tier for r in members], dtype=bool),
        cost_usd=np.array(
            [math.nan if r.cost_usd is None else r.cost_usd for r in members], dtype=float
        ),
        strong_needed=np.array([f["strong_needed"] for f in found], dtype=float),
        other_cost_usd=np.array([f["other_cost"] for f in found], dtype=float),
        inclusion_probability=np.array([f["pi"] for f in found], dtype=float),
        stratum=np.array([code[r.segment_value] for r in members], dtype=np.int64),
    )


def curve_points(curve: threshold_stats.ThresholdCurve) -> list[ThresholdPoint]:
    return [
        ThresholdPoint(
            threshold=float(curve.threshold[j]),
            strong_share=float(curve.strong_share[j]),
            harm_rate=float(curve.harm_rate[j]),
            harm_low=float(curve.harm_low[j]),
            harm_high=float(curve.harm_high[j]),
            harm_rate_among_cheap=_finite(float(curve.harm_rate_among_cheap[j])),
            cost_per_request_usd=float(curve.cost_per_request_usd[j]),
            cost_low_usd=float(curve.cost_low_usd[j]),
            cost_high_usd=float(curve.cost_high_usd[j]),
            savings_vs_always_strong_usd=float(curve.savings_vs_always_strong_usd[j]),
            savings_vs_in_force_usd=float(curve.savings_vs_in_force_usd[j]),
            savings_vs_in_force_low_usd=float(curve.savings_vs_in_force_low_usd[j]),
            savings_vs_in_force_high_usd=float(curve.savings_vs_in_force_high_usd[j]),
            labels_in_band=int(curve.labels_in_band[j]),
        )
        for j in range(curve.threshold.size)
    ]


def _recommendation_out(
    advice: threshold_recommendation.Recommendation, per_day: float
) -> RecommendationOut:
    def daily(value: float | None) -> float | None:
        return None if value is None else value * per_day

    shortfall = advice.shortfall
    return RecommendationOut(
        threshold=advice.threshold,
        change=advice.change,
        reason=advice.reason,
        harm_rate=advice.harm_rate,
        harm_high=advice.harm_high,
        cost_per_request_usd=advice.cost_per_request_usd,
        savings_usd_per_day=daily(advice.savings_vs_in_force_usd),
        savings_usd_per_day_low=daily(advice.savings_vs_in_force_low_usd),
        savings_usd_per_day_high=daily(advice.savings_vs_in_force_high_usd),
        tests_passed=sum(p <= advice.risk for p in advice.p_values),
        shortfall=None
        if shortfall is None
        else LabelShortfallOut(
            score_low=shortfall.score_low,
            score_high=shortfall.score_high,
            labels_now=shortfall.labels_now,
            labels_more=shortfall.labels_more,
            reason=shortfall.reason,
        ),
    )


def format_report(report: ThresholdReport) -> str:
    """The advice as text for the CLI: one block per segment."""
    if not report.applicable:
        return f"{report.router}: not applicable: {report.not_applicable_reason}"
    lines = [
        f"{report.router}: threshold in force {report.threshold_in_force:.3f} "
        f"({report.cheap_tier} below, {report.strong_tier} at or above); "
        f"{report.window_days:g} decision days to {report.window_until:%Y-%m-%d %H:%M} UTC; "
        f"judge {report.judge_key}; harm budget ε = {report.harm_budget:g}, "
        f"risk δ = {report.delta:g}"
    ]
    for segment in report.segments:
        advice = segment.recommendation
        name = segment.segment if segment.segment is not None else "(all segments)"
        head = (
            f"  {name}: {segment.n_requests} requests ({segment.requests_per_day:.0f}/day), "
            f"{segment.n_labels} labels, {segment.estimator}"
        )
        if advice.threshold is None:
            lines.append(f"{head}\n    no recommendation: {advice.reason}")
        else:
            saving = advice.savings_usd_per_day or 0.0
            lines.append(
                f"{head}\n    recommended threshold {advice.threshold:.3f} ({advice.change}): "
                f"harm {100 * (advice.harm_rate or 0):.2f} % of traffic (band up to "
                f"{100 * (advice.harm_high or 0):.2f} %), {'saves' if saving >= 0 else 'costs'} "
                f"${abs(saving):.2f}/day (band ${advice.savings_usd_per_day_low or 0:.2f} to "
                f"${advice.savings_usd_per_day_high or 0:.2f}); {advice.reason}"
            )
        shortfall = advice.shortfall
        if shortfall is not None:
            more = (
                "more labels would not help"
                if shortfall.labels_more is None
                else f"about {shortfall.labels_more} more labels"
            )
            lines.append(
                f"    {shortfall.reason}: {shortfall.labels_now} labels with a score in "
                f"[{shortfall.score_low:.3f}, {shortfall.score_high:.3f}); {more}"
            )
    return "\n".join(lines)
