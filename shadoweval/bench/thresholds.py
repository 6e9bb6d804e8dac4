"""`shadoweval bench thresholds`: does the threshold advisor keep its guarantee, and how much
of the possible saving does it find?

What it measures. A fast numpy-only simulation of the labelled sample (not the HTTP
pipeline): per seed, `days` days of a router's traffic in three segments, each request with
a score s ~ Beta(2, 2.5), a true P(strong needed) — p = 0.4·s² in two segments (a cautious
router: strong is needed less often than the score says, so the threshold can rise; the
true optimum for ε = 0.05 is t ≈ 0.62), and one miscalibrated segment
(p = expit(1.2·logit(s) − 0.3): the router under-rates how often strong is needed, harm at
t₀ is ≈ 0.13 and the threshold must fall to ≈ 0.34) — both
tiers' costs (cheap ≈ $0.0008 log-normal, strong ≈ 9× it), the threshold in force t₀ = 0.5,
and Poisson sampling with π per tier (cheap-routed forward shadows, a smaller share of
strong-routed reverse shadows) sized to `labels_per_day` labels a day. Each segment's curve
and recommendation come from `stats.thresholds` exactly as the service computes them.

Per segment: the true optimal threshold for ε (the largest grid threshold whose expected
harm Σ1[s<t]·p/N is ≤ ε), the recommended threshold, its true harm and cost, the realized
saving against t₀ (USD per day, true expected costs), and over all seeds the violation
rate (true harm at the recommendation > ε; goal ≤ δ), the same for the naive plug-in
chooser, and the share of the oracle's saving captured (Σ realized / Σ oracle over
segment-runs where the oracle saves; goal ≥ 70 %). Deterministic for a seed except
`runtime_seconds`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shadoweval.stats import threshold_recommendation, thresholds

FloatArray = npt.NDArray[np.float64]

SEGMENTS = {"billing": 0.45, "code": 0.35, "legal": 0.20}
MISCALIBRATED = "legal"
THRESHOLD_IN_FORCE = 0.5


@dataclass(frozen=True)
class SimulatedWindow:
    """One segment's window of traffic with its truth and its labelled sample."""

    score: FloatArray
    strong_routed: npt.NDArray[np.bool_]
    cost_usd: FloatArray
    labelled: npt.NDArray[np.bool_]
    strong_needed: FloatArray  # the drawn label of every request (read only where labelled)
    other_cost_usd: FloatArray
    inclusion_probability: FloatArray
    p_strong_needed: FloatArray  # the truth
    cheap_cost_usd: FloatArray
    strong_cost_usd: FloatArray


def true_p_strong_needed(score: FloatArray, miscalibrated: bool) -> FloatArray:
    if miscalibrated:
        s = np.clip(score, 1e-6, 1 - 1e-6)
        out: FloatArray = 1.0 / (1.0 + np.exp(-(1.2 * np.log(s / (1 - s)) - 0.3)))
        return out
    return 0.4 * score**2


def simulate_window(
    rng: np.random.Generator,
    *,
    requests: int,
    miscalibrated: bool = False,
    pi_cheap: float = 0.15,
    pi_strong: float = 0.08,
    threshold_in_force: float = THRESHOLD_IN_FORCE,
) -> SimulatedWindow:
    """Requests of one segment with their truth, routed at t₀ and Poisson-sampled by tier."""
    score = rng.beta(2.0, 2.5, requests)
    p = true_p_strong_needed(score, miscalibrated)
    y = rng.binomial(1, p).astype(float)
    cheap_cost = rng.lognormal(math.log(0.0008), 0.5, requests)
    strong_cost = cheap_cost * 9.0 * rng.lognormal(0.0, 0.2, requests)
    strong = score >= threshold_in_force
    pi = np.where(strong, pi_strong, pi_cheap)
    labelled = rng.random(requests) < pi
    return SimulatedWindow(
        score=score,
        strong_routed=strong,
        cost_usd=np.where(strong, strong_cost, cheap_cost),
        labelled=labelled,
        strong_needed=y,
        other_cost_usd=np.where(strong, cheap_cost, strong_cost),
        inclusion_probability=pi,
        p_strong_needed=p,
        cheap_cost_usd=cheap_cost,
        strong_cost_usd=strong_cost,
    )


def true_curve(window: SimulatedWindow, grid: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Expected harm (share of all traffic) and cost per request (USD) at each threshold."""
    below = window.score[:, None] < grid[None, :]
    harm = (below * window.p_strong_needed[:, None]).mean(axis=0)
    cost = np.where(below, window.cheap_cost_usd[:, None], window.strong_cost_usd[:, None])
    return harm, cost.mean(axis=0)


def window_curve(window: SimulatedWindow, **options: Any) -> thresholds.ThresholdCurve:
    """The threshold curve of a simulated window (unlabelled rows as NaN) around the
    threshold in force; `options` go to `threshold_curve` (grid, estimator, replicates…)."""
    return thresholds.threshold_curve(
        score=window.score,
        strong_routed=window.strong_routed,
        cost_usd=window.cost_usd,
        labelled=window.labelled,
        strong_needed=np.where(window.labelled, window.strong_needed, np.nan),
        other_cost_usd=np.where(window.labelled, window.other_cost_usd, np.nan),
        inclusion_probability=window.inclusion_probability,
        threshold_in_force=THRESHOLD_IN_FORCE,
        **options,
    )


def curve_for(window: SimulatedWindow, replicates: int, seed: int) -> thresholds.ThresholdCurve:
    return window_curve(
        window,
        grid=thresholds.default_grid(THRESHOLD_IN_FORCE, 51),
        replicates=replicates,
        seed=seed,
    )


def run_thresholds_bench(
    *,
    seeds: int = 50,
    first_seed: int = 0,
    days: int = 7,
    labels_per_day: float = 900.0,
    harm_budget: float = 0.05,
    risk: float = 0.1,
    replicates: int = 300,
) -> dict[str, Any]:
    """The figures of the module doc, per segment and over all seeds."""
    started = time.perf_counter()
    # π per tier: cheap share ≈ P(Beta(2, 2.5) < 0.5) ≈ 0.59; reverse shadows at half the rate.
    cheap_share = 0.59
    requests_per_day = labels_per_day / (cheap_share * 1.0 + (1 - cheap_share) * 0.5) / 0.15
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SEGMENTS}
    for seed in range(first_seed, first_seed + seeds):
        rng = np.random.default_rng(seed)
        for name, share in SEGMENTS.items():
            requests = int(requests_per_day * days * share)
            window = simulate_window(
                rng, requests=requests, miscalibrated=name == MISCALIBRATED, pi_strong=0.075
            )
            curve = curve_for(window, replicates, seed)
            harm, cost = true_curve(window, curve.threshold)
            allowed = np.flatnonzero(harm <= harm_budget)
            oracle = int(allowed.max()) if allowed.size else 0
            in_force = int(np.flatnonzero(np.isclose(curve.threshold, THRESHOLD_IN_FORCE))[0])
            recommendation = threshold_recommendation.recommend(
                curve, harm_budget=harm_budget, risk=risk
            )
            chosen = (
                in_force
                if recommendation.threshold is None
                else int(np.flatnonzero(np.isclose(curve.threshold, recommendation.threshold))[0])
            )
            plug_in = threshold_recommendation.plug_in_threshold(curve, harm_budget=harm_budget)
            plug_in_index = int(np.flatnonzero(np.isclose(curve.threshold, plug_in))[0])
            per_day = requests / days
            rows[name].append(
                {
                    "seed": seed,
                    "oracle_threshold": float(curve.threshold[oracle]),
                    "recommended_threshold": recommendation.threshold,
                    "change": recommendation.change,
                    "true_harm_at_recommendation": float(harm[chosen]),
                    "true_cost_per_request_usd": float(cost[chosen]),
                    "realized_savings_usd_per_day": float(
                        (cost[in_force] - cost[chosen]) * per_day
                    ),
                    "oracle_savings_usd_per_day": float((cost[in_force] - cost[oracle]) * per_day),
                    "forecast_savings_usd_per_day": (
                        None
                        if recommendation.savings_vs_in_force_usd is None
                        else recommendation.savings_vs_in_force_usd * per_day
                    ),
                    "violation": bool(harm[chosen] > harm_budget),
                    "plug_in_violation": bool(harm[plug_in_index] > harm_budget),
                    "estimator": curve.estimator,
                    "labels": curve.n_labels,
                }
            )
    segments = []
    for name, runs in rows.items():
        oracle_saving = [r for r in runs if r["oracle_savings_usd_per_day"] > 0]
        captured = (
            sum(r["realized_savings_usd_per_day"] for r in oracle_saving)
            / sum(r["oracle_savings_usd_per_day"] for r in oracle_saving)
            if oracle_saving
            else None
        )
        first = runs[0]
        segments.append(
            {
                "segment": name,
                "miscalibrated": name == MISCALIBRATED,
                "traffic_share": SEGMENTS[name],
                "labels_per_run_mean": float(np.mean([r["labels"] for r in runs])),
                "oracle_threshold_median": float(np.median([r["oracle_threshold"] for r in runs])),
                "recommended_threshold_median": _median([r["recommended_threshold"] for r in runs]),
                "true_harm_at_recommendation_mean": float(
                    np.mean([r["true_harm_at_recommendation"] for r in runs])
                ),
                "true_cost_per_request_usd_mean": float(
                    np.mean([r["true_cost_per_request_usd"] for r in runs])
                ),
                "realized_savings_usd_per_day_mean": float(
                    np.mean([r["realized_savings_usd_per_day"] for r in runs])
                ),
                "oracle_savings_usd_per_day_mean": float(
                    np.mean([r["oracle_savings_usd_per_day"] for r in runs])
                ),
                "violation_rate": float(np.mean([r["violation"] for r in runs])),
                "plug_in_violation_rate": float(np.mean([r["plug_in_violation"] for r in runs])),
                "share_of_oracle_savings_captured": captured,
                "first_seed": first,
            }
        )
    all_runs = [r for runs in rows.values() for r in runs]
    saving_runs = [r for r in all_runs if r["oracle_savings_usd_per_day"] > 0]
    return {
        "seeds": seeds,
        "days": days,
        "labels_per_day": labels_per_day,
        "harm_budget": harm_budget,
        "risk": risk,
        "threshold_in_force": THRESHOLD_IN_FORCE,
        "replicates": replicates,
        "simulation": "numpy-only labelled sample (not the HTTP pipeline)",
        "segments": segments,
        "violation_rate": float(np.mean([r["violation"] for r in all_runs])),
        "plug_in_violation_rate": float(np.mean([r["plug_in_violation"] for r in all_runs])),
        "share_of_oracle_savings_captured": (
            sum(r["realized_savings_usd_per_day"] for r in saving_runs)
            / sum(r["oracle_savings_usd_per_day"] for r in saving_runs)
            if saving_runs
            else None
        ),
        "goals": {"violation_rate_at_most": risk, "share_of_oracle_savings_at_least": 0.70},
        "runtime_seconds": round(time.perf_counter() - started, 2),
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def format_thresholds_report(figures: dict[str, Any]) -> str:
    lines = [
        f"threshold advisor, {figures['seeds']} seeds × {figures['days']} days of "
        f"~{figures['labels_per_day']:.0f} labels/day, ε = {figures['harm_budget']}, "
        f"δ = {figures['risk']}, t₀ = {figures['threshold_in_force']} ({figures['simulation']})"
    ]
    for s in figures["segments"]:
        captured = s["share_of_oracle_savings_captured"]
        lines.append(
            f"  {s['segment']:<8} {'(miscalibrated) ' if s['miscalibrated'] else ''}"
            f"oracle t {s['oracle_threshold_median']:.2f}, recommended t "
            f"{s['recommended_threshold_median']}, "
            f"true harm {s['true_harm_at_recommendation_mean']:.4f}, "
            f"cost ${s['true_cost_per_request_usd_mean']:.5f}/request, saved "
            f"${s['realized_savings_usd_per_day_mean']:.2f}/day of the oracle's "
            f"${s['oracle_savings_usd_per_day_mean']:.2f}; violations {s['violation_rate']:.0%} "
            f"(plug-in {s['plug_in_violation_rate']:.0%}); captured "
            f"{'—' if captured is None else f'{captured:.0%}'}"
        )
    total = figures["share_of_oracle_savings_captured"]
    lines.append(
        f"overall: violation rate {figures['violation_rate']:.1%} (goal ≤ {figures['risk']:.0%}), "
        f"plug-in {figures['plug_in_violation_rate']:.1%}; oracle savings captured "
        f"{'—' if total is None else f'{total:.0%}'} (goal ≥ 70 %); "
        f"{figures['runtime_seconds']} s"
    )
    return "\n".join(lines)
