"""Win / tie / loss shares of judged pairs (the cheaper answer against the stronger one),
each a Hájek rate (`rates.hajek_rate`) of its indicator over the Poisson sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shadoweval.stats.rates import RateEstimate, hajek_rate
from shadoweval.stats.validation import (
    _binary,
    _inclusion_probability,
    _same_length,
    _vector,
)

# Outcome codes of a judged pair, read as "the cheaper answer's result".
CHEAPER_WINS = 1
TIE = 0
STRONGER_WINS = -1


@dataclass(frozen=True)
class PairOutcomes:
    """Weighted shares of judged pairs: the cheaper answer won, tied, or the stronger one won.

    The three estimates sum to 1. `stronger_wins` is the harm rate when the
    pairs are cheap-routed requests (a stronger win in both orders is
    `strong_needed = 1`).
    """

    cheaper_wins: RateEstimate
    ties: RateEstimate
    stronger_wins: RateEstimate
    n: int
    effective_n: float
    weight_sum: float


def outcome_codes(
    cheaper_wins: npt.ArrayLike, ties: npt.ArrayLike, stronger_wins: npt.ArrayLike
) -> npt.NDArray[np.int8]:
    """Outcome codes (CHEAPER_WINS = 1, TIE = 0, STRONGER_WINS = −1) from three 0/1 masks.

    Each pair must be in exactly one mask. Per DESIGN.md (Judge), a pair whose
    two judge orders disagree is a tie.
    """
    cheaper = _binary(cheaper_wins, "cheaper_wins")
    tie = _binary(ties, "ties")
    stronger = _binary(stronger_wins, "stronger_wins")
    _same_length(cheaper_wins=cheaper, ties=tie, stronger_wins=stronger)
    if not np.all(cheaper + tie + stronger == 1.0):
        raise ValueError("every pair must be in exactly one of cheaper_wins, ties, stronger_wins")
    return (cheaper - stronger).astype(np.int8)


def pairwise_outcomes(
    outcome: npt.ArrayLike, inclusion_probability: npt.ArrayLike, confidence: float = 0.95
) -> PairOutcomes:
    """Weighted win / tie / loss shares of the cheaper answer against the stronger one.

    `outcome` holds one code per judged pair: CHEAPER_WINS (1), TIE (0) or
    STRONGER_WINS (−1); build it from masks with `outcome_codes`. Each share is
    `hajek_rate` of its indicator: share_k = Σ wᵢ·1[outcomeᵢ = k] / Σ wᵢ, with the
    Poisson-sampling variance and interval described there.

    Sources: as `hajek_rate`; labels per DESIGN.md (Judge).
    """
    codes = _vector(outcome, "outcome")
    if not np.all(np.isin(codes, (CHEAPER_WINS, TIE, STRONGER_WINS))):
        raise ValueError("outcome codes must be 1 (cheaper wins), 0 (tie) or -1 (stronger wins)")
    pi = _inclusion_probability(inclusion_probability, len(codes))
    shares = [
        hajek_rate((codes == code).astype(np.float64), pi, confidence)
        for code in (CHEAPER_WINS, TIE, STRONGER_WINS)
    ]
    return PairOutcomes(
        cheaper_wins=shares[0],
        ties=shares[1],
        stronger_wins=shares[2],
        n=shares[0].n,
        effective_n=shares[0].effective_n,
        weight_sum=shares[0].weight_sum,
    )
