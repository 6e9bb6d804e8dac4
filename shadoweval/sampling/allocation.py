"""Budgeted stratified sampling plan: the inclusion probability π of each stratum.

Pure planner math (DESIGN.md, Sampling; reference/drift.md §3d). A stratum is a
(segment, tier) pair. Forward strata (cheap-routed, re-run on the strong tier)
and reverse strata (strong-routed, re-run on the cheap tier) share the daily
shadow budget in a configured ratio. Within each group the expected number of
labels per day follows the cost-aware Neyman allocation with a floor per stratum,
so small segments are watched too, and π = n_h / N_h is capped at 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

StratumKey = tuple[str, str]
"""(segment value, routed tier)."""

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Stratum:
    """One stratum's planning inputs.

    - `key`: (segment, tier);
    - `expected_traffic`: requests per day N_h;
    - `cost_per_sample_usd`: expected full cost c_h of one sampled request (the shadow
      call, both judge orders, a re-run of the routed model when its answer was not
      logged, retries), see `expected_cost_per_sample_usd`;
    - `std_dev`: S_h = sqrt(p(1 − p)) of the stratum's label, from a prior when it
      has no labels yet, see `stratum_std_dev`;
    - `floor_samples`: labels per day needed to detect the configured drop within the
      detection window, see `floor_samples_per_day`;
    - `is_reverse`: a strong-routed stratum, sampled for the reverse shadow;
    - `priority`: its floor is paid before the others' (a segment whose labels suggest a
      rise, up to `priority_share` of the group's budget), see `neyman_allocation`.
    """

    key: StratumKey
    expected_traffic: float
    cost_per_sample_usd: float
    std_dev: float
    floor_samples: float = 0.0
    is_reverse: bool = False
    priority: bool = False

    def __post_init__(self) -> None:
        checks = {
            "expected_traffic": self.expected_traffic,
            "cost_per_sample_usd": self.cost_per_sample_usd,
            "std_dev": self.std_dev,
            "floor_samples": self.floor_samples,
        }
        for name, value in checks.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"stratum {self.key}: {name} must be finite and ≥ 0, got {value!r}"
                )
        if self.cost_per_sample_usd <= 0:
            raise ValueError(f"stratum {self.key}: cost_per_sample_usd must be > 0")
        if self.std_dev > 0.5:
            raise ValueError(
                f"stratum {self.key}: std_dev of a 0/1 label is at most 0.5, got {self.std_dev!r}"
            )


@dataclass(frozen=True)
class Allocation:
    """The plan: π per stratum, expected labels and spend per day, and what fell short.

    `floors_met` is False when the floors alone cost more than their group's budget;
    the floors were then scaled down proportionally (see `notes`). Floors above a
    stratum's traffic are capped at the traffic and listed in `traffic_limited`.
    """

    probabilities: dict[StratumKey, float]
    expected_samples_per_day: dict[StratumKey, float]
    expected_cost_usd: float
    budget_usd: float
    floors_met: bool
    traffic_limited: tuple[StratumKey, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def stratum_std_dev(
    harm_count: int, n_labels: int, prior_a: float = 1.0, prior_b: float = 1.0
) -> float:
    """S_h = sqrt(p̃(1 − p̃)) with p̃ = (x + a)/(n + a + b), the Beta(a, b) posterior mean.

    The prior keeps a stratum without labels (or with 0 or n harms) from getting
    S_h = 0 and hence no samples beyond its floor: a rate estimated at 0 from a few
    labels is not known to be 0.
    """
    if int(n_labels) != n_labels or n_labels < 0:
        raise ValueError(f"n_labels must be an integer ≥ 0, got {n_labels!r}")
    if int(harm_count) != harm_count or not (0 <= harm_count <= n_labels):
        raise ValueError(f"harm_count must be an integer in [0, n_labels], got {harm_count!r}")
    if not (prior_a > 0 and prior_b > 0):
        raise ValueError("prior_a and prior_b must be positive")
    p = (harm_count + prior_a) / (n_labels + prior_a + prior_b)
    return math.sqrt(p * (1.0 - p))


def floor_samples_per_day(
    required_labels_per_window: int, window_days: float, label_yield: float = 1.0
) -> float:
    """Sampled requests per day so that a window of `window_days` collects the labels
    a detection needs: required / window_days / label_yield.

    `required_labels_per_window` comes from the sample-size formula
    (reference/drift.md §3d, implemented in stats.rates); `label_yield` is the share
    of sampled requests that end as a usable label (the coverage funnel: no payload,
    redaction, provider or judge errors).
    """
    if int(required_labels_per_window) != required_labels_per_window or (
        required_labels_per_window < 0
    ):
        raise ValueError("required_labels_per_window must be an integer ≥ 0")
    if not (window_days > 0) or math.isinf(window_days):
        raise ValueError(f"window_days must be a finite positive number, got {window_days!r}")
    if not (0.0 < label_yield <= 1.0):
        raise ValueError(f"label_yield must lie in (0, 1], got {label_yield!r}")
    return required_labels_per_window / window_days / label_yield


def labels_still_needed(
    statistic: float, threshold: float, pre_rate: float, post_rate: float
) -> float:
    """Post-change labels for a log GLR to climb from `statistic` to `threshold` at the rates
    seen: (h − G) / KL(post ‖ pre), the statistic's expected gain per label once the rise is
    real (Wald's approximation; overshoot and the estimated pre-change rate ignored). The
    rates are clipped into (0, 1) with post > pre, so a flat segment needs many labels,
    never a division by zero."""
    p0 = min(max(pre_rate, 1e-6), 1 - 1e-6)
    p1 = min(max(post_rate, p0 + 1e-6), 1 - 1e-6)
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    gap = max(0.0, threshold - statistic)
    if gap == 0:
        return 0.0
    return gap / kl if kl > 0 else math.inf


def expected_cost_per_sample_usd(
    shadow_call_usd: float,
    judge_call_usd: float,
    rerun_call_usd: float = 0.0,
    rerun_share: float = 0.0,
    retry_rate: float = 0.0,
) -> float:
    """c_h = (shadow + 2 × judge + rerun_share × rerun) × (1 + retry_rate), in USD.

    Everything a sample causes is charged to the budget (DESIGN.md, Sampling): the
    shadow call on the other tier, both judge orders, a re-run of the routed model
    for the share of requests whose answer was not logged, and retries. Pass
    Batch API prices where the work runs in batches.
    """
    values = (shadow_call_usd, judge_call_usd, rerun_call_usd, retry_rate)
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError("costs and retry_rate must be finite and ≥ 0")
    if not (0.0 <= rerun_share <= 1.0):
        raise ValueError(f"rerun_share must lie in [0, 1], got {rerun_share!r}")
    return (shadow_call_usd + 2.0 * judge_call_usd + rerun_share * rerun_call_usd) * (
        1.0 + retry_rate
    )


@dataclass(frozen=True)
class _GroupPlan:
    samples: FloatArray
    floors_met: bool
    floor_scale: float


def _scaled(lam: float, weight: FloatArray) -> FloatArray:
    """λ w, and exactly 0 where w = 0 (never inf · 0 = NaN); an overflowing product is
    clipped to the stratum's traffic by the caller."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(weight > 0, lam * weight, 0.0)


def _solve_multiplier(
    weight: FloatArray, floor: FloatArray, traffic: FloatArray, cost: FloatArray, budget: float
) -> float:
    """The λ at which Σ c_h clip(λ w_h, floor_h, N_h) = budget, solved exactly.

    The spend is piecewise linear and nondecreasing in λ, with breakpoints
    floor_h/w_h (a stratum leaves its floor) and N_h/w_h (it reaches π = 1). A binary
    search over the breakpoints finds the piece holding the budget; on it
    spend = A + λ B with A = Σ_below c f + Σ_capped c N and B = Σ_active c w, summed
    directly (prefix-sum differences lose tiny weights to cancellation). The caller
    guarantees spend(0) ≤ budget < spend(∞).
    """
    positive = weight > 0
    with np.errstate(over="ignore", divide="ignore"):
        leave_floor = np.where(positive, floor / np.where(positive, weight, 1.0), np.inf)
        reach_cap = np.where(positive, traffic / np.where(positive, weight, 1.0), np.inf)

    def spend(lam: float) -> float:
        return float((cost * np.clip(_scaled(lam, weight), floor, traffic)).sum())

    candidates = np.unique(np.concatenate([np.zeros(1), leave_floor, reach_cap]))
    candidates = candidates[np.isfinite(candidates)]
    lo, hi = 0, candidates.size - 1
    if spend(float(candidates[hi])) <= budget:
        lo = hi
    # Invariant: spend(candidates[lo]) ≤ budget < spend(candidates[hi]) unless lo == hi.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if spend(float(candidates[mid])) <= budget:
            lo = mid
        else:
            hi = mid
    start = float(candidates[lo])
    below = leave_floor > start
    capped = reach_cap <= start
    active = ~below & ~capped
    intercept = float((cost * floor)[below].sum() + (cost * traffic)[capped].sum())
    slope = float((cost * weight)[active].sum())
    lam = start
    if slope > 0:
        lam = max(start, (budget - intercept) / slope)
    if lo + 1 < candidates.size:
        lam = min(lam, float(candidates[lo + 1]))
    return lam


def _allocate_group(
    traffic: FloatArray,
    cost: FloatArray,
    std: FloatArray,
    floor: FloatArray,
    budget: float,
    priority: NDArray[np.bool_] | None = None,
    priority_share: float = 1.0,
) -> _GroupPlan:
    """min Σ N_h² S_h² / n_h subject to Σ c_h n_h ≤ G and floor_h ≤ n_h ≤ N_h.

    The Lagrange (KKT) solution is n_h = clip(λ N_h S_h / sqrt(c_h), floor_h, N_h):
    cost-aware Neyman allocation (Neyman 1934; Cochran 1977, §5.5) with
    bounds. The spend is continuous and nondecreasing in λ, so n_h is nondecreasing
    in the budget.

    Floors of `priority` strata are paid first, together at most `priority_share` × G
    (scaled down beyond); when the floors cannot all be paid, only the other floors are
    scaled down to what is left.
    """
    full_cost = float((cost * traffic).sum())
    if full_cost <= budget:
        return _GroupPlan(samples=traffic.copy(), floors_met=True, floor_scale=1.0)
    scale = 1.0
    if priority is not None and priority.any():
        priority_cost = float((cost * floor)[priority].sum())
        cap = priority_share * budget
        if priority_cost > cap:
            floor = np.where(priority, floor * (cap / priority_cost), floor)
            scale = cap / priority_cost
    else:
        priority = np.zeros(floor.shape, dtype=np.bool_)
    floor_cost = float((cost * floor).sum())
    if floor_cost >= budget:
        paid = float((cost * floor)[priority].sum())
        others = floor_cost - paid
        rest = budget - paid
        others_scale = rest / others if others > 0 else 0.0
        samples = np.where(priority, floor, floor * others_scale)
        return _GroupPlan(
            samples=samples,
            floors_met=floor_cost <= budget and scale >= 1.0,
            floor_scale=min(others_scale, scale, 1.0),
        )
    weight = traffic * std / np.sqrt(cost)
    if not (weight > 0).any():
        return _GroupPlan(samples=floor.copy(), floors_met=scale >= 1.0, floor_scale=scale)
    # Only ratios of weights matter. Normalising keeps λ finite, and weights below
    # 1e-12 of the largest (S_h ≈ 0) stay at their floor instead of needing a λ whose
    # rounding would overspend.
    weight = weight / weight.max()
    weight = np.where(weight < 1e-12, 0.0, weight)
    lam = _solve_multiplier(weight, floor, traffic, cost, budget)
    samples = np.clip(_scaled(lam, weight), floor, traffic)
    return _GroupPlan(samples=samples, floors_met=scale >= 1.0, floor_scale=scale)


def neyman_allocation(
    strata: Sequence[Stratum],
    daily_budget_usd: float,
    reverse_share: float,
    *,
    priority_share: float = 1.0,
) -> Allocation:
    """π per stratum for a daily shadow budget, with floors, caps and a reverse share.

    Expected labels per day n_h ∝ N_h S_h / sqrt(c_h) (cost-aware Neyman allocation,
    Cochran 1977, §5.5), raised to each stratum's floor when the budget allows and
    capped at the traffic (π ≤ 1), the excess going to the other strata (the bounded
    optimum, see `_allocate_group`). Reverse strata get `reverse_share` of the budget
    and forward strata the rest; a group that samples all its traffic for less than
    its share passes the remainder to the other group. If a group's floors alone cost
    more than its budget, its floors are scaled down proportionally and `floors_met`
    is False. π_h = n_h / N_h, and Σ π_h N_h c_h ≤ daily_budget_usd always holds.
    A stratum with no expected traffic gets π = 0.

    Neyman allocation optimises the pooled rate; the floors are what keeps per-segment
    alerts powered (reference/drift.md §3d), so set them from the required labels.
    Floors of `priority` strata are paid first, up to `priority_share` of their group's
    budget together; only the other floors are scaled down when the rest cannot pay them.
    """
    if not math.isfinite(daily_budget_usd) or daily_budget_usd < 0:
        raise ValueError(f"daily_budget_usd must be finite and ≥ 0, got {daily_budget_usd!r}")
    if not (0.0 <= reverse_share <= 1.0):
        raise ValueError(f"reverse_share must lie in [0, 1], got {reverse_share!r}")
    if not (0.0 <= priority_share <= 1.0):
        raise ValueError(f"priority_share must lie in [0, 1], got {priority_share!r}")
    keys = [s.key for s in strata]
    if len(set(keys)) != len(keys):
        raise ValueError("stratum keys must be unique")
    if not strata:
        return Allocation({}, {}, 0.0, float(daily_budget_usd), True, (), ("no strata",))

    traffic = np.array([s.expected_traffic for s in strata], dtype=np.float64)
    cost = np.array([s.cost_per_sample_usd for s in strata], dtype=np.float64)
    std = np.array([s.std_dev for s in strata], dtype=np.float64)
    floor = np.minimum(np.array([s.floor_samples for s in strata], dtype=np.float64), traffic)
    reverse = np.array([s.is_reverse for s in strata], dtype=np.bool_)
    priority = np.array([s.priority for s in strata], dtype=np.bool_)
    notes: list[str] = []

    budgets = {
        False: (1.0 - reverse_share) * daily_budget_usd,
        True: reverse_share * daily_budget_usd,
    }
    full_costs = {flag: float((cost * traffic)[reverse == flag].sum()) for flag in (False, True)}
    # Money a group cannot use (it already samples all its traffic) goes to the other.
    spare = {flag: max(0.0, budgets[flag] - full_costs[flag]) for flag in (False, True)}
    effective = {flag: budgets[flag] + spare[not flag] for flag in (False, True)}
    if reverse.any() and spare[True] > 0 and full_costs[False] > budgets[False]:
        notes.append(f"reverse strata saturated; {spare[True]:.4f} USD/day moved to forward strata")
    if reverse.any() and (~reverse).any() and spare[False] > 0 and full_costs[True] > budgets[True]:
        notes.append(
            f"forward strata saturated; {spare[False]:.4f} USD/day moved to reverse strata"
        )

    samples = np.zeros(len(strata), dtype=np.float64)
    floors_met = True
    for flag, label in ((False, "forward"), (True, "reverse")):
        members = reverse == flag
        if not members.any():
            continue
        plan = _allocate_group(
            traffic[members],
            cost[members],
            std[members],
            floor[members],
            effective[flag],
            priority[members],
            priority_share,
        )
        samples[members] = plan.samples
        if not plan.floors_met:
            floors_met = False
            notes.append(
                f"{label} floors cost more than the {label} budget of "
                f"{effective[flag]:.4f} USD/day; floors scaled by {plan.floor_scale:.3f}"
            )

    with np.errstate(divide="ignore", invalid="ignore"):
        probability = np.where(traffic > 0, np.minimum(1.0, samples / traffic), 0.0)
    expected_cost = float((probability * traffic * cost).sum())
    # Only floating-point rounding gets here; never plan to spend more than the budget.
    # The few ulps come off the strata below π = 1, so a saturated stratum stays at 1.
    for _ in range(3):
        if expected_cost <= daily_budget_usd:
            break
        flexible = (probability < 1.0) & (traffic > 0)
        if not flexible.any():
            flexible = traffic > 0
        flexible_cost = float((probability * traffic * cost)[flexible].sum())
        excess = (expected_cost - daily_budget_usd) * (1.0 + 1e-9)
        probability[flexible] *= max(0.0, 1.0 - excess / flexible_cost) if flexible_cost else 0.0
        expected_cost = float((probability * traffic * cost).sum())
    if expected_cost > daily_budget_usd:
        probability[:] = 0.0  # a budget too small to represent (subnormal)
        expected_cost = 0.0
    if (traffic == 0).any():
        notes.append(f"{int((traffic == 0).sum())} strata with no expected traffic get π = 0")
    raw_floor = np.array([s.floor_samples for s in strata], dtype=np.float64)
    limited = tuple(k for k, f, n in zip(keys, raw_floor, traffic, strict=True) if f > n)
    if limited:
        notes.append(
            f"{len(limited)} strata have a floor above their traffic; floor capped at π = 1"
        )
    if full_costs[False] + full_costs[True] <= daily_budget_usd:
        notes.append("the budget covers all traffic; every π = 1")
    return Allocation(
        probabilities={k: float(p) for k, p in zip(keys, probability, strict=True)},
        expected_samples_per_day={
            k: float(p * n) for k, p, n in zip(keys, probability, traffic, strict=True)
        },
        expected_cost_usd=expected_cost,
        budget_usd=float(daily_budget_usd),
        floors_met=floors_met,
        traffic_limited=limited,
        notes=tuple(notes),
    )
