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
from shadoweval.config import Settings
from shadoweval.exceptions import NotFound
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.shadow.models import RunKind, ShadowMode, ShadowRun, WorkStatus
from shadoweval.sql import table_of
from shadoweval.stats import threshold_recommendation
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
) -> ThresholdReport:
    """The curve and recommendation per segment (and pooled when no segment is asked for)."""
    now = clock.decision_now(session, router, skew_seconds=settings.decision_clock_skew_seconds)
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
    query = select(
        c.id,
        c.ts,
        c.tier,
        c.router_score,
        c.score_semantics,
        c.threshold,
        c.segment_value,
        c.cost_usd,
    ).where(c.router == router, c.ts > since, c.ts <= now)
    if segment is not None:
        query = query.where(c.segment_value == segment)
    rows = session.execute(query).all()
    if not rows:
        report.not_applicable_reason = "no decisions in the window" + (
            f" for segment {segment!r}" if segment is not None else ""
        )
        return report
    scored = [r for r in rows if r.router_score is not None]
    usable = [r for r in scored if r.score_semantics == P_STRONG_NEEDED]
    if not scored:
        report.not_applicable_reason = (
            "the router logs no router_score (e.g. LiteLLM model groups): there is no score "
            "to put a threshold on"
        )
        return report
    if not usable:
        meaning = Counter(r.score_semantics for r in scored).most_common(1)[0][0]
        report.not_applicable_reason = (
            f"router_score means {meaning!r}, not {P_STRONG_NEEDED!r}: only a P(strong "
            "needed) score routed by 'strong when score ≥ threshold' has a threshold to advise"
        )
        return report
    with_threshold = [r for r in usable if r.threshold is not None]
    if not with_threshold:
        report.not_applicable_reason = "the decisions carry no threshold in force"
        return report
    tiers = {r.tier for r in usable}
    if len(tiers) > 2:
        report.not_applicable_reason = (
            f"{len(tiers)} tiers ({', '.join(sorted(tiers))}): the advisor handles one "
            "cheap/strong pair"
        )
        return report
    # The threshold in force is the one on the latest decision that states one.
    t0 = float(max(with_threshold, key=lambda r: (r.ts, r.id)).threshold)

    labels = _labels(session, router=router, since=since, until=now)
    judge_key = _judge_with_most_labels(labels)
    labels = {k: v for k, v in labels.items() if v["judge_key"] == judge_key}
    cheap_tier, strong_tier = _tier_pair(labels, tiers, usable)
    report.applicable = True
    report.judge_key = judge_key
    report.threshold_in_force = t0
    report.cheap_tier, report.strong_tier = cheap_tier, strong_tier
    report.excluded_requests = len(rows) - len(usable)

    segment_values = sorted({r.segment_value for r in usable})
    groups: list[tuple[str | None, list[Any]]] = [
        (value, [r for r in usable if r.segment_value == value]) for value in segment_values
    ]
    if segment is None and len(segment_values) > 1:
        groups.append((None, usable))
    for value, members in groups:
        report.segments.append(
            _segment_advice(
                value,
                members,
                labels,
                settings=settings,
                t0=t0,
                strong_tier=strong_tier,
                days=days,
                harm_budget=harm_budget,
                delta=delta,
                confidence=confidence,
            )
        )
    return report


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
    labels: dict[int, dict[str, Any]], tiers: set[str], decisions: list[Any]
) -> tuple[str, str]:
    """(cheap, strong) from the verdicts' tier pair; without verdicts, by name or mean cost."""
    pairs = Counter(v["pair"] for v in labels.values())
    if pairs:
        cheap, strong = pairs.most_common(1)[0][0]
        return str(cheap), str(strong)
    if "strong" in tiers or "cheap" in tiers:
        return "cheap", "strong"
    mean_cost = {
        tier: float(np.mean([d.cost_usd or 0.0 for d in decisions if d.tier == tier]))
        for tier in tiers
    }
    ordered = sorted(mean_cost, key=lambda tier: mean_cost[tier])
    return ordered[0], ordered[-1]


def _segment_advice(
    value: str | None,
    members: list[Any],
    labels: dict[int, dict[str, Any]],
    *,
    settings: Settings,
    t0: float,
    strong_tier: str,
    days: float,
    harm_budget: float,
    delta: float,
    confidence: float,
) -> SegmentThresholds:
    n = len(members)
    found = [labels.get(int(d.id)) for d in members]
    labelled = np.array([f is not None for f in found])
    segment_codes = {v: i for i, v in enumerate(sorted({d.segment_value for d in members}))}
    curve = threshold_stats.threshold_curve(
        score=np.array([d.router_score for d in members], dtype=float),
        strong_routed=np.array([d.tier == strong_tier for d in members]),
        cost_usd=np.array(
            [math.nan if d.cost_usd is None else d.cost_usd for d in members], dtype=float
        ),
        labelled=labelled,
        strong_needed=np.array([math.nan if f is None else f["strong_needed"] for f in found]),
        other_cost_usd=np.array([math.nan if f is None else f["other_cost"] for f in found]),
        inclusion_probability=np.array([0.0 if f is None else f["pi"] for f in found]),
        threshold_in_force=t0,
        stratum=np.array([segment_codes[d.segment_value] for d in members], dtype=np.int64),
        replicates=settings.threshold_bootstrap_replicates,
        confidence=confidence,
    )
    advice = threshold_recommendation.recommend(
        curve,
        harm_budget=harm_budget,
        risk=delta,
        min_labels=settings.threshold_min_labels,
        min_band_labels=settings.threshold_min_band_labels,
    )
    per_day = n / days
    return SegmentThresholds(
        segment=value,
        n_requests=n,
        n_labels=curve.n_labels,
        requests_per_day=per_day,
        estimator=curve.estimator,
        curve=curve_points(curve),
        recommendation=_recommendation_out(advice, per_day),
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
