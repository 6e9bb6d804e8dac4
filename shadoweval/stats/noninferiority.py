"""One-sided non-inferiority test of a candidate model against the model it would replace.

Each replayed request gives a paired outcome from the judge's two orders
(DESIGN.md, Judge): a *loss* when the replaced model's answer wins in both
orders, a *win* when the candidate's answer wins in both, otherwise a tie (a
tie, or orders that disagree). The quality **drop** is

    Δ = P(loss) − P(win) = (1 − P(win)) − (1 − P(loss))
      = replaced-acceptable rate − candidate-acceptable rate,

the difference of two *paired* proportions, where "acceptable" is the gate's
reading of the judge labels (`cheap_acceptable` with the candidate in the cheaper
slot). Equal models give Δ = 0 whatever the judge's tie rate. The gate tests

    H0: Δ ≥ max_drop   against   H1: Δ < max_drop

and passes only when H0 is rejected at level α (one-sided), i.e. when the
one-sided upper (1 − α) confidence bound of Δ is below `max_drop`.

Statistic: Tango's score test for a difference of paired proportions
(T. Tango, "Equivalence test and confidence interval for the difference in
proportions for the paired-sample design", Statistics in Medicine 17:891–908,
1998; also Liu et al., Stat Med 21:231–245, 2002, for its non-inferiority use).
With b losses, c wins among n pairs,

    Z(δ) = (b − c − n·δ) / sqrt(n · (2·q̂ + δ·(1 − δ)))

where q̂ is the maximum-likelihood P(win) under the constraint Δ = δ:

    q̂ = (sqrt(B² − 4·A·C) − B) / (2·A),
    A = 2n,  B = −b − c + (2n − b + c)·δ,  C = −c·δ·(1 − δ).

Why the score test rather than the Wald interval: the Wald variance
(b + c − (b − c)²/n)/n² is 0 when every pair is a tie, so a handful of ties would
"prove" non-inferiority; the score test's variance is evaluated under H0 and
stays positive, so small samples fail unless their evidence is strong
(n ties pass a margin δ only when n > z²·(1 − δ)/δ). At δ = 0 the statistic is
McNemar's z, (b − c)/sqrt(b + c).

Strata (segments): the overall test combines per-segment estimates with weights
W_h (each segment's share of traffic) as a stratified score statistic,

    Z(δ) = Σ W_h (Δ̂_h − δ) / sqrt(Σ W_h² · V_h(δ) / n_h),  V_h(δ) = 2·q̂_h(δ) + δ(1 − δ),

which with one stratum is Tango's test. The bound is the δ where Z(δ) = −z_{1−α},
found by bisection (Z decreases in δ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

LOSS, TIE, WIN = -1, 0, 1  # the candidate's side of a judged pair


@dataclass(frozen=True)
class PairedCounts:
    """Outcomes of n judged pairs from the candidate's side."""

    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[int]) -> PairedCounts:
        """Counts of LOSS (−1), TIE (0) and WIN (+1) codes."""
        unknown = set(outcomes) - {LOSS, TIE, WIN}
        if unknown:
            raise ValueError(f"outcome codes must be -1, 0 or 1, got {sorted(unknown)}")
        return cls(
            wins=sum(1 for o in outcomes if o == WIN),
            ties=sum(1 for o in outcomes if o == TIE),
            losses=sum(1 for o in outcomes if o == LOSS),
        )


@dataclass(frozen=True)
class NonInferiority:
    """The test's result. `drop` is Δ̂ (loss rate − win rate); `upper_bound` its one-sided
    (1 − α) upper confidence bound; `passed` means Δ < margin was shown at level α."""

    n: int
    wins: int
    ties: int
    losses: int
    drop: float | None
    upper_bound: float | None
    margin: float
    alpha: float
    z: float | None  # the score statistic at δ = margin; ≤ −z_{1−α} passes
    p_value: float | None  # one-sided, P(Z ≤ z) under Δ = margin
    passed: bool
    reason: str  # why it passed or failed, in words


def restricted_win_rate(losses: int, wins: int, n: int, delta: float) -> float:
    """Maximum-likelihood P(win) among n pairs under the constraint P(loss) − P(win) = δ."""
    a = 2.0 * n
    b = -losses - wins + (2.0 * n - losses + wins) * delta
    c = -wins * delta * (1.0 - delta)
    root = (math.sqrt(max(b * b - 4.0 * a * c, 0.0)) - b) / (2.0 * a)
    # Rounding must not leave the parameter space: 0 ≤ q and q + (q + δ) ≤ 1.
    return min(max(root, 0.0, -delta), (1.0 - delta) / 2.0)


def _stratum_variance(counts: PairedCounts, delta: float) -> float:
    q = restricted_win_rate(counts.losses, counts.wins, counts.n, delta)
    return max(2.0 * q + delta * (1.0 - delta), 0.0)


def score_statistic(
    strata: Sequence[PairedCounts], weights: Sequence[float], delta: float
) -> float:
    """Z(δ) of the (stratified) score test; −inf/+inf when the variance vanishes."""
    numerator = 0.0
    variance = 0.0
    for counts, weight in zip(strata, weights, strict=True):
        if counts.n == 0 or weight == 0:
            continue
        numerator += weight * ((counts.losses - counts.wins) / counts.n - delta)
        variance += weight * weight * _stratum_variance(counts, delta) / counts.n
    if variance <= 0.0:
        if numerator == 0.0:
            return 0.0
        return math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def _normalised(strata: Sequence[PairedCounts], weights: Sequence[float]) -> list[float]:
    if len(strata) != len(weights):
        raise ValueError("one weight per stratum is needed")
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError("weights must be finite and non-negative")
    used = [w if s.n > 0 else 0.0 for s, w in zip(strata, weights, strict=True)]
    total = sum(used)
    return [w / total for w in used] if total > 0 else used


def upper_bound(
    strata: Sequence[PairedCounts], weights: Sequence[float], alpha: float
) -> float | None:
    """One-sided (1 − α) upper confidence bound of Δ, by inverting the score test."""
    norm = _normalised(strata, weights)
    if sum(norm) == 0:
        return None
    critical = -NormalDist().inv_cdf(1.0 - alpha)
    estimate = sum(
        w * (s.losses - s.wins) / s.n for s, w in zip(strata, norm, strict=True) if w > 0
    )
    low, high = estimate, 1.0
    if score_statistic(strata, norm, high) >= critical:
        return 1.0
    for _ in range(100):
        middle = (low + high) / 2.0
        if score_statistic(strata, norm, middle) >= critical:
            low = middle
        else:
            high = middle
        if high - low < 1e-10:
            break
    return high


def noninferiority_test(
    strata: Sequence[PairedCounts],
    *,
    margin: float,
    alpha: float = 0.05,
    weights: Sequence[float] | None = None,
) -> NonInferiority:
    """H0: Δ ≥ margin vs H1: Δ < margin over one or more strata (see the module docstring).

    `weights` are the strata's shares of traffic (normalised here; default: their
    sample sizes, i.e. the pooled sample). Strata without pairs are left out; no
    pairs at all fails with the reason.
    """
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    strata = list(strata)
    weights = [float(s.n) for s in strata] if weights is None else list(weights)
    norm = _normalised(strata, weights)
    wins = sum(s.wins for s in strata)
    ties = sum(s.ties for s in strata)
    losses = sum(s.losses for s in strata)
    n = wins + ties + losses
    if sum(norm) == 0:
        return NonInferiority(
            n=n,
            wins=wins,
            ties=ties,
            losses=losses,
            drop=None,
            upper_bound=None,
            margin=margin,
            alpha=alpha,
            z=None,
            p_value=None,
            passed=False,
            reason="no judged pairs: nothing shows the candidate is not worse",
        )
    drop = sum(w * (s.losses - s.wins) / s.n for s, w in zip(strata, norm, strict=True) if w > 0)
    z = score_statistic(strata, norm, margin)
    p_value = NormalDist().cdf(z) if math.isfinite(z) else (0.0 if z < 0 else 1.0)
    bound = upper_bound(strata, norm, alpha)
    assert bound is not None
    passed = z < -NormalDist().inv_cdf(1.0 - alpha)
    confidence = f"{100 * (1 - alpha):g} %"
    if passed:
        reason = f"drop {drop:+.3f}, {confidence} upper bound {bound:.3f} < margin {margin:.3f}"
    elif drop >= margin:
        reason = f"drop {drop:+.3f} is at or above the margin {margin:.3f}"
    else:
        reason = (
            f"drop {drop:+.3f}, but its {confidence} upper bound {bound:.3f} ≥ margin "
            f"{margin:.3f}: too few pairs to show non-inferiority"
        )
    return NonInferiority(
        n=n,
        wins=wins,
        ties=ties,
        losses=losses,
        drop=drop,
        upper_bound=bound,
        margin=margin,
        alpha=alpha,
        z=z,
        p_value=p_value,
        passed=passed,
        reason=reason,
    )


def min_pairs_to_pass(margin: float, alpha: float = 0.05) -> int:
    """The fewest pairs with which a candidate exactly as good as the replaced model can pass.

    Assumption: the true drop is 0 and the judge finds no difference at all (every pair a
    tie). That is the most favourable sample such a candidate can give: discordant pairs
    (wins and losses in equal numbers) only widen the bound, so below this size a gate on
    an equal candidate fails whatever the judge says (only a candidate that wins outright
    could pass). With b = c = 0, q̂ = 0 and Z(δ) = −sqrt(n·δ / (1 − δ)), so n ties pass
    exactly when n > z²_{1−α}·(1 − δ)/δ; at δ = 0.05, α = 0.05: n ≥ 52.
    """
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    z = NormalDist().inv_cdf(1.0 - alpha)
    pairs = max(1, math.floor(z * z * (1.0 - margin) / margin) + 1)

    # The closed form can land one off where z²(1 − δ)/δ is within rounding of an integer;
    # the test itself has the last word, so "pairs passes, pairs − 1 fails" always holds.
    def ties_pass(n: int) -> bool:
        return noninferiority_test([PairedCounts(0, n, 0)], margin=margin, alpha=alpha).passed

    while pairs > 1 and ties_pass(pairs - 1):
        pairs -= 1
    while not ties_pass(pairs):
        pairs += 1
    return pairs
