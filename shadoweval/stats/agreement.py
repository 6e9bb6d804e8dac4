"""Cohen's κ between two raters (the judge and a human) with its asymptotic 95 % interval.

For n items each labelled by both raters into k categories, with p_ij the share of
items rater 1 put in i and rater 2 in j, row margins p_i. and column margins p_.j:

    p_o = Σ_i p_ii                    observed agreement
    p_e = Σ_i p_i. · p_.i             agreement expected by chance
    κ   = (p_o − p_e) / (1 − p_e)     (Cohen 1960)

Its large-sample variance when κ ≠ 0 is (Fleiss, Cohen & Everitt 1969, "Large sample
standard errors of kappa and weighted kappa", Psychological Bulletin 72(5):323–327,
eq. 13; also Fleiss, Levin & Paik, Statistical Methods for Rates and Proportions,
3rd ed., eq. 18.16):

    Var(κ) = [ Σ_i p_ii (1 − (p_i. + p_.i)(1 − κ))²
               + (1 − κ)² Σ_{i≠j} p_ij (p_.i + p_j.)²
               − (κ − p_e (1 − κ))² ] / (n (1 − p_e)²)

and the interval is κ ± z_{0.975} · SE, clipped to [−1, 1]. It is the same formula
as statsmodels' `cohens_kappa(...).var_kappa`; tests check both it and κ against
scikit-learn's `cohen_kappa_score`. The interval is asymptotic: with fewer than
about 30 items, or κ near ±1, it is optimistic; `n` is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shadoweval.stats.rates import Z_95


@dataclass(frozen=True)
class Kappa:
    """κ with its interval; `kappa` and the interval are NaN when undefined (n = 0, or
    both raters used one and the same category for every item, so p_e = 1)."""

    n: int
    observed_agreement: float
    expected_agreement: float
    kappa: float
    std_error: float
    ci_low: float
    ci_high: float


def cohen_kappa(rater_1: npt.ArrayLike, rater_2: npt.ArrayLike, *, z: float = Z_95) -> Kappa:
    """κ of two equally long label arrays (any hashable, comparable category values)."""
    first = np.asarray(rater_1)
    second = np.asarray(rater_2)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError("both raters must label the same items: two 1-d arrays of equal length")
    n = int(first.size)
    nan = float("nan")
    if n == 0:
        return Kappa(0, nan, nan, nan, nan, nan, nan)
    categories, codes = np.unique(np.concatenate([first, second]), return_inverse=True)
    k = len(categories)
    table = np.zeros((k, k))
    np.add.at(table, (codes[:n], codes[n:]), 1.0)
    return kappa_from_table(table, z=z)


def kappa_from_table(table: npt.ArrayLike, *, z: float = Z_95) -> Kappa:
    """κ from a k × k contingency table of counts (rows: rater 1, columns: rater 2)."""
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError("the table must be square: rater 1 in rows, rater 2 in columns")
    n = round(float(counts.sum()))
    nan = float("nan")
    if n == 0:
        return Kappa(0, nan, nan, nan, nan, nan, nan)
    p = counts / counts.sum()
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    observed = float(np.trace(p))
    expected = float(rows @ cols)
    if math.isclose(expected, 1.0):
        return Kappa(n, observed, expected, nan, nan, nan, nan)
    kappa = (observed - expected) / (1.0 - expected)
    diagonal = np.diag(p) * (1.0 - (rows + cols) * (1.0 - kappa)) ** 2
    # p_ij (p_.i + p_j.)²: column margin of the row's category plus row margin of the column's.
    off = p * (cols[:, None] + rows[None, :]) ** 2
    np.fill_diagonal(off, 0.0)
    variance = (
        diagonal.sum() + (1.0 - kappa) ** 2 * off.sum() - (kappa - expected * (1.0 - kappa)) ** 2
    ) / (n * (1.0 - expected) ** 2)
    # Rounding can push a zero variance (perfect agreement) a hair below 0.
    std_error = math.sqrt(max(float(variance), 0.0))
    return Kappa(
        n=n,
        observed_agreement=observed,
        expected_agreement=expected,
        kappa=float(kappa),
        std_error=std_error,
        ci_low=max(-1.0, kappa - z * std_error),
        ci_high=min(1.0, kappa + z * std_error),
    )
