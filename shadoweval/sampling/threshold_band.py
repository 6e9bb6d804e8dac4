"""Reverse shadows in the score band the threshold advisor lacks labels for (issue 16).

When a segment's threshold advice says the next step up from the threshold in force t₀ needs
more labels with a score in [t₀, t) (`stats.threshold_recommendation.LabelShortfall`), the
hourly planner gives the strong-routed decisions of that segment scored in the band an extra
inclusion probability π_band, paid from `sampling_threshold_band_share` of the day's shadow
budget (set aside before the Neyman allocation, so the plan still spends at most the budget),
until the advice no longer asks. A decision in the band is sampled when its hash is below

    π = 1 − (1 − π_stratum)·(1 − π_band)

which is its true inclusion probability (one uniform draw per decision), recorded on the
decision like any π: the Hájek and Learn-then-Test weights 1/π stay exact.

Clock: decision time. The advice is read once per decision day, from the decisions and labels
before that day's UTC midnight (`as_of` ≤ the period's label bound, so every sampled decision
before it is judged) and stored in `sampling_threshold_band`; a replay computes the same rows.
The advice runs the advisor's bootstrap, once per router and day, not once per period. The
advisor is analytics' (`analytics.threshold_band_advice`), handed in by the planning job:
sampling sits below analytics in the layers. Only hourly sampling buys bands; `at_ingest`
mode samples by stratum alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, union
from sqlmodel import Session

from shadoweval.analytics.models import TrafficWindowSnapshot
from shadoweval.config import Settings
from shadoweval.db import aware_utc
from shadoweval.ingest.models import Decision, TrafficDelta
from shadoweval.sampling.models import SamplingThresholdBand
from shadoweval.sql import dialect_of, table_of

BAND = table_of(SamplingThresholdBand)
DECISION = table_of(Decision)
TRAFFIC = table_of(TrafficWindowSnapshot)
DELTA = table_of(TrafficDelta)

StratumId = tuple[str, str, str]  # router, segment value, tier


@dataclass(frozen=True)
class BandNeed:
    """More labels wanted in [score_low, score_high) of a strong-routed stratum."""

    stratum: StratumId
    score_low: float
    score_high: float
    labels_more: int
    band_requests_per_day: float


@dataclass(frozen=True)
class Band:
    """The extra inclusion probability of a stratum's decisions scored in the band."""

    score_low: float
    score_high: float
    inclusion_probability: float

    def contains(self, score: float | None) -> bool:
        return score is not None and self.score_low <= score < self.score_high


def combined_probability(stratum_probability: float, band_probability: float) -> float:
    """P(sampled) of a decision in the band: 1 − (1 − π_stratum)(1 − π_band)."""
    return 1.0 - (1.0 - stratum_probability) * (1.0 - band_probability)


def advice_day(labels_before: datetime) -> datetime:
    """The UTC midnight at or before the label bound: the advice a period plans with."""
    bound = labels_before.astimezone(UTC)
    return bound.replace(hour=0, minute=0, second=0, microsecond=0)


# --- what the advisor asks --------------------------------------------------------------------

ThresholdAdvisor = Callable[[Session, Settings, str, datetime], list[SamplingThresholdBand]]
"""(session, settings, router, as_of) → one row per segment of the router's threshold advice
over the decisions and labels before `as_of` (`analytics.threshold_band_advice.band_advice`,
passed in by the planning job: the planner sits below analytics)."""


def band_needs(
    session: Session,
    settings: Settings,
    *,
    traffic_before: datetime,
    labels_before: datetime,
    advisor: ThresholdAdvisor | None,
) -> list[BandNeed]:
    """The bands the advice as of the day of `labels_before` asks labels for, each with its
    traffic a day before `traffic_before`; computes and stores that day's advice for every
    router with traffic before it, once."""
    if (
        advisor is None
        or settings.sampling_threshold_band_share <= 0
        or settings.daily_shadow_budget_usd <= 0
    ):
        return []
    as_of = advice_day(labels_before)
    done = set(session.scalars(select(BAND.c.router).where(BAND.c.as_of == as_of).distinct()))
    insert = dialect_of(session).insert
    for router in sorted(_routers_before(session, settings, as_of) - done):
        for advice in advisor(session, settings, router, as_of):
            values = advice.model_dump()
            values.update(as_of=as_of, router=router)
            session.execute(
                insert(BAND)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["as_of", "router", "segment_value"])
            )
    b = BAND.c
    rows = session.execute(
        select(
            b.router,
            b.segment_value,
            b.tier,
            b.score_low,
            b.score_high,
            b.labels_more,
        )
        .where(b.as_of == as_of, b.labels_more > 0, b.score_low.is_not(None))
        .order_by(b.router, b.segment_value)
    ).all()
    needs = []
    for r, s, t, low, high, more in rows:
        if t is None or high is None:
            continue
        per_day = _band_traffic_per_day(
            session, settings, (r, s, t), float(low), float(high), traffic_before
        )
        if per_day > 0:
            needs.append(BandNeed((r, s, t), float(low), float(high), int(more), per_day))
    return needs


def _band_traffic_per_day(
    session: Session,
    settings: Settings,
    stratum: StratumId,
    low: float,
    high: float,
    before: datetime,
) -> float:
    """Decisions a day of the stratum scored in [low, high) over the planner's traffic
    look-back before `before`, averaged over the hours the router has (as the strata are)."""
    since = before - timedelta(days=settings.planner_traffic_days)
    router, segment, tier = stratum
    d = DECISION.c
    in_window = (d.router == router, d.ts >= since, d.ts < before)
    count = session.scalar(
        select(func.count()).where(
            *in_window,
            d.segment_value == segment,
            d.tier == tier,
            d.router_score >= low,
            d.router_score < high,
        )
    )
    first = aware_utc(session.scalar(select(func.min(d.ts)).where(*in_window)))
    if not count or first is None:
        return 0.0
    hours = max((before - first).total_seconds() / 3600, 1.0)
    return float(count) / min(settings.planner_traffic_days, hours / 24)


def _routers_before(session: Session, settings: Settings, as_of: datetime) -> set[str]:
    since = as_of - timedelta(days=settings.threshold_window_days)
    return set(
        session.scalars(
            union(
                *(
                    select(t.c.router).where(t.c.window_start >= since, t.c.window_start < as_of)
                    for t in (TRAFFIC, DELTA)
                )
            )
        )
    )


# --- what the plan buys ---------------------------------------------------------------------


def set_aside(
    settings: Settings, needs: list[BandNeed], cost_of: Callable[[StratumId], float]
) -> tuple[dict[StratumId, float], float]:
    """Extra labels a day per band and the USD a day set aside for them: each band up to its
    shortfall (at most its traffic), all together within the band share of the budget."""
    budget = settings.sampling_threshold_band_share * settings.daily_shadow_budget_usd
    wanted = {n.stratum: min(float(n.labels_more), n.band_requests_per_day) for n in needs}
    spend = sum(cost_of(stratum) * labels for stratum, labels in wanted.items())
    if spend <= 0 or budget <= 0:
        return {}, 0.0
    scale = min(1.0, budget / spend)
    return {s: labels * scale for s, labels in wanted.items()}, spend * scale


def bands(
    needs: list[BandNeed],
    labels_per_day: dict[StratumId, float],
    stratum_probability: dict[StratumId, float],
) -> dict[StratumId, Band]:
    """π_band per stratum so that the band's extra labels a day, N_band·(1 − π_stratum)·π_band,
    equal what was set aside for it (capped at 1). A stratum the plan does not know, or that
    samples everything already, gets no band."""
    out: dict[StratumId, Band] = {}
    for need in needs:
        base = stratum_probability.get(need.stratum)
        labels = labels_per_day.get(need.stratum, 0.0)
        if base is None or base >= 1.0 or labels <= 0:
            continue
        probability = min(1.0, labels / (need.band_requests_per_day * (1.0 - base)))
        out[need.stratum] = Band(need.score_low, need.score_high, probability)
    return out
