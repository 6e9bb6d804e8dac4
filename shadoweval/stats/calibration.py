"""Calibration of the router's score against judge labels, and tests for calibration drift.

score = `router_score` read as P(strong needed) (score_semantics `p_strong_needed`),
label = `strong_needed` ∈ {0, 1}. Optional weights are the sampling weights 1/π:
use them for population quantities (curves, ECE, Brier); calibration tests
conditional on the score are valid unweighted when π depends only on logged
variables (drift.md §3c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shadoweval.stats.rates import kish_effective_sample_size, wilson_interval
from shadoweval.stats.validation import (
    FloatArray,
    _binary,
    _check_confidence,
    _same_length,
    _vector,
)

# Keeps logit(score) finite for scores of exactly 0 or 1.
SCORE_CLIP = 1e-6
_MAX_ITERATIONS = 100
_STEP_TOLERANCE = 1e-10


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-mass bin of a reliability curve.

    `mean_score` and `observed_rate` are weighted means; `weight` is the bin's
    weight sum, `count` its number of labels, `effective_n` their Kish n_eff,
    and (`ci_low`, `ci_high`) a Wilson interval on the observed rate.
    """

    score_low: float
    score_high: float
    mean_score: float
    observed_rate: float
    weight: float
    count: int
    effective_n: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class ReliabilityCurve:
    """Reliability curve: non-empty bins in increasing score order."""

    bins: tuple[ReliabilityBin, ...]
    n: int
    weight_sum: float


@dataclass(frozen=True)
class BrierDecomposition:
    """CORP decomposition: brier = miscalibration − discrimination + uncertainty."""

    brier: float
    miscalibration: float
    discrimination: float
    uncertainty: float


@dataclass(frozen=True)
class CoxFit:
    """Logistic recalibration logit P(label = 1) = intercept + slope · logit(score).

    Perfect calibration is intercept 0 and slope 1; slope < 1 means the score is
    over-confident. `covariance` is the 2×2 covariance of (intercept, slope):
    `covariance_type` "model" (inverse Fisher information) when unweighted,
    "HC0" (sandwich) with unequal weights. When the fit fails (`converged`
    False, reason in `message`) every number is nan.
    """

    intercept: float
    slope: float
    covariance: tuple[tuple[float, float], tuple[float, float]]
    intercept_se: float
    slope_se: float
    n: int
    covariance_type: str
    converged: bool
    message: str


# --- validation ----------------------------------------------------------------------------


def _inputs(
    score: npt.ArrayLike, label: npt.ArrayLike, weights: npt.ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validated (score, label, weights); weights default to ones."""
    s = _vector(score, "score")
    y = _binary(label, "label")
    w = np.ones(len(s)) if weights is None else _vector(weights, "weights")
    _same_length(score=s, label=y, weights=w)
    if not np.all((s >= 0.0) & (s <= 1.0)):
        raise ValueError("score must lie in [0, 1]")
    if not np.all(w > 0.0):
        raise ValueError("weights must be positive")
    return s, y, w


def _is_constant(w: FloatArray) -> bool:
    return len(w) == 0 or bool(np.all(np.abs(w - w[0]) <= 1e-12 * abs(w[0])))


def _check_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


# --- binning and isotonic regression -------------------------------------------------------


def _equal_mass_bins(score: FloatArray, w: FloatArray, n_bins: int) -> npt.NDArray[np.intp]:
    """Bin index 0..k−1 per item, bins of about equal weight, in increasing score order.

    Tied scores always share a bin, so the result does not depend on input
    order; heavy ties can leave fewer than n_bins non-empty bins.
    """
    unique_scores, group = np.unique(score, return_inverse=True)
    group_weight = np.bincount(group, weights=w, minlength=len(unique_scores))
    cumulative = np.cumsum(group_weight)
    # A group's position is the midpoint of its weight span, so one heavy
    # group cannot spill into the next bin.
    midpoint = (cumulative - group_weight / 2.0) / cumulative[-1]
    group_bin = np.minimum((midpoint * n_bins).astype(np.intp), n_bins - 1)
    _, compact = np.unique(group_bin, return_inverse=True)
    return np.asarray(compact[group], dtype=np.intp)


def _pool_adjacent_violators(values: list[float], weights: list[float]) -> list[float]:
    """Weighted least-squares non-decreasing fit to `values` (already in x order)."""
    block_value: list[float] = []
    block_weight: list[float] = []
    block_size: list[int] = []
    for value, weight in zip(values, weights, strict=True):
        block_value.append(value)
        block_weight.append(weight)
        block_size.append(1)
        while len(block_value) > 1 and block_value[-2] > block_value[-1]:
            merged_weight = block_weight[-2] + block_weight[-1]
            merged_value = (
                block_value[-2] * block_weight[-2] + block_value[-1] * block_weight[-1]
            ) / merged_weight
            merged_size = block_size[-2] + block_size[-1]
            del block_value[-1], block_weight[-1], block_size[-1]
            block_value[-1], block_weight[-1], block_size[-1] = (
                merged_value,
                merged_weight,
                merged_size,
            )
    fitted: list[float] = []
    for value, size in zip(block_value, block_size, strict=True):
        fitted.extend([value] * size)
    return fitted


def _isotonic(score: FloatArray, label: FloatArray, w: FloatArray) -> FloatArray:
    """Weighted isotonic (non-decreasing) regression of label on score, evaluated per item.

    Tied scores are pooled first (their weighted mean label), as CORP requires.
    """
    unique_scores, group = np.unique(score, return_inverse=True)
    group_weight = np.bincount(group, weights=w, minlength=len(unique_scores))
    group_mean = np.bincount(group, weights=w * label, minlength=len(unique_scores)) / group_weight
    fitted = np.asarray(
        _pool_adjacent_violators(group_mean.tolist(), group_weight.tolist()), dtype=np.float64
    )
    return np.asarray(fitted[group], dtype=np.float64)


# --- curves and scores ---------------------------------------------------------------------


def reliability_curve(
    score: npt.ArrayLike,
    label: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    n_bins: int = 10,
    confidence: float = 0.95,
) -> ReliabilityCurve:
    """Reliability curve over equal-mass (weighted-quantile) bins.

    Items are sorted by score and cut into `n_bins` bins of about equal weight
    (tied scores stay together). Per bin b: mean score p̄_b = Σwp/Σw, observed
    rate ȳ_b = Σwy/Σw, weight Σw, count, Kish n_eff,b = (Σw)²/Σw², and a Wilson
    interval on ȳ_b with n = n_eff,b (ignoring the finite-population factor,
    so it is slightly conservative for large π). Empty input gives no bins.

    Sources: DeGroot & Fienberg (1983), "The comparison and evaluation of
    forecasters", *The Statistician* 32:12–22 (reliability diagrams); Nixon et
    al. (2019), "Measuring calibration in deep learning", CVPR Workshops
    (adaptive bins); Wilson (1927), *JASA* 22:209–212; drift.md §3c (weights).
    """
    s, y, w = _inputs(score, label, weights)
    _check_bins(n_bins)
    _check_confidence(confidence)
    if len(s) == 0:
        return ReliabilityCurve(bins=(), n=0, weight_sum=0.0)
    bin_index = _equal_mass_bins(s, w, n_bins)
    bins = []
    for b in range(int(bin_index.max()) + 1):
        member = bin_index == b
        bw, bs, by = w[member], s[member], y[member]
        weight = float(np.sum(bw))
        observed = min(1.0, max(0.0, float(np.sum(bw * by)) / weight))
        effective_n = kish_effective_sample_size(bw)
        ci_low, ci_high = wilson_interval(observed, effective_n, confidence)
        bins.append(
            ReliabilityBin(
                score_low=float(np.min(bs)),
                score_high=float(np.max(bs)),
                mean_score=float(np.sum(bw * bs)) / weight,
                observed_rate=observed,
                weight=weight,
                count=int(np.sum(member)),
                effective_n=effective_n,
                ci_low=ci_low,
                ci_high=ci_high,
            )
        )
    return ReliabilityCurve(bins=tuple(bins), n=len(s), weight_sum=float(np.sum(w)))


def expected_calibration_error(
    score: npt.ArrayLike,
    label: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    n_bins: int = 10,
) -> float:
    """Adaptive, weighted expected calibration error — for display only.

    ECE = Σ_b (W_b / W) · |ȳ_b − p̄_b| over the equal-mass bins of
    `reliability_curve`. It is biased upward and has no null distribution (a
    perfectly calibrated score gives about 0.05 at n = 500, 0.011 at 10k):
    never alert on it or compare windows with it; use `calibration_drift_test`.
    nan for empty input.

    Sources: Naeini, Cooper & Hauskrecht (2015), AAAI (ECE); Nixon et al. (2019),
    CVPR Workshops (adaptive bins); drift.md §3a.
    """
    s, y, w = _inputs(score, label, weights)
    _check_bins(n_bins)
    if len(s) == 0:
        return math.nan
    bin_index = _equal_mass_bins(s, w, n_bins)
    gap = np.bincount(bin_index, weights=w * y) - np.bincount(bin_index, weights=w * s)
    return float(np.sum(np.abs(gap)) / np.sum(w))


def brier_score(
    score: npt.ArrayLike, label: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> float:
    """Weighted Brier score BS = Σ wᵢ(pᵢ − yᵢ)² / Σ wᵢ; nan for empty input.

    Source: Brier, G. W. (1950), "Verification of forecasts expressed in terms of
    probability", *Monthly Weather Review* 78:1–3.
    """
    s, y, w = _inputs(score, label, weights)
    if len(s) == 0:
        return math.nan
    return float(np.sum(w * (s - y) ** 2) / np.sum(w))


def brier_decomposition(
    score: npt.ArrayLike, label: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> BrierDecomposition:
    """CORP decomposition of the (weighted) Brier score.

    With p_iso the weighted isotonic (PAV) regression of the label on the score
    and ȳ = Σwy/Σw: MCB = BS(p) − BS(p_iso) ≥ 0, DSC = BS(ȳ) − BS(p_iso) ≥ 0,
    UNC = ȳ(1 − ȳ) (= BS(ȳ)), and BS = MCB − DSC + UNC exactly (up to rounding).
    Unlike Murphy's binned decomposition it needs no bins. All nan for empty
    input.

    Sources: Dimitriadis, Gneiting & Jordan (2021), "Stable reliability diagrams
    for probabilistic classifiers", *PNAS* 118(8):e2016191118; Ayer et al.
    (1955), *Ann. Math. Statist.* 26:641–647 (pool-adjacent-violators).
    """
    s, y, w = _inputs(score, label, weights)
    if len(s) == 0:
        return BrierDecomposition(math.nan, math.nan, math.nan, math.nan)
    total = float(np.sum(w))
    mean_label = float(np.sum(w * y)) / total
    brier = float(np.sum(w * (s - y) ** 2)) / total
    brier_isotonic = float(np.sum(w * (_isotonic(s, y, w) - y) ** 2)) / total
    uncertainty = mean_label * (1.0 - mean_label)
    return BrierDecomposition(
        brier=brier,
        miscalibration=brier - brier_isotonic,
        discrimination=uncertainty - brier_isotonic,
        uncertainty=uncertainty,
    )


def spiegelhalter_z(score: npt.ArrayLike, label: npt.ArrayLike) -> tuple[float, float]:
    """Spiegelhalter's calibration z-test: (z, two-sided p-value); unweighted.

    Z = Σ(yᵢ − pᵢ)(1 − 2pᵢ) / √(Σ(1 − 2pᵢ)² pᵢ(1 − pᵢ)), N(0, 1) under perfect
    calibration; p = 2·(1 − Φ(|Z|)). Unweighted because it tests calibration
    conditional on the score, which sampling on logged variables does not bias
    (drift.md §3c). (nan, nan) for empty input or when every score is 0, ½ or 1.

    Source: Spiegelhalter, D. J. (1986), "Probabilistic prediction in patient
    management and clinical trials", *Statistics in Medicine* 5:421–433.
    """
    s, y, _ = _inputs(score, label, None)
    variance = float(np.sum((1.0 - 2.0 * s) ** 2 * s * (1.0 - s)))
    if variance <= 0.0:
        return math.nan, math.nan
    z = float(np.sum((y - s) * (1.0 - 2.0 * s))) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2.0))


# --- logistic regression -------------------------------------------------------------------


@dataclass(frozen=True)
class _LogisticFit:
    beta: FloatArray
    model_covariance: FloatArray
    sandwich_covariance: FloatArray
    log_likelihood: float
    converged: bool
    message: str


def _log_likelihood(design: FloatArray, y: FloatArray, w: FloatArray, beta: FloatArray) -> float:
    eta = design @ beta
    # log(1 + e^η) − yη is the Bernoulli negative log-likelihood, stable for any η.
    return -float(np.sum(w * (np.logaddexp(0.0, eta) - y * eta)))


def _expit(eta: FloatArray) -> FloatArray:
    return np.asarray(np.exp(-np.logaddexp(0.0, -eta)), dtype=np.float64)


def _failed_fit(k: int, message: str) -> _LogisticFit:
    nan_matrix = np.full((k, k), math.nan)
    return _LogisticFit(np.full(k, math.nan), nan_matrix, nan_matrix, math.nan, False, message)


def _logistic_fit(design: FloatArray, y: FloatArray, w: FloatArray) -> _LogisticFit:
    """Weighted logistic regression by Newton–Raphson with step halving.

    Returns the model covariance (X'WVX)⁻¹ and the HC0 sandwich
    (X'WVX)⁻¹ [Σ wᵢ²(yᵢ − μᵢ)² xᵢxᵢ'] (X'WVX)⁻¹; never raises on separation or
    a singular design, it reports the reason in `message`.
    """
    k = design.shape[1]
    if len(y) == 0:
        return _failed_fit(k, "no observations")
    if np.all(y == y[0]):
        return _failed_fit(k, "all labels equal (separation)")
    if np.linalg.matrix_rank(design * np.sqrt(w)[:, None]) < k:
        return _failed_fit(k, "singular design (scores do not vary)")
    beta = np.zeros(k)
    log_likelihood = _log_likelihood(design, y, w, beta)
    converged = False
    for _ in range(_MAX_ITERATIONS):
        mu = _expit(design @ beta)
        information = design.T @ (design * (w * mu * (1.0 - mu))[:, None])
        gradient = design.T @ (w * (y - mu))
        try:
            step = np.linalg.solve(information, gradient)
        except np.linalg.LinAlgError:
            return _failed_fit(k, "singular information matrix (separation likely)")
        # The log-likelihood is concave, so halving always finds an ascent
        # unless we are already at the optimum to rounding precision.
        scale = 1.0
        candidate = beta + step
        candidate_ll = _log_likelihood(design, y, w, candidate)
        while candidate_ll < log_likelihood and scale > 1e-6:
            scale /= 2.0
            candidate = beta + scale * step
            candidate_ll = _log_likelihood(design, y, w, candidate)
        beta, log_likelihood = candidate, max(candidate_ll, log_likelihood)
        if not np.all(np.isfinite(beta)):
            return _failed_fit(k, "non-finite coefficients")
        if np.max(np.abs(scale * step)) < _STEP_TOLERANCE * (1.0 + np.max(np.abs(beta))):
            converged = True
            break
    if not converged:
        return _failed_fit(k, f"iteration limit {_MAX_ITERATIONS} reached (separation likely)")
    mu = _expit(design @ beta)
    information = design.T @ (design * (w * mu * (1.0 - mu))[:, None])
    if np.linalg.cond(information) > 1e12:
        return _failed_fit(k, "ill-conditioned information matrix (separation likely)")
    model_covariance = np.asarray(np.linalg.inv(information), dtype=np.float64)
    scores = design * (w * (y - mu))[:, None]
    sandwich = model_covariance @ (scores.T @ scores) @ model_covariance
    return _LogisticFit(
        beta=beta,
        model_covariance=model_covariance,
        sandwich_covariance=sandwich,
        log_likelihood=_log_likelihood(design, y, w, beta),
        converged=True,
        message="converged",
    )


def _logit_score(score: FloatArray) -> FloatArray:
    clipped = np.clip(score, SCORE_CLIP, 1.0 - SCORE_CLIP)
    return np.asarray(np.log(clipped) - np.log1p(-clipped), dtype=np.float64)


def _recalibration_design(score: FloatArray) -> FloatArray:
    return np.column_stack([np.ones(len(score)), _logit_score(score)])


def cox_calibration(
    score: npt.ArrayLike, label: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> CoxFit:
    """Cox logistic recalibration: fit logit P(yᵢ = 1) = a + b·logit(pᵢ).

    Scores are clipped to [1e−6, 1 − 1e−6] before the logit. Maximum (weighted)
    likelihood by Newton–Raphson. Covariance: the inverse Fisher information
    when the weights are None or all equal (equal weights are treated as no
    weights, since the scale of sampling weights carries no information);
    otherwise the HC0 sandwich H⁻¹(Σ wᵢ²(yᵢ − μᵢ)² xᵢxᵢ')H⁻¹, H = Σ wᵢμᵢ(1 − μᵢ)xᵢxᵢ'
    (= statsmodels GLM Binomial with var_weights and cov_type="HC0"). It leaves
    out the (1 − π) finite-population factor, so it is conservative for large π.
    Separation, all-equal labels, constant scores or non-convergence return a
    fit with `converged` False and nan numbers.

    Sources: Cox, D. R. (1958), "Two further applications of a model for binary
    regression", *Biometrika* 45:562–565; White, H. (1980), *Econometrica*
    48:817–838 (HC0); Binder, D. A. (1983), *Int. Statist. Rev.* 51:279–292
    (survey-weighted estimating equations).
    """
    s, y, w = _inputs(score, label, weights)
    weighted = not _is_constant(w)
    if not weighted:
        w = np.ones(len(s))
    fit = _logistic_fit(_recalibration_design(s), y, w)
    covariance = fit.sandwich_covariance if weighted else fit.model_covariance
    return CoxFit(
        intercept=float(fit.beta[0]),
        slope=float(fit.beta[1]),
        covariance=(
            (float(covariance[0, 0]), float(covariance[0, 1])),
            (float(covariance[1, 0]), float(covariance[1, 1])),
        ),
        intercept_se=math.sqrt(covariance[0, 0]) if fit.converged else math.nan,
        slope_se=math.sqrt(covariance[1, 1]) if fit.converged else math.nan,
        n=len(s),
        covariance_type="HC0" if weighted else "model",
        converged=fit.converged,
        message=fit.message if fit.converged else f"did not converge: {fit.message}",
    )


# --- χ² tests ------------------------------------------------------------------------------
