"""Label-free expected harm (CBPE-style): P(harm | router_score), recalibrated on labels,
averaged over every cheap-routed decision as it arrives.

A segment with 40 labels a day shows a labelled harm rate a day late, but each of its
decisions carries a `router_score`. Recalibrated on the judged pairs (score → P(strong
needed)), the map turns each decision's score into its probability of harm, and the
mean over an hour's cheap-routed decisions is that hour's expected harm, before any of
them is judged. NannyML's CBPE does this for tabular classifiers.

- The map is Platt (logistic on logit(score)) or isotonic (pool-adjacent-violators),
  whichever has the lower weighted Brier score on held-out folds (two-fold
  cross-validation on a seeded split). Labels weigh 1/π (population calibration).
- The interval is a bootstrap percentile interval over the labelled pairs: each
  resample refits the map (same method) and re-averages the hour's decisions, so it
  carries the calibration map's uncertainty. It is the expected harm of the decisions
  seen, not of future ones: the hour's decisions are all observed, not sampled.
- The gap test compares the labelled (observed) harm of a later window with the harm the
  map expects for the same pairs: D = Σw(y − ĝ(s))/Σw, Var = Σw²(y − ĝ(s) − D)²/(Σw)²
  (process-level) + the bootstrap variance of Σwĝ(s)/Σw. A significant D means the
  score's meaning changed (concept drift); a shift of the score distribution alone
  moves expected harm without a gap.

Sources: NannyML, "Confidence-based performance estimation" (docs, 2022);
Platt (1999), "Probabilistic outputs for support vector machines"; Zadrozny & Elkan
(2002), KDD (isotonic calibration); Niculescu-Mizil & Caruana (2005), ICML;
Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from shadoweval.stats.calibration import (
    _expit,
    _pool_adjacent_violators,
    _recalibration_design,
)
from shadoweval.stats.validation import (
    FloatArray,
    _binary,
    _check_confidence,
    _inclusion_probability,
    _same_length,
    _vector,
)

PLATT = "platt"
ISOTONIC = "isotonic"
AUTO = "auto"
METHODS = (AUTO, PLATT, ISOTONIC)
_PLATT_ITERATIONS = 50


@dataclass(frozen=True)
class CalibrationMap:
    """score → P(harm). Platt keeps (intercept, slope) on logit(score); isotonic keeps
    its knots (sorted distinct scores) and fitted values, interpolated linearly between
    knots and held flat beyond them. `heldout_brier` has the cross-validated weighted
    Brier score of each method tried (nan when it could not be fitted)."""

    method: str
    coefficients: tuple[float, float]
    knots: FloatArray
    values: FloatArray
    heldout_brier: dict[str, float]
    n: int

    def predict(self, score: npt.ArrayLike) -> FloatArray:
        s = _vector(score, "score")
        if self.method == PLATT:
            beta = np.asarray(self.coefficients, dtype=np.float64)
            return _expit(_recalibration_design(s) @ beta)
        return np.asarray(np.interp(s, self.knots, self.values), dtype=np.float64)


def _fit_platt(score: FloatArray, label: FloatArray, w: FloatArray) -> CalibrationMap | None:
    """Weighted logistic regression of the label on (1, logit(score)) by Newton–Raphson.

    A lean version of `calibration._logistic_fit` (no covariance): the bootstrap refits
    it hundreds of times. None on separation or a singular design.
    """
    if len(score) == 0 or np.all(label == label[0]):
        return None
    design = _recalibration_design(score)
    beta = np.zeros(2)
    for _ in range(_PLATT_ITERATIONS):
        mu = _expit(design @ beta)
        information = design.T @ (design * (w * mu * (1.0 - mu))[:, None])
        gradient = design.T @ (w * (label - mu))
        determinant = float(np.linalg.det(information))
        if not determinant > 1e-12 * float(np.trace(information)) ** 2:
            return None
        step = np.linalg.solve(information, gradient)
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 50.0:
            return None  # diverging: the labels are (nearly) separated by the score
        if np.max(np.abs(step)) < 1e-9 * (1.0 + np.max(np.abs(beta))):
            empty = np.zeros(0)
            coefficients = (float(beta[0]), float(beta[1]))
            return CalibrationMap(PLATT, coefficients, empty, empty, {}, len(score))
    return None


def _fit_isotonic(score: FloatArray, label: FloatArray, w: FloatArray) -> CalibrationMap:
    # Scores pooled to 0.001 (at most 1,001 knots): the map's resolution, and a bound on the
    # pool-adjacent-violators work of each bootstrap refit.
    knots, group = np.unique(np.round(score, 3), return_inverse=True)
    group_weight = np.bincount(group, weights=w, minlength=len(knots))
    group_mean = np.bincount(group, weights=w * label, minlength=len(knots)) / group_weight
    values = np.asarray(
        _pool_adjacent_violators(group_mean.tolist(), group_weight.tolist()), dtype=np.float64
    )
    return CalibrationMap(ISOTONIC, (math.nan, math.nan), knots, values, {}, len(score))


def _fit(method: str, score: FloatArray, label: FloatArray, w: FloatArray) -> CalibrationMap:
    if method == PLATT:
        platt = _fit_platt(score, label, w)
        # Separation (all labels equal, or scores that split them perfectly): the
        # isotonic map is still defined, Platt's is not.
        return platt if platt is not None else _fit_isotonic(score, label, w)
    return _fit_isotonic(score, label, w)


def _weighted_brier(p: FloatArray, label: FloatArray, w: FloatArray) -> float:
    return float(np.sum(w * (label - p) ** 2) / np.sum(w))


def fit_calibration_map(
    score: npt.ArrayLike,
    label: npt.ArrayLike,
    inclusion_probability: npt.ArrayLike = 1.0,
    *,
    method: str = AUTO,
    seed: int = 0,
) -> CalibrationMap:
    """Recalibrate `router_score` → P(strong needed) on judged pairs (weights 1/π).

    `method` "auto" fits Platt and isotonic on each half of a seeded random split,
    scores each on the other half (weighted Brier), and refits the winner on all
    labels; "platt" or "isotonic" force one. Needs at least one label.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    s = _vector(score, "score")
    y = _binary(label, "label")
    _same_length(score=s, label=y)
    if len(s) == 0:
        raise ValueError("at least one label is needed to fit a calibration map")
    w = 1.0 / _inclusion_probability(inclusion_probability, len(s))
    briers: dict[str, float] = {}
    if method == AUTO:
        fold = np.random.default_rng(seed).permutation(len(s)) % 2
        for candidate in (PLATT, ISOTONIC):
            losses, weights = [], []
            for k in (0, 1):
                train, test = fold != k, fold == k
                if not train.any() or not test.any():
                    continue
                fitted = _fit(candidate, s[train], y[train], w[train])
                if fitted.method != candidate:
                    continue
                losses.append(_weighted_brier(fitted.predict(s[test]), y[test], w[test]))
                weights.append(float(w[test].sum()))
            briers[candidate] = (
                float(np.average(losses, weights=weights)) if len(losses) == 2 else math.nan
            )
        platt_brier, isotonic_brier = briers[PLATT], briers[ISOTONIC]
        method = (
            PLATT if not math.isnan(platt_brier) and not platt_brier > isotonic_brier else ISOTONIC
        )
    fitted = _fit(method, s, y, w)
    return CalibrationMap(
        fitted.method, fitted.coefficients, fitted.knots, fitted.values, briers, len(s)
    )


@dataclass(frozen=True)
class ExpectedHarm:
    """Expected harm of a group of decisions: mean P(harm | score) with a bootstrap interval."""

    estimate: float
    ci_low: float
    ci_high: float
    std_error: float
    decisions: int


def _bootstrap_maps(
    calibration: CalibrationMap,
    score: FloatArray,
    label: FloatArray,
    w: FloatArray,
    n_boot: int,
    seed: int,
) -> list[CalibrationMap]:
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n_boot):
        take = rng.integers(0, len(score), len(score))
        maps.append(_fit(calibration.method, score[take], label[take], w[take]))
    return maps


@dataclass(frozen=True)
class BootstrappedMap:
    """A calibration map and its bootstrap refits (same method), to share between the
    expected-harm interval and the gap test of one set of labels."""

    calibration: CalibrationMap
    replicates: list[CalibrationMap]


def bootstrap_calibration(
    score: npt.ArrayLike,
    label: npt.ArrayLike,
    inclusion_probability: npt.ArrayLike = 1.0,
    *,
    method: str = AUTO,
    n_boot: int = 200,
    seed: int = 0,
) -> BootstrappedMap:
    """`fit_calibration_map` and `n_boot` refits on resamples of the labels."""
    s = _vector(score, "score")
    y = _binary(label, "label")
    _same_length(score=s, label=y)
    pi = _inclusion_probability(inclusion_probability, len(s))
    calibration = fit_calibration_map(s, y, pi, method=method, seed=seed)
    return BootstrappedMap(
        calibration, _bootstrap_maps(calibration, s, y, 1.0 / pi, n_boot, seed + 1)
    )


def expected_harm_of_weighted_scores(
    fitted: BootstrappedMap,
    group: Sequence[Hashable],
    score: FloatArray,
    weight: FloatArray,
    *,
    confidence: float = 0.95,
) -> dict[Hashable, ExpectedHarm]:
    """Expected harm per `group` value of scores each counted `weight` times (1 per
    decision, or a score bin's decision count): the weighted mean of P(harm | score) under
    `fitted`'s map, with the bootstrap percentile interval over its refits, the same refits
    for every group (so an hour series moves together). Its `decisions` is the weight."""
    _check_confidence(confidence)
    keys = list(dict.fromkeys(group))
    index = {key: i for i, key in enumerate(keys)}
    codes = np.array([index[g] for g in group], dtype=np.intp)
    totals = np.bincount(codes, weights=weight, minlength=len(keys)).astype(np.float64)

    def group_means(calibration_map: CalibrationMap) -> FloatArray:
        p = calibration_map.predict(score)
        return np.bincount(codes, weights=weight * p, minlength=len(keys)) / totals

    point = group_means(fitted.calibration)
    tail = (1.0 - confidence) / 2.0
    maps = fitted.replicates
    if maps:
        replicates = np.vstack([group_means(m) for m in maps])
        low = np.quantile(replicates, tail, axis=0)
        high = np.quantile(replicates, 1.0 - tail, axis=0)
        spread = replicates.std(axis=0, ddof=1) if len(maps) > 1 else np.full(len(keys), math.nan)
    else:
        low = high = spread = np.full(len(keys), math.nan)
    return {
        key: ExpectedHarm(
            float(point[i]), float(low[i]), float(high[i]), float(spread[i]), int(totals[i])
        )
        for key, i in index.items()
    }


def expected_harm_by_group(
    calibration_score: npt.ArrayLike,
    calibration_label: npt.ArrayLike,
    calibration_inclusion_probability: npt.ArrayLike,
    score: npt.ArrayLike,
    group: Sequence[Hashable],
    *,
    method: str = AUTO,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    bootstrapped: BootstrappedMap | None = None,
) -> tuple[CalibrationMap, dict[Hashable, ExpectedHarm]]:
    """Expected harm of each group (e.g. hour) of cheap-routed decisions.

    The map is fitted on the labelled pairs (`calibration_*`); each decision's
    `score` becomes P(harm), averaged per `group` value. The interval is the
    bootstrap percentile interval over `n_boot` resamples of the labelled pairs, the
    same resamples for every group (so an hour series moves together). `bootstrapped`
    (from `bootstrap_calibration` on the same labels) skips the fitting.
    """
    _check_confidence(confidence)
    s_l = _vector(calibration_score, "calibration_score")
    y_l = _binary(calibration_label, "calibration_label")
    _same_length(calibration_score=s_l, calibration_label=y_l)
    w_l = 1.0 / _inclusion_probability(calibration_inclusion_probability, len(s_l))
    s = _vector(score, "score")
    if len(group) != len(s):
        raise ValueError(f"group has {len(group)} values for {len(s)} scores")
    fitted = bootstrapped or bootstrap_calibration(
        s_l, y_l, 1.0 / w_l, method=method, n_boot=n_boot, seed=seed
    )
    out = expected_harm_of_weighted_scores(fitted, group, s, np.ones(len(s)), confidence=confidence)
    return fitted.calibration, out


@dataclass(frozen=True)
class GapTest:
    """Observed minus expected harm on the same labelled pairs, and its two-sided test."""

    observed: float
    expected: float
    gap: float
    std_error: float
    z: float
    p_value: float
    labels: int
    significant: bool


def expected_observed_gap(
    calibration_score: npt.ArrayLike,
    calibration_label: npt.ArrayLike,
    calibration_inclusion_probability: npt.ArrayLike,
    observed_score: npt.ArrayLike,
    observed_label: npt.ArrayLike,
    observed_inclusion_probability: npt.ArrayLike,
    *,
    method: str = AUTO,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    bootstrapped: BootstrappedMap | None = None,
) -> GapTest:
    """Concept-drift test: does the map fitted on earlier labels predict the later ones?

    D = Σw(y − ĝ(s))/Σw over the later labelled pairs; its variance adds the
    process-level variance of the later labels, Σw²(y − ĝ(s) − D)²/(Σw)², and the
    bootstrap variance of the expected part Σwĝ(s)/Σw across refits of the map.
    z = D/SE, two-sided normal p-value, `significant` at `alpha`. `bootstrapped` (from
    `bootstrap_calibration` on the calibration labels) skips the fitting.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    s_l = _vector(calibration_score, "calibration_score")
    y_l = _binary(calibration_label, "calibration_label")
    _same_length(calibration_score=s_l, calibration_label=y_l)
    w_l = 1.0 / _inclusion_probability(calibration_inclusion_probability, len(s_l))
    s_o = _vector(observed_score, "observed_score")
    y_o = _binary(observed_label, "observed_label")
    _same_length(observed_score=s_o, observed_label=y_o)
    w_o = 1.0 / _inclusion_probability(observed_inclusion_probability, len(s_o))
    if len(s_o) == 0:
        nan = math.nan
        return GapTest(nan, nan, nan, nan, nan, nan, 0, False)
    fitted = bootstrapped or bootstrap_calibration(
        s_l, y_l, 1.0 / w_l, method=method, n_boot=n_boot, seed=seed
    )
    calibration, maps = fitted.calibration, fitted.replicates
    sum_w = float(w_o.sum())
    predicted = calibration.predict(s_o)
    observed = float(np.sum(w_o * y_o)) / sum_w
    expected = float(np.sum(w_o * predicted)) / sum_w
    gap = observed - expected
    residual = y_o - predicted - gap
    process_variance = float(np.sum((w_o * residual) ** 2)) / sum_w**2
    replicates = [float(np.sum(w_o * m.predict(s_o))) / sum_w for m in maps]
    map_variance = float(np.var(replicates, ddof=1)) if len(replicates) > 1 else 0.0
    std_error = math.sqrt(process_variance + map_variance)
    z = gap / std_error if std_error > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap))
    p_value = 2.0 * (1.0 - NormalDist().cdf(abs(z))) if math.isfinite(z) else 0.0
    return GapTest(
        observed=observed,
        expected=expected,
        gap=gap,
        std_error=std_error,
        z=z,
        p_value=p_value,
        labels=len(s_o),
        significant=p_value < alpha,
    )


# Labels each window needs before the gap is evidence: fewer, and a map fitted on them (or
# the later window's harm) is too uncertain for a gap to say anything.
GAP_MIN_LABELS = 30


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def calibration_gap_evidence(
    reference_score: npt.ArrayLike,
    reference_label: npt.ArrayLike,
    reference_inclusion_probability: npt.ArrayLike,
    window_score: npt.ArrayLike,
    window_label: npt.ArrayLike,
    window_inclusion_probability: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    n_boot: int = 200,
    seed: int = 0,
    method: str = AUTO,
    min_labels: int = GAP_MIN_LABELS,
) -> dict[str, Any]:
    """The expected-vs-observed gap test as evidence for a calibration_drift alert: JSON
    details to add to the alert's measurement, all keys prefixed `gap_`.

    The score → P(strong needed) map is fitted on the reference window's labels and
    predicts the current window's (`expected_observed_gap`): a significant gap D =
    observed − expected means the score's meaning changed (concept drift); a change of
    the score distribution alone leaves D near 0. D is a share of labelled pairs (weights
    1/π), with its (1 − α) normal interval D ± z·SE (SE: process-level and map variance).
    Below `min_labels` labels on either side, only the counts and the reason are given.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    reference_n = len(_vector(reference_score, "reference_score"))
    window_n = len(_vector(window_score, "window_score"))
    evidence: dict[str, Any] = {
        "gap_test": "expected vs observed P(strong needed): reference window's score map "
        "against this window's labels",
        "gap_reference_labels": reference_n,
        "gap_labels": window_n,
    }
    if min(reference_n, window_n) < max(min_labels, 1):
        evidence["gap_status"] = f"not tested: fewer than {max(min_labels, 1)} labels in a window"
        return evidence
    test = expected_observed_gap(
        reference_score,
        reference_label,
        reference_inclusion_probability,
        window_score,
        window_label,
        window_inclusion_probability,
        method=method,
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
    )
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    if test.significant:
        direction = "above" if test.gap > 0 else "below"
        reading = (
            f"observed harm {direction} what the reference score map expects: the score's "
            "meaning changed (concept drift)"
        )
    else:
        reading = "no significant gap: the reference score map still predicts this window's labels"
    evidence.update(
        gap_status="tested",
        gap_observed=_json_number(test.observed),
        gap_expected=_json_number(test.expected),
        gap=_json_number(test.gap),
        gap_unit="share of labelled pairs (weights 1/π)",
        gap_ci_low=_json_number(test.gap - z * test.std_error),
        gap_ci_high=_json_number(test.gap + z * test.std_error),
        gap_confidence=1.0 - alpha,
        gap_std_error=_json_number(test.std_error),
        gap_z=_json_number(test.z),
        gap_p_value=_json_number(test.p_value),
        gap_significant=test.significant,
        gap_reading=reading,
    )
    return evidence
