"""Pure judge-quality figures: swap consistency, position preference, verbosity bias."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from shadoweval.stats.rates import Z_95, wilson_interval


@dataclass(frozen=True)
class Proportion:
    estimate: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class Correlation:
    estimate: float
    ci_low: float
    ci_high: float
    n: int


def wilson(successes: int, n: int) -> Proportion:
    """Wilson score interval (Wilson 1927), 95 %."""
    if n == 0:
        return Proportion(math.nan, math.nan, math.nan, 0)
    p = successes / n
    low, high = wilson_interval(p, n)
    return Proportion(p, low, high, n)


def pearson_with_interval(x: ArrayLike, y: ArrayLike) -> Correlation:
    """Pearson r with a Fisher-z 95 % interval: atanh(r) ± 1.96/√(n−3) (Fisher 1921)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = int(xs.size)
    if n < 4 or np.std(xs) == 0 or np.std(ys) == 0:
        return Correlation(math.nan, math.nan, math.nan, n)
    r = float(np.corrcoef(xs, ys)[0, 1])
    r_clipped = min(max(r, -0.999999), 0.999999)
    z, half = math.atanh(r_clipped), Z_95 / math.sqrt(n - 3)
    return Correlation(r, math.tanh(z - half), math.tanh(z + half), n)


@dataclass(frozen=True)
class JudgeQuality:
    swap_consistency: Proportion  # both orders agree
    position_a_preference: Proportion  # share of decisive calls that picked position A
    verbosity_correlation: Correlation  # length difference vs verdict direction


def judge_quality(
    *,
    consistent: ArrayLike,
    winners_first: list[str],
    winners_second: list[str],
    stronger_minus_cheaper_chars: ArrayLike,
    verdict_direction: ArrayLike,
) -> JudgeQuality:
    """Figures for one judge (model × prompt hash) over its finished pairs.

    `verdict_direction` is +1 when the stronger answer won the pair, −1 when the
    cheaper did, 0 for a tie or an inconsistent pair; a positive correlation with
    the length difference means the judge favours the longer answer beyond what
    the tiers explain — read it beside the consistency rate (Zheng et al. 2023).
    """
    consistent_flags = np.asarray(consistent, dtype=bool)
    decisive = [w for w in (*winners_first, *winners_second) if w in ("A", "B")]
    return JudgeQuality(
        swap_consistency=wilson(int(consistent_flags.sum()), int(consistent_flags.size)),
        position_a_preference=wilson(sum(1 for w in decisive if w == "A"), len(decisive)),
        verbosity_correlation=pearson_with_interval(
            stronger_minus_cheaper_chars, verdict_direction
        ),
    )
