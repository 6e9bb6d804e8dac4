"""`shadoweval bench estimates`: judge-only, human-only and PPI harm rates against a biased
judge, and how soon label-free expected harm flags a shift into a riskier score region.

Part 1 (coverage): each repetition draws 5,000 judged cheap-routed pairs with harm
probability `harm_rate`; the judge misses 30 % of harmful pairs and flags 5 % of good
ones; a uniform review sample of 50, 200 or 1,000 pairs gets human labels (the truth).
Reported per human-label count: the share of 95 % intervals that cover the truth and
their mean width, for the judge-only (process-level), human-only and PPI++ estimates.

Part 2 (lead time): an hourly stream of cheap-routed decisions from a calibrated router
(P(harm | score) = score) whose score distribution moves, at hour 0, from mean 0.10 to
mean 0.25 (a riskier region: more requests the router is unsure about). 40 labels a day
are drawn uniformly. Each hour after the shift: the labelled estimate is the process-level
harm rate of the last 24 hours' labels; the expected estimate is the mean recalibrated
P(harm) of that hour's decisions, the map refitted daily on every label so far. Each
flags when its interval's lower end passes the alert threshold; reported: the hours each
took, their median over repetitions and the ratio.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shadoweval.stats.expected_harm import expected_harm_by_group
from shadoweval.stats.ppi import ppi_harm_rate
from shadoweval.stats.rates import process_rate

JUDGE_LABELS = 5000
HUMAN_LABELS = (50, 200, 1000)
JUDGE_MISSES = 0.30
JUDGE_FLIPS = 0.05


def _coverage(repetitions: int, seed: int, harm_rate: float) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for human in HUMAN_LABELS:
        hits = {"judge_only": 0, "human_only": 0, "ppi": 0}
        width = {"judge_only": 0.0, "human_only": 0.0, "ppi": 0.0}
        effective = 0.0
        q = human / JUDGE_LABELS
        for _ in range(repetitions):
            truth = (rng.random(JUDGE_LABELS) < harm_rate).astype(float)
            missed = rng.random(JUDGE_LABELS) < JUDGE_MISSES
            flipped = rng.random(JUDGE_LABELS) < JUDGE_FLIPS
            judge = np.where(truth == 1.0, ~missed, flipped).astype(float)
            reviewed = (rng.random(JUDGE_LABELS) < q).astype(float)
            result = ppi_harm_rate(judge, 1.0, truth * reviewed, q, reviewed)
            intervals = {
                "judge_only": (result.judge_only.ci_low, result.judge_only.ci_high),
                "human_only": (result.human_only_ci_low, result.human_only_ci_high),
                "ppi": (result.ci_low, result.ci_high),
            }
            for name, (low, high) in intervals.items():
                hits[name] += low <= harm_rate <= high
                width[name] += high - low
            effective += result.effective_human_n
        out[str(human)] = {
            **{
                name: {
                    "coverage": hits[name] / repetitions,
                    "mean_width": width[name] / repetitions,
                }
                for name in hits
            },
            "ppi_effective_human_labels": effective / repetitions,
        }
    return out


def _first_flag(lows: list[float], threshold: float) -> float:
    for hour, low in enumerate(lows):
        if low > threshold:
            return float(hour + 1)
    return math.inf


def _lead_time(
    repetitions: int,
    seed: int,
    *,
    decisions_per_hour: int,
    labels_per_day: int,
    threshold: float,
    horizon_hours: int,
    n_boot: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    before_law, after_law = (2.0, 18.0), (5.0, 15.0)  # Beta means 0.10 → 0.25
    label_share = labels_per_day / (24 * decisions_per_hour)
    expected_hours, labelled_hours = [], []
    for rep in range(repetitions):
        # Seven days before the shift: the labels the map is fitted on.
        before = rng.beta(*before_law, 7 * 24 * decisions_per_hour)
        harm_before = (rng.random(len(before)) < before).astype(float)
        labelled_before = rng.random(len(before)) < label_share
        after = rng.beta(*after_law, horizon_hours * decisions_per_hour)
        harm_after = (rng.random(len(after)) < after).astype(float)
        labelled_after = rng.random(len(after)) < label_share
        hour_of = np.repeat(np.arange(horizon_hours), decisions_per_hour)

        # The map is refitted once a day on every label so far (as the service refits it on
        # the labels before its window), and applied to each hour's decisions.
        stream_score = np.concatenate([before, after])
        stream_harm = np.concatenate([harm_before, harm_after])
        stream_labelled = np.concatenate([labelled_before, labelled_after])
        expected_lows: list[float] = []
        for day_start in range(0, horizon_hours, 24):
            upto = len(before) + day_start * decisions_per_hour
            hours = range(day_start, min(horizon_hours, day_start + 24))
            take = slice(hours[0] * decisions_per_hour, (hours[-1] + 1) * decisions_per_hour)
            _, by_hour = expected_harm_by_group(
                stream_score[:upto][stream_labelled[:upto]],
                stream_harm[:upto][stream_labelled[:upto]],
                1.0,
                after[take],
                hour_of[take].tolist(),
                n_boot=n_boot,
                seed=rep,
            )
            expected_lows.extend(by_hour[h].ci_low for h in hours)

        # Labelled: the last 24 hours' labels, reaching back before the shift at first.
        day = 24 * decisions_per_hour
        labelled_lows = []
        for hour in range(horizon_hours):
            upto = len(before) + (hour + 1) * decisions_per_hour
            window = stream_harm[upto - day : upto][stream_labelled[upto - day : upto]]
            labelled_lows.append(process_rate(window, 1.0).ci_low if len(window) else 0.0)
        expected_hours.append(_first_flag(expected_lows, threshold))
        labelled_hours.append(_first_flag(labelled_lows, threshold))
    median_expected = float(np.median(expected_hours))
    median_labelled = float(np.median(labelled_hours))
    return {
        "decisions_per_hour": decisions_per_hour,
        "labels_per_day": labels_per_day,
        "threshold": threshold,
        "score_mean_before": before_law[0] / sum(before_law),
        "score_mean_after": after_law[0] / sum(after_law),
        "horizon_hours": horizon_hours,
        "expected_hours_median": median_expected,
        "labelled_hours_median": median_labelled,
        "expected_never_flagged": sum(math.isinf(h) for h in expected_hours),
        "labelled_never_flagged": sum(math.isinf(h) for h in labelled_hours),
        "speedup": median_labelled / median_expected if median_expected > 0 else math.inf,
    }


def run_estimates_bench(
    *,
    repetitions: int = 500,
    lead_repetitions: int = 20,
    seed: int = 0,
    harm_rate: float = 0.2,
) -> dict[str, Any]:
    return {
        "judge_labels": JUDGE_LABELS,
        "harm_rate": harm_rate,
        "repetitions": repetitions,
        "coverage": _coverage(repetitions, seed, harm_rate),
        "lead_time": _lead_time(
            lead_repetitions,
            seed + 1,
            decisions_per_hour=100,
            labels_per_day=40,
            threshold=0.15,
            horizon_hours=72,
            n_boot=100,
        ),
    }


def format_estimates_report(figures: dict[str, Any]) -> str:
    lines = [
        f"harm rate {figures['harm_rate']:.0%}, {figures['judge_labels']} judge labels, judge "
        f"misses {JUDGE_MISSES:.0%} of harm and flags {JUDGE_FLIPS:.0%} of good pairs, "
        f"{figures['repetitions']} repetitions",
        f"{'human labels':>12}  {'judge-only':>18}  {'human-only':>18}  {'PPI':>18}  eff. n",
    ]
    for human, row in figures["coverage"].items():
        cells = [
            f"{row[name]['coverage']:.3f} / {row[name]['mean_width']:.4f}"
            for name in ("judge_only", "human_only", "ppi")
        ]
        lines.append(
            f"{human:>12}  {cells[0]:>18}  {cells[1]:>18}  {cells[2]:>18}  "
            f"{row['ppi_effective_human_labels']:.0f}"
        )
    lead = figures["lead_time"]
    lines.append(
        f"score shift {lead['score_mean_before']:.2f} → {lead['score_mean_after']:.2f}, "
        f"threshold {lead['threshold']:.0%}, {lead['labels_per_day']} labels/day: expected harm "
        f"flags after {lead['expected_hours_median']:.0f} h (median), labelled estimate after "
        f"{lead['labelled_hours_median']:.0f} h: {lead['speedup']:.1f}× sooner"
    )
    return "\n".join(lines)
