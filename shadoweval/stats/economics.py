"""Router economics from the decision log: what routing costs, saves and adds to latency.

The cost model is the "Mechanics" section of reference/000_07fba434b0e1916a.txt:
realized cost per request = Σ_tiers share × tier cost + router overhead r, compared
with an always-strong baseline; a router is worth running iff
(1 − p_strong)(C_strong − C_weak) > r. Cascades are judged by their escalation
rate (the savings hold only while it stays under about 30 %) and by the latency
tail the escalations add. Provider failover is a reliability event and the
router's static fallback is the router failing to decide; both are counted apart
from routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shadoweval.stats import rates

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ShareEstimate:
    """A share of requests (count/n) with its 95 % Wilson score interval."""

    share: float
    ci95_low: float
    ci95_high: float
    count: int
    n: int


@dataclass(frozen=True)
class LatencyPercentiles:
    """Latency percentiles in ms (linear interpolation between order statistics);
    None when the group has no latency values."""

    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    n: int


@dataclass(frozen=True)
class BreakEven:
    """The article's break-even check (1 − p_strong)(C_strong − C_weak) > r.

    C_strong and C_weak are averaged over the requests not served by the strong
    tier, so `savings_side_usd` equals the realized gross saving per request of
    routing away from the strong tier; None when every request went to the strong tier.
    """

    strong_share: float
    strong_cost_per_request_usd: float | None
    weak_cost_per_request_usd: float | None
    savings_side_usd: float
    router_cost_side_usd: float
    router_pays_for_itself: bool


@dataclass(frozen=True)
class RouterEconomics:
    """Per-window router economics; every amount in USD, every latency in ms."""

    n_requests: int
    realized_cost_per_request_usd: float
    realized_cost_per_request_ci95_usd: tuple[float, float]
    model_cost_per_request_usd: float
    router_overhead_per_request_usd: float
    router_cost_reported_share: float
    always_strong_cost_per_request_usd: float
    savings_total_usd: float
    savings_per_request_usd: float
    savings_per_request_ci95_usd: tuple[float, float]
    savings_rate: float
    strong_share: ShareEstimate
    break_even: BreakEven
    escalation: ShareEstimate
    escalation_warn_rate: float
    escalation_warning: bool
    fallback: ShareEstimate
    failover: ShareEstimate
    latency_all_ms: LatencyPercentiles
    latency_escalated_ms: LatencyPercentiles
    latency_not_escalated_ms: LatencyPercentiles
    escalation_added_p90_ms: float | None
    escalation_added_p99_ms: float | None


def share_estimate(count: int, n: int) -> ShareEstimate:
    """count/n with the 95 % Wilson score interval (Wilson 1927), via `rates.wilson_interval`.

    Wilson rather than Wald: it keeps its coverage for small n and for shares near
    0 or 1, where a fallback or failover rate usually sits (Brown, Cai & DasGupta 2001).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if int(count) != count or not (0 <= count <= n):
        raise ValueError(f"count must be an integer in [0, n], got {count!r}")
    share = int(count) / int(n)
    low, high = rates.wilson_interval(share, int(n), 0.95)
    return ShareEstimate(share=share, ci95_low=low, ci95_high=high, count=int(count), n=int(n))


def _mean_ci95(values: FloatArray) -> tuple[float, tuple[float, float]]:
    """Mean ± 1.96 sd/sqrt(n): the normal (CLT) interval for a mean."""
    mean = float(values.mean())
    if values.size < 2:
        return mean, (mean, mean)
    half = rates.Z_95 * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, (mean - half, mean + half)


def _amounts(name: str, values: ArrayLike, n: int, allow_nan: bool = False) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name} must be a 1-D array of length {n}, got shape {array.shape}")
    if not allow_nan and np.isnan(array).any():
        raise ValueError(f"{name} must not contain NaN")
    present = array[~np.isnan(array)]
    if np.isinf(present).any() or (present < 0).any():
        raise ValueError(f"{name} must be finite and nonnegative")
    return array


def _flags(name: str, values: ArrayLike | None, n: int) -> NDArray[np.bool_]:
    if values is None:
        return np.zeros(n, dtype=np.bool_)
    array = np.asarray(values)
    if array.shape != (n,):
        raise ValueError(f"{name} must be a 1-D array of length {n}, got shape {array.shape}")
    if array.dtype != np.bool_ and not (
        np.issubdtype(array.dtype, np.number) and np.isin(array, (0, 1)).all()
    ):
        raise ValueError(f"{name} must be booleans or 0/1")
    return array.astype(np.bool_)


def _percentiles(latency: FloatArray) -> LatencyPercentiles:
    present = latency[~np.isnan(latency)]
    if present.size == 0:
        return LatencyPercentiles(p50_ms=None, p90_ms=None, p99_ms=None, n=0)
    p50, p90, p99 = np.percentile(present, [50.0, 90.0, 99.0])
    return LatencyPercentiles(
        p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), n=int(present.size)
    )


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def router_economics(
    *,
    tier: ArrayLike,
    cost_usd: ArrayLike,
    strong_cost_usd: ArrayLike,
    router_cost_usd: ArrayLike | None = None,
    latency_ms: ArrayLike | None = None,
    escalated: ArrayLike | None = None,
    fallback: ArrayLike | None = None,
    failover: ArrayLike | None = None,
    extra_attempt_cost_usd: ArrayLike | None = None,
    strong_tier: str = "strong",
    escalation_warn_rate: float = 0.30,
) -> RouterEconomics:
    """Cost, savings, break-even, escalation/fallback/failover rates and latency tails.

    Inputs are one entry per decision. `cost_usd` is the served call's billed cost;
    `strong_cost_usd` what the same request would have cost on the strong tier
    (for strong-served requests, pass their own cost); `router_cost_usd` the
    router's overhead r (NaN = not reported: the mean of the reported ones stands
    in, see `router_cost_reported_share`); `extra_attempt_cost_usd` the cost of
    attempts that did not serve the answer (a cascade's cheap first try), which the
    decision log's `cost_usd` does not include.

    Formulas (reference/000_07fba434b0e1916a.txt, "Mechanics"):
    - realized cost per request c_i = cost_i + extra_i + r_i; mean with the normal
      95 % interval mean ± 1.96 sd/sqrt(n);
    - always-strong baseline = mean(strong_cost_i); savings d_i = strong_cost_i − c_i,
      total Σ d_i, per request mean(d_i) with its 95 % interval; savings rate
      Σ d_i / Σ strong_cost_i;
    - break-even (1 − p_strong)(C_strong − C_weak) > r̄, see `BreakEven`;
    - escalation, fallback and failover shares with Wilson intervals; escalation
      warns above `escalation_warn_rate` (the article's ~30 % for cascades);
    - latency p50/p90/p99 overall, escalated and not; the tail escalations add is
      p_q(all) − p_q(not escalated).
    """
    tiers = np.asarray(tier)
    if tiers.ndim != 1 or tiers.size == 0:
        raise ValueError("tier must be a non-empty 1-D array, one entry per decision")
    n = int(tiers.size)
    if not (0.0 < escalation_warn_rate < 1.0):
        raise ValueError(f"escalation_warn_rate must lie in (0, 1), got {escalation_warn_rate!r}")
    cost = _amounts("cost_usd", cost_usd, n)
    strong_cost = _amounts("strong_cost_usd", strong_cost_usd, n)
    extra = (
        np.zeros(n)
        if extra_attempt_cost_usd is None
        else _amounts("extra", extra_attempt_cost_usd, n)
    )
    if router_cost_usd is None:
        router = np.full(n, np.nan)
    else:
        router = _amounts("router_cost_usd", router_cost_usd, n, allow_nan=True)
    reported = ~np.isnan(router)
    overhead = float(router[reported].mean()) if reported.any() else 0.0
    router_filled = np.where(reported, router, overhead)
    latency = (
        np.full(n, np.nan)
        if latency_ms is None
        else _amounts("latency_ms", latency_ms, n, allow_nan=True)
    )
    is_escalated = _flags("escalated", escalated, n)
    is_fallback = _flags("fallback", fallback, n)
    is_failover = _flags("failover", failover, n)

    realized = cost + extra + router_filled
    realized_mean, realized_ci = _mean_ci95(realized)
    savings = strong_cost - realized
    savings_mean, savings_ci = _mean_ci95(savings)
    strong_total = float(strong_cost.sum())
    savings_total = float(savings.sum())

    on_strong = tiers == strong_tier
    strong_share = share_estimate(int(on_strong.sum()), n)
    weak = ~on_strong
    c_strong: float | None = None
    c_weak: float | None = None
    savings_side = 0.0
    if weak.any():
        c_strong_value = float(strong_cost[weak].mean())
        c_weak_value = float((cost[weak] + extra[weak]).mean())
        savings_side = (1.0 - strong_share.share) * (c_strong_value - c_weak_value)
        c_strong, c_weak = c_strong_value, c_weak_value
    break_even = BreakEven(
        strong_share=strong_share.share,
        strong_cost_per_request_usd=c_strong,
        weak_cost_per_request_usd=c_weak,
        savings_side_usd=savings_side,
        router_cost_side_usd=overhead,
        router_pays_for_itself=savings_side > overhead,
    )

    escalation = share_estimate(int(is_escalated.sum()), n)
    latency_all = _percentiles(latency)
    latency_escalated = _percentiles(latency[is_escalated])
    latency_not_escalated = _percentiles(latency[~is_escalated])
    return RouterEconomics(
        n_requests=n,
        realized_cost_per_request_usd=realized_mean,
        realized_cost_per_request_ci95_usd=realized_ci,
        model_cost_per_request_usd=float((cost + extra).mean()),
        router_overhead_per_request_usd=overhead,
        router_cost_reported_share=float(reported.mean()),
        always_strong_cost_per_request_usd=float(strong_cost.mean()),
        savings_total_usd=savings_total,
        savings_per_request_usd=savings_mean,
        savings_per_request_ci95_usd=savings_ci,
        savings_rate=savings_total / strong_total if strong_total > 0 else 0.0,
        strong_share=strong_share,
        break_even=break_even,
        escalation=escalation,
        escalation_warn_rate=escalation_warn_rate,
        escalation_warning=escalation.share > escalation_warn_rate,
        fallback=share_estimate(int(is_fallback.sum()), n),
        failover=share_estimate(int(is_failover.sum()), n),
        latency_all_ms=latency_all,
        latency_escalated_ms=latency_escalated,
        latency_not_escalated_ms=latency_not_escalated,
        escalation_added_p90_ms=_difference(latency_all.p90_ms, latency_not_escalated.p90_ms),
        escalation_added_p99_ms=_difference(latency_all.p99_ms, latency_not_escalated.p99_ms),
    )


# Moments of x = (1, cost, router cost, input tokens, output tokens) per decision.
MOMENT_TERMS = ("one", "cost", "router_cost", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class DecisionGroup:
    """Decisions whose what-if strong cost is one linear form of x = (1, c, r, i, o):
    `moments` is Σ x xᵀ (5 × 5) over the group, with r = 0 where `router_cost_reported`
    is False; `strong_cost_form` the coefficients λ with strong_cost = λ·x."""

    moments: FloatArray
    strong_cost_form: FloatArray
    on_strong_tier: bool
    router_cost_reported: bool
    escalated: int
    fallback: int
    failover: int

    @property
    def n(self) -> int:
        return round(float(self.moments[0, 0]))


def _form_mean_ci95(
    groups: list[DecisionGroup], forms: list[FloatArray], n: int
) -> tuple[float, float, tuple[float, float]]:
    """Σq, mean and normal 95 % interval of q = λ_g·x over all groups, from the moments:
    Σq = λᵀ M e₀, Σq² = λᵀ M λ (the same estimates as `_mean_ci95`, to float rounding)."""
    total = sum(float(form @ g.moments[:, 0]) for g, form in zip(groups, forms, strict=True))
    squares = sum(float(form @ g.moments @ form) for g, form in zip(groups, forms, strict=True))
    mean = total / n
    if n < 2:
        return total, mean, (mean, mean)
    variance = max(0.0, (squares - total * total / n) / (n - 1))
    half = rates.Z_95 * math.sqrt(variance) / math.sqrt(n)
    return total, mean, (mean - half, mean + half)


def router_economics_from_moments(
    groups: list[DecisionGroup],
    *,
    latency_all_ms: LatencyPercentiles,
    latency_escalated_ms: LatencyPercentiles,
    latency_not_escalated_ms: LatencyPercentiles,
    escalation_warn_rate: float = 0.30,
) -> RouterEconomics:
    """`router_economics` from sums per group of decisions instead of one entry per
    decision, so the decision log can add them up where it is stored (issue 19 §4): the
    same formulas, every mean and variance from the groups' moments Σ x xᵀ; latency
    percentiles computed by the caller (order statistics are not sums). No cascade's
    extra attempts here: the decision log does not hold them."""
    n = sum(g.n for g in groups)
    if n < 1:
        raise ValueError("no decisions")
    if not (0.0 < escalation_warn_rate < 1.0):
        raise ValueError(f"escalation_warn_rate must lie in (0, 1), got {escalation_warn_rate!r}")
    unit = np.eye(len(MOMENT_TERMS))
    one, cost, router = unit[0], unit[1], unit[2]
    reported = [g for g in groups if g.router_cost_reported]
    n_reported = sum(g.n for g in reported)
    overhead = sum(float(g.moments[0, 2]) for g in reported) / n_reported if reported else 0.0
    # A decision without its router cost stands at the mean of the reported ones.
    realized = [cost + (router if g.router_cost_reported else overhead * one) for g in groups]
    savings = [g.strong_cost_form - form for g, form in zip(groups, realized, strict=True)]
    _, realized_mean, realized_ci = _form_mean_ci95(groups, realized, n)
    savings_total, savings_mean, savings_ci = _form_mean_ci95(groups, savings, n)
    strong_total = sum(float(g.strong_cost_form @ g.moments[:, 0]) for g in groups)
    model_cost = sum(float(g.moments[0, 1]) for g in groups)

    strong_share = share_estimate(sum(g.n for g in groups if g.on_strong_tier), n)
    weak = [g for g in groups if not g.on_strong_tier]
    n_weak = sum(g.n for g in weak)
    c_strong: float | None = None
    c_weak: float | None = None
    savings_side = 0.0
    if n_weak:
        c_strong = sum(float(g.strong_cost_form @ g.moments[:, 0]) for g in weak) / n_weak
        c_weak = sum(float(g.moments[0, 1]) for g in weak) / n_weak
        savings_side = (1.0 - strong_share.share) * (c_strong - c_weak)
    escalation = share_estimate(sum(g.escalated for g in groups), n)
    return RouterEconomics(
        n_requests=n,
        realized_cost_per_request_usd=realized_mean,
        realized_cost_per_request_ci95_usd=realized_ci,
        model_cost_per_request_usd=model_cost / n,
        router_overhead_per_request_usd=overhead,
        router_cost_reported_share=n_reported / n,
        always_strong_cost_per_request_usd=strong_total / n,
        savings_total_usd=savings_total,
        savings_per_request_usd=savings_mean,
        savings_per_request_ci95_usd=savings_ci,
        savings_rate=savings_total / strong_total if strong_total > 0 else 0.0,
        strong_share=strong_share,
        break_even=BreakEven(
            strong_share=strong_share.share,
            strong_cost_per_request_usd=c_strong,
            weak_cost_per_request_usd=c_weak,
            savings_side_usd=savings_side,
            router_cost_side_usd=overhead,
            router_pays_for_itself=savings_side > overhead,
        ),
        escalation=escalation,
        escalation_warn_rate=escalation_warn_rate,
        escalation_warning=escalation.share > escalation_warn_rate,
        fallback=share_estimate(sum(g.fallback for g in groups), n),
        failover=share_estimate(sum(g.failover for g in groups), n),
        latency_all_ms=latency_all_ms,
        latency_escalated_ms=latency_escalated_ms,
        latency_not_escalated_ms=latency_not_escalated_ms,
        escalation_added_p90_ms=_difference(latency_all_ms.p90_ms, latency_not_escalated_ms.p90_ms),
        escalation_added_p99_ms=_difference(latency_all_ms.p99_ms, latency_not_escalated_ms.p99_ms),
    )
