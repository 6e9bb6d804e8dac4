"""Planning inputs read from the log, and the strata they give (both sampling modes).

Traffic per stratum, label counts, what finished samples really cost, the detection floor,
and `build_strata`, the cost-aware Neyman plan over them. Every reader takes explicit
decision-time bounds: the caller decides what "before" means (a closed period, or the
decision-time watermark).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, union_all
from sqlmodel import Session

from shadoweval.analytics.models import TrafficWindowSnapshot
from shadoweval.config import Settings
from shadoweval.db import aware_utc
from shadoweval.ingest.models import TrafficDelta
from shadoweval.judge.models import OPEN_VERDICT_STATUSES, OrderResult, Verdict, VerdictStatus
from shadoweval.providers.pricing import ModelPrice, PricingTable
from shadoweval.sampling import allocation
from shadoweval.shadow.models import ShadowRun
from shadoweval.shadow.policy import CONVENTIONAL_TIER_ORDER
from shadoweval.sql import table_of
from shadoweval.stats import change_point, change_point_detector
from shadoweval.stats.rates import sample_size_for_drop

VERDICT = table_of(Verdict)
SHADOW_RUN = table_of(ShadowRun)
TRAFFIC = table_of(TrafficWindowSnapshot)
DELTA = table_of(TrafficDelta)

StratumId = tuple[str, str, str]  # router, segment value, tier


def ordered_tiers(tier_cost: dict[str, float]) -> list[str]:
    """Tiers from cheapest to strongest by their mean served cost, then by conventional name."""
    return sorted(
        tier_cost,
        key=lambda t: (
            (CONVENTIONAL_TIER_ORDER.get(t, 2), tier_cost[t])
            if tier_cost[t] <= 0
            else (0, tier_cost[t])
        ),
    )


def traffic_per_day(
    session: Session, before: datetime, days: float, *, peak_until_a_day: bool = False
) -> list[tuple[str, str, str, float, float]]:
    """(router, segment, tier, decisions a day, served USD a day) over the whole hours of
    the look-back before `before`; a router with a shorter history is averaged over the
    hours it has (at least one), so its first day is not planned as a trickle. With
    `peak_until_a_day`, a router with less than a day of history is planned at no less than
    its busiest whole hour × 24 (see `_short_history_scale`)."""
    since = before - timedelta(days=days)
    counted = union_all(
        *(
            select(
                t.c.router,
                t.c.segment_value,
                t.c.tier,
                t.c.decisions,
                t.c.cost_usd,
                t.c.window_start,
            ).where(t.c.window_start >= since, t.c.window_start < before)
            for t in (TRAFFIC, DELTA)
        )
    ).subquery()
    rows = session.execute(
        select(
            counted.c.router,
            counted.c.segment_value,
            counted.c.tier,
            func.sum(counted.c.decisions),
            func.sum(counted.c.cost_usd),
        ).group_by(counted.c.router, counted.c.segment_value, counted.c.tier)
    ).all()
    first_hour = {
        router: aware_utc(first)
        for router, first in session.execute(
            select(counted.c.router, func.min(counted.c.window_start)).group_by(counted.c.router)
        )
    }
    observed_days: dict[str, float] = {}
    for router, first in first_hour.items():
        hours = (before - first).total_seconds() / 3600 if first is not None else 24 * days
        observed_days[router] = min(days, max(hours, 1.0) / 24)
    if peak_until_a_day:
        scale = _short_history_scale(session, counted, observed_days)
        observed_days = {r: d / scale.get(r, 1.0) for r, d in observed_days.items()}
    return [
        (r, s, t, float(n) / observed_days[r], float(c or 0) / observed_days[r])
        for r, s, t, n, c in rows
        if n
    ]


def _short_history_scale(
    session: Session, counted: Any, observed_days: dict[str, float]
) -> dict[str, float]:
    """router → factor (≥ 1) on its traffic estimate while it has less than a day of history.

    Averaging a first day's hours over a diurnal load plans the day from its quiet night: π
    runs high all morning and the budget is gone by mid-afternoon, leaving small segments
    without the labels of the evening. Planning the day as the busiest whole hour seen × 24
    keeps each hour's expected spend near budget / 24 at the load of the hours seen, so the
    budget lasts to the evening. The factor is the same for every stratum of the router
    (segment shares as observed, not the noisier per-stratum peaks) and π, decided before
    the period from whole hours before it, stays the true inclusion probability."""
    short = [r for r, d in observed_days.items() if d < 1.0]
    if not short:
        return {}
    hourly = (
        select(counted.c.router, counted.c.window_start, func.sum(counted.c.decisions).label("n"))
        .where(counted.c.router.in_(short))
        .group_by(counted.c.router, counted.c.window_start)
        .subquery()
    )
    rows = session.execute(
        select(hourly.c.router, func.max(hourly.c.n), func.sum(hourly.c.n)).group_by(
            hourly.c.router
        )
    ).all()
    scale: dict[str, float] = {}
    for router, peak, total in rows:
        mean_per_day = float(total or 0) / observed_days[router]
        if mean_per_day > 0:
            scale[router] = max(1.0, 24.0 * float(peak or 0) / mean_per_day)
    return scale


def label_counts(
    session: Session, since: datetime, before: datetime
) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(router, segment, direction) → (labels, harms), judged labels of decisions in the span."""
    v = VERDICT.c
    rows = session.execute(
        select(v.router, v.segment_value, v.direction, func.count(), func.sum(v.strong_needed))
        .where(v.status == VerdictStatus.DONE, v.ts >= since, v.ts < before)
        .group_by(v.router, v.segment_value, v.direction)
    ).all()
    return {(r, s, d): (int(n), int(x or 0)) for r, s, d, n, x in rows}


def sample_costs(
    session: Session, settings: Settings, since: datetime, before: datetime
) -> dict[int, tuple[str, str, str, float]]:
    """decision id → (router, segment, routed tier, USD) of every finished sample in the span:
    both judge orders at their steady price (`steady_order_cost_usd`) plus every shadow run of
    the decision (re-runs included), at billed price.

    The judge's cache write is left out on purpose: which call writes the judge prompt's cache
    (the first of a burst, or the first after it expired) is decided by worker concurrency and
    wall time, so a billed judge cost would make π and the budget depend on how the worker ran
    (replay equivalence, DESIGN.md Time). Sums are exact (`math.fsum`): rows come back in
    whatever order the worker created them."""
    v, r = VERDICT.c, SHADOW_RUN.c
    shadow_usd: dict[int, list[float]] = defaultdict(list)
    for decision_id, usd in session.execute(
        select(r.decision_id, r.cost_usd).where(r.ts >= since, r.ts < before)
    ):
        shadow_usd[int(decision_id)].append(float(usd or 0.0))
    rows = session.execute(
        select(
            v.decision_id,
            v.router,
            v.segment_value,
            v.routed_tier,
            v.judge_model,
            v.judge_cost_usd,
            v.order_cheaper_first,
            v.order_stronger_first,
        ).where(v.ts >= since, v.ts < before, v.status.notin_(OPEN_VERDICT_STATUSES))
    ).all()
    prices = _JudgePrices(settings)
    costs: dict[int, tuple[str, str, str, float]] = {}
    for decision_id, router, segment, tier, judge_model, judge_usd, *orders in rows:
        judge = [
            steady_order_cost_usd(
                OrderResult.model_validate(order),
                prices.lookup(order.get("judge_model") or judge_model),
            )
            for order in orders
            if order
        ] or [float(judge_usd or 0.0)]
        usd = math.fsum([*judge, *shadow_usd.get(int(decision_id), ())])
        costs[int(decision_id)] = (router, segment, tier, usd)
    return costs


class _JudgePrices:
    """Judge model → its price in the settings' table, looked up once per model."""

    def __init__(self, settings: Settings) -> None:
        self._table = PricingTable.from_settings(settings)
        self._found: dict[str | None, ModelPrice | None] = {}

    def lookup(self, model: str | None) -> ModelPrice | None:
        if model not in self._found:
            self._found[model] = self._table.lookup(model) if model else None
        return self._found[model]


def steady_order_cost_usd(order: OrderResult, price: ModelPrice | None) -> float:
    """A judge order's cost with its prompt-cache writes priced as cache reads: what the order
    costs once the judge prompt is cached, a function of its tokens alone.

    The cached prefix (the judge's system prompt) is read or written on every call; a write
    costs more (1.25× input against 0.1× on Anthropic) and falls on whichever call comes first
    after the cache expired, which worker timing decides. Batch orders keep the batch price:
    an order is taken as batch-priced when its charged cost is nearer the batch price of its
    tokens. Without a price, or for an order stored before cache writes were recorded, the
    charged cost stands."""
    writes = order.cache_write_tokens
    if price is None or writes is None:
        return order.cost_usd
    billed = price.cost_usd(
        order.input_tokens, order.output_tokens, order.cache_read_tokens, writes
    )
    batch_billed = billed * (1.0 - price.batch_discount)
    batch = abs(order.cost_usd - batch_billed) < abs(order.cost_usd - billed)
    return price.cost_usd(
        order.input_tokens, order.output_tokens, order.cache_read_tokens + writes, 0, batch=batch
    )


def learned_costs(
    session: Session, settings: Settings, labels_before: datetime
) -> dict[StratumId, tuple[float, int]]:
    """(router, segment, tier) → (mean USD per finished sample, samples) over the cost
    look-back before `labels_before`."""
    since = labels_before - timedelta(days=settings.sampling_cost_lookback_days)
    per_stratum: dict[StratumId, list[float]] = defaultdict(list)
    for router, segment, tier, usd in sample_costs(
        session, settings, since, labels_before
    ).values():
        per_stratum[(router, segment, tier)].append(usd)
    return {key: (math.fsum(usd) / len(usd), len(usd)) for key, usd in per_stratum.items() if usd}


def reservation_cost(settings: Settings, learned: tuple[float, int] | None) -> float:
    """USD reserved per sample of a stratum: its learned mean cost × (1 + margin) once
    `sampling_cost_min_samples` samples are finished, else the configured default."""
    mean_cost, observed = learned or (0.0, 0)
    if observed >= settings.sampling_cost_min_samples and mean_cost > 0:
        return mean_cost * (1 + settings.sampling_cost_margin)
    return settings.default_cost_per_sample_usd


def detection_floor_per_day(settings: Settings) -> float:
    """Labels a day a segment needs for the quality-drop detector to flag the configured rise
    (harm_baseline → harm_alert_rate) within the detection window, at its false-alarm rate
    (the detector's conservative 80th-percentile delay, stats.change_point.labels_to_detect)."""
    required = change_point.labels_to_detect(
        settings.harm_baseline,
        settings.harm_alert_rate,
        arl_labels=settings.sequential_alarm_threshold,
    )
    if not math.isfinite(required):
        # Cannot happen for p1 > p0 with unbounded history; the classical test's size then.
        required = sample_size_for_drop(settings.harm_baseline, settings.harm_alert_rate)
    return allocation.floor_samples_per_day(math.ceil(required), settings.detection_window_days)


@dataclass(frozen=True)
class Suspect:
    """A segment whose labels show part of the evidence for a harm rise: the rise evidence
    (log GLR, `change_point.rise_evidence`) over the detector's history as of the labels the
    plan may read, and the labels a day its raised floor asks for."""

    statistic: float
    threshold: float
    labels_needed: float
    floor_per_day: float


def suspect_segments(
    session: Session, settings: Settings, labels_before: datetime
) -> dict[tuple[str, str], Suspect]:
    """(router, segment) → Suspect, from forward labels of decisions before `labels_before`.

    The detector is recomputed from those labels (same order as the worker feeds it: ts,
    request_id), not read from its stored state, which may already hold later labels: the plan
    for a period must not depend on how far the worker has got (replay equivalence). An
    alarmed segment is not suspect (its alarm has spoken); one whose rise evidence is at least
    `sampling_suspect_fraction` of the alarm threshold is, and its floor becomes the labels the
    alarm still needs at the rates seen, spread over `sampling_suspect_hours`."""
    v = VERDICT.c
    since = labels_before - timedelta(days=7)
    rows = session.execute(
        select(v.router, v.segment_value, v.judge_key, v.strong_needed)
        .where(
            v.status == VerdictStatus.DONE,
            v.direction == "forward",
            v.ts >= since,
            v.ts < labels_before,
        )
        .order_by(v.router, v.segment_value, v.judge_key, v.ts, v.request_id)
    ).all()
    streams: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for router, segment, judge_key, harm in rows:
        streams[(router, segment, judge_key)].append(int(harm))
    threshold = change_point.glr_threshold(settings.sequential_alarm_threshold)
    min_rise = max(0.0, round(settings.harm_alert_rate - settings.harm_baseline, 12))
    window = settings.change_point_window_labels
    base_floor = detection_floor_per_day(settings)
    suspects: dict[tuple[str, str], Suspect] = {}
    for (router, segment, _judge), labels in streams.items():
        state = change_point_detector.change_point_update(
            change_point_detector.ChangePointState(),
            labels,
            min_rise=min_rise,
            threshold=threshold,
            window_labels=window,
        ).state
        if state.alarmed:
            continue
        n, x = state.history
        recent = state.recent[-n:] if n else ()
        evidence = change_point.rise_evidence(n, x, recent, min_rise=min_rise, window_labels=window)
        if evidence.statistic < settings.sampling_suspect_fraction * threshold:
            continue
        pre = (evidence.pre_harms + 0.5) / (evidence.pre_labels + 1)
        post = max(evidence.post_change_rate or 0.0, pre + min_rise)
        needed = allocation.labels_still_needed(evidence.statistic, threshold, pre, post)
        floor = max(base_floor, needed * 24 / settings.sampling_suspect_hours)
        previous = suspects.get((router, segment))
        if previous is None or evidence.statistic > previous.statistic:
            suspects[(router, segment)] = Suspect(evidence.statistic, threshold, needed, floor)
    return suspects


def build_strata(
    session: Session,
    settings: Settings,
    *,
    traffic_before: datetime,
    labels_before: datetime,
    set_aside_usd: float = 0.0,
) -> tuple[allocation.Allocation, list[dict[str, Any]]]:
    """π per stratum by cost-aware Neyman allocation with detection floors, from traffic
    before `traffic_before` and labels and learned costs of decisions before `labels_before`,
    within the daily budget less `set_aside_usd` (the threshold band's share, see
    `threshold_band`); the allocation and one row per stratum (the plan tables' columns)."""
    traffic = traffic_per_day(
        session,
        traffic_before,
        settings.planner_traffic_days,
        peak_until_a_day=settings.planner_first_day_peak_pacing,
    )
    counts = label_counts(session, labels_before - timedelta(days=7), labels_before)
    costs = learned_costs(session, settings, labels_before)
    tier_cost: dict[str, dict[str, list[float]]] = {}
    for router, _segment, tier, decisions, cost in traffic:
        entry = tier_cost.setdefault(router, {}).setdefault(tier, [0.0, 0.0])
        entry[0] += decisions
        entry[1] += cost
    strongest = {
        router: ordered_tiers({t: (c / n if n else 0.0) for t, (n, c) in tiers.items()})[-1]
        for router, tiers in tier_cost.items()
    }
    floor = detection_floor_per_day(settings)
    suspects = (
        suspect_segments(session, settings, labels_before)
        if settings.sampling_suspect_priority
        else {}
    )
    prior_b = (1 - settings.harm_baseline) / settings.harm_baseline
    strata: list[allocation.Stratum] = []
    ids: dict[tuple[str, str], StratumId] = {}
    learned_from: dict[StratumId, int] = {}
    for router, segment, tier, decisions_per_day, _cost in traffic:
        stratum_id = (router, segment, tier)
        is_reverse = len(tier_cost[router]) > 1 and tier == strongest[router]
        n, x = counts.get((router, segment, "reverse" if is_reverse else "forward"), (0, 0))
        mean_cost, observed = costs.get(stratum_id, (0.0, 0))
        use_learned = observed >= settings.sampling_cost_min_samples and mean_cost > 0
        learned_from[stratum_id] = observed if use_learned else 0
        cost = reservation_cost(settings, costs.get(stratum_id))
        key = (f"{router}\x1f{segment}", tier)
        ids[key] = stratum_id
        # Only forward strata: the detector watches forward labels.
        suspect = None if is_reverse else suspects.get((router, segment))
        strata.append(
            allocation.Stratum(
                key=key,
                expected_traffic=decisions_per_day,
                cost_per_sample_usd=cost,
                std_dev=allocation.stratum_std_dev(x, n, 1.0, prior_b),
                floor_samples=suspect.floor_per_day if suspect else floor,
                is_reverse=is_reverse,
                priority=suspect is not None,
            )
        )
    plan = allocation.neyman_allocation(
        strata,
        max(0.0, settings.daily_shadow_budget_usd - set_aside_usd),
        settings.reverse_shadow_share,
        priority_share=settings.sampling_priority_share if suspects else 1.0,
    )
    if suspects:
        # No plan column holds it (no migration): the raised floor shows in the rows, the
        # reason in the plan's notes.
        plan = replace(
            plan,
            notes=(
                *plan.notes,
                *(
                    f"suspect: {router}/{segment} (rise evidence {s.statistic:.2f} of "
                    f"{s.threshold:.2f}; ~{s.labels_needed:.0f} labels to an alarm; floor "
                    f"{s.floor_per_day:.0f}/day, paid first)"
                    for (router, segment), s in sorted(suspects.items())
                ),
            ),
        )
    by_key = {s.key: s for s in strata}
    rows: list[dict[str, Any]] = []
    for key, probability in plan.probabilities.items():
        router, segment, tier = ids[key]
        stratum = by_key[key]
        expected = plan.expected_samples_per_day.get(key, 0.0)
        rows.append(
            {
                "router": router,
                "segment_value": segment,
                "tier": tier,
                "inclusion_probability": probability,
                "is_reverse": stratum.is_reverse,
                "expected_traffic_per_day": stratum.expected_traffic,
                "cost_per_sample_usd": stratum.cost_per_sample_usd,
                "cost_learned_from": learned_from[(router, segment, tier)],
                "std_dev": stratum.std_dev,
                "floor_samples_per_day": stratum.floor_samples,
                "expected_samples_per_day": expected,
                # Against the detection floor: a suspect's raised floor is a bonus, its
                # shortfall no `sampling_shortfall` event.
                "floor_shortfall_per_day": max(0.0, min(stratum.floor_samples, floor) - expected),
            }
        )
    return plan, rows
