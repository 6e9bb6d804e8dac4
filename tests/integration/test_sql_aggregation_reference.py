"""Today's Python paths, kept as the reference the SQL aggregation is compared with
(tests/integration/test_sql_aggregation.py): the economics and threshold reads as they
were before issue 19 §4, pulling every decision of the window into Python, and the
snapshot folds written out row by row with `snapshots.contribution`."""

# ruff: noqa
from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlmodel import Session

from shadoweval import clock
from shadoweval.analytics import calibration_service, snapshots
from shadoweval.analytics import thresholds as service
from shadoweval.config import Settings
from shadoweval.exceptions import NotFound
from shadoweval.providers.pricing import PricingTable
from shadoweval.stats import economics, threshold_recommendation
from shadoweval.stats import thresholds as threshold_stats

DECISION_TABLE = service.DECISION_TABLE
P_STRONG_NEEDED = service.P_STRONG_NEEDED


def reference_verdict_snapshots(
    verdicts: list[dict[str, Any]],
) -> dict[tuple[Any, ...], dict[str, float]]:
    """What `aggregate_finished_verdicts` adds, verdict by verdict (its former loop)."""
    totals: dict[tuple[Any, ...], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(snapshots.SNAPSHOT_SUMS, 0.0)
    )
    for verdict in verdicts:
        sums = snapshots.contribution(verdict)
        for window, start_of in snapshots.WINDOWS.items():
            key = (
                verdict["router"],
                verdict["segment_value"],
                verdict["direction"],
                verdict["judge_key"],
                window,
                start_of(verdict["ts"]),
            )
            for name, value in sums.items():
                totals[key][name] += value
    return dict(totals)


def reference_router_economics_report(
    *,
    session: Session,
    pricing: PricingTable,
    router: str,
    since: datetime | None = None,
    until: datetime | None = None,
    strong_tier: str = "strong",
    strong_model: str | None = None,
) -> calibration_service.EconomicsReport:
    """Realized cost against the always-strong baseline, savings, break-even, rates, latency.

    What a request would have cost on the strong tier: its own cost when served
    there; otherwise the strong model's price applied to its token counts, or, with
    no token counts, its cost scaled by the strong/served price ratio.
    """
    c = DECISION_TABLE.c
    query = select(
        c.tier,
        c.cost_usd,
        c.router_cost_usd,
        c.latency_ms,
        c.escalated_from,
        c.fallback,
        c.failover,
        c.served_model,
        c.chosen_model,
        c.input_tokens,
        c.output_tokens,
    ).where(c.router == router)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    rows = session.execute(query).all()
    if not rows:
        return calibration_service.EconomicsReport(
            router=router, n_requests=0, message="no decisions in this window"
        )
    if strong_model is None:
        strong_models = [r.chosen_model for r in rows if r.tier == strong_tier]
        strong_model = max(set(strong_models), key=strong_models.count) if strong_models else None
    strong_price = pricing.lookup(strong_model) if strong_model else None

    def strong_cost(row: Any) -> float:
        cost = float(row.cost_usd or 0.0)
        if row.tier == strong_tier or strong_price is None:
            return cost
        if row.input_tokens is not None and row.output_tokens is not None:
            return strong_price.cost_usd(row.input_tokens, row.output_tokens)
        served = pricing.lookup(row.served_model)
        if served is None or served.input + served.output == 0:
            return cost
        return cost * (strong_price.input + strong_price.output) / (served.input + served.output)

    result = economics.router_economics(
        tier=[r.tier for r in rows],
        cost_usd=[float(r.cost_usd or 0.0) for r in rows],
        strong_cost_usd=[strong_cost(r) for r in rows],
        router_cost_usd=[
            math.nan if r.router_cost_usd is None else r.router_cost_usd for r in rows
        ],
        latency_ms=[math.nan if r.latency_ms is None else r.latency_ms for r in rows],
        escalated=[r.escalated_from is not None for r in rows],
        fallback=[bool(r.fallback) for r in rows],
        failover=[bool(r.failover) for r in rows],
        strong_tier=strong_tier,
    )
    report: dict[str, Any] = calibration_service._clean(result)
    report.update(router=router, strong_model=strong_model, window={"since": since, "until": until})
    return calibration_service.EconomicsReport.model_validate(report)


def reference_advise_thresholds(
    *,
    session: Session,
    settings: Settings,
    router: str,
    segment: str | None = None,
    harm_budget: float = 0.05,
    delta: float = 0.1,
    confidence: float = 0.95,
    until: datetime | None = None,
) -> service.ThresholdReport:
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
    report = service.ThresholdReport(
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
    # A fixed row order: the bootstrap draws by position, so a replay gives the same bands.
    query = query.order_by(c.ts, c.request_id)
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

    labels = service._labels(session, router=router, since=since, until=now)
    judge_key = service._judge_with_most_labels(labels)
    labels = {k: v for k, v in labels.items() if v["judge_key"] == judge_key}
    cheap_tier, strong_tier = _reference_tier_pair(labels, tiers, usable)
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
            _reference_segment_advice(
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


def _reference_tier_pair(
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


def _reference_segment_advice(
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
) -> service.SegmentThresholds:
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
    return service.SegmentThresholds(
        segment=value,
        n_requests=n,
        n_labels=curve.n_labels,
        requests_per_day=per_day,
        estimator=curve.estimator,
        curve=service.curve_points(curve),
        recommendation=service._recommendation_out(advice, per_day),
    )
