"""Calibration: checked against statsmodels, scikit-learn and scipy, by simulation, by property."""

from __future__ import annotations

import math
from dataclasses import astuple
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss

from shadoweval.stats import calibration, calibration_tests

FloatArray = npt.NDArray[np.float64]


def _expit(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def _sample(
    rng: np.random.Generator,
    n: int,
    a: float = 0.0,
    b: float = 1.0,
    beta: tuple[float, float] = (2.0, 3.0),
) -> tuple[FloatArray, FloatArray]:
    """Scores ~ Beta(beta) and labels from logit P(y = 1) = a + b·logit(score)."""
    score = rng.beta(*beta, size=n)
    label = (rng.random(n) < _expit(a + b * _logit(score))).astype(np.float64)
    return score, label


@pytest.fixture
def weighted_data() -> tuple[FloatArray, FloatArray, FloatArray]:
    rng = np.random.default_rng(2024)
    score, label = _sample(rng, 600, a=0.3, b=0.8)
    weights = rng.choice([1.0, 2.5, 10.0], size=600)
    return score, label, weights


# --- Cox recalibration against statsmodels -------------------------------------------------


def test_cox_unweighted_matches_statsmodels_glm() -> None:
    score, label = _sample(np.random.default_rng(1), 500, a=-0.2, b=0.7)
    fit = calibration.cox_calibration(score, label)
    design = sm.add_constant(_logit(score))
    reference = sm.GLM(label, design, family=sm.families.Binomial()).fit(tol=1e-12)
    assert fit.converged
    assert fit.covariance_type == "model"
    assert (fit.intercept, fit.slope) == pytest.approx(tuple(reference.params), abs=1e-5)
    assert (fit.intercept_se, fit.slope_se) == pytest.approx(tuple(reference.bse), rel=1e-5)
    np.testing.assert_allclose(fit.covariance, reference.cov_params(), rtol=1e-5)
    assert fit.n == 500


def test_cox_weighted_matches_statsmodels_hc0(
    weighted_data: tuple[FloatArray, FloatArray, FloatArray],
) -> None:
    score, label, weights = weighted_data
    fit = calibration.cox_calibration(score, label, weights)
    design = sm.add_constant(_logit(score))
    reference = sm.GLM(label, design, family=sm.families.Binomial(), var_weights=weights).fit(
        cov_type="HC0", tol=1e-12
    )
    assert fit.covariance_type == "HC0"
    assert (fit.intercept, fit.slope) == pytest.approx(tuple(reference.params), abs=1e-5)
    assert (fit.intercept_se, fit.slope_se) == pytest.approx(tuple(reference.bse), rel=1e-5)
    np.testing.assert_allclose(fit.covariance, reference.cov_params(), rtol=1e-5)
    # freq_weights give the same point estimate (only the covariance differs).
    frequency = sm.GLM(label, design, family=sm.families.Binomial(), freq_weights=weights).fit()
    assert (fit.intercept, fit.slope) == pytest.approx(tuple(frequency.params), abs=1e-5)


def test_cox_recovers_a_known_miscalibration() -> None:
    score, label = _sample(np.random.default_rng(5), 20_000, a=0.5, b=0.6)
    fit = calibration.cox_calibration(score, label)
    assert abs(fit.intercept - 0.5) < 4 * fit.intercept_se
    assert abs(fit.slope - 0.6) < 4 * fit.slope_se


def test_scores_of_exactly_zero_and_one_are_clipped() -> None:
    score = np.array([0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.3, 0.7])
    label = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0, 1], dtype=float)
    fit = calibration.cox_calibration(score, label)
    reference = sm.GLM(label, sm.add_constant(_logit(score)), family=sm.families.Binomial()).fit()
    assert fit.converged
    assert (fit.intercept, fit.slope) == pytest.approx(tuple(reference.params), abs=1e-5)


@pytest.mark.parametrize(
    ("score", "label", "reason"),
    [
        # Complete separation: the label is a threshold of the score.
        (np.linspace(0.05, 0.95, 40), (np.linspace(0.05, 0.95, 40) > 0.5).astype(float), ""),
        (np.linspace(0.05, 0.95, 40), np.zeros(40), "all labels equal"),
        (np.full(30, 0.4), np.tile([0.0, 1.0], 15), "scores do not vary"),
        (np.array([]), np.array([]), "no observations"),
    ],
)
def test_cox_reports_failure_instead_of_raising(
    score: FloatArray, label: FloatArray, reason: str
) -> None:
    fit = calibration.cox_calibration(score, label)
    assert not fit.converged
    assert fit.message.startswith("did not converge")
    assert reason in fit.message
    assert math.isnan(fit.intercept)
    assert math.isnan(fit.slope_se)
    test = calibration_tests.perfect_calibration_test(score, label)
    assert math.isnan(test.statistic)
    assert math.isnan(test.p_value)
    assert "did not converge" in test.method


# --- tests against statsmodels / scipy -----------------------------------------------------


def _drift_design(ref: FloatArray, cur: FloatArray) -> FloatArray:
    x = _logit(np.concatenate([ref, cur]))
    window = np.concatenate([np.zeros(len(ref)), np.ones(len(cur))])
    return np.column_stack([np.ones_like(x), x, window, window * x])


def test_drift_lr_matches_statsmodels() -> None:
    rng = np.random.default_rng(3)
    ref_score, ref_label = _sample(rng, 400)
    cur_score, cur_label = _sample(rng, 300, a=0.3, b=0.7, beta=(4.0, 3.0))
    result = calibration_tests.calibration_drift_test(ref_score, ref_label, cur_score, cur_label)
    design = _drift_design(ref_score, cur_score)
    y = np.concatenate([ref_label, cur_label])
    full = sm.GLM(y, design, family=sm.families.Binomial()).fit(tol=1e-12)
    reduced = sm.GLM(y, design[:, :2], family=sm.families.Binomial()).fit(tol=1e-12)
    statistic = 2 * (full.llf - reduced.llf)
    assert result.method.startswith("likelihood-ratio")
    assert result.df == 2
    assert result.statistic == pytest.approx(statistic, rel=1e-6)
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, 2), rel=1e-6)


def test_drift_wald_matches_statsmodels_sandwich() -> None:
    rng = np.random.default_rng(4)
    ref_score, ref_label = _sample(rng, 500)
    cur_score, cur_label = _sample(rng, 450, a=0.2, b=0.8, beta=(4.0, 3.0))
    ref_weights = np.where(ref_score > 0.4, 2.0, 8.0)
    cur_weights = np.where(cur_score > 0.4, 2.0, 8.0)
    result = calibration_tests.calibration_drift_test(
        ref_score, ref_label, cur_score, cur_label, ref_weights, cur_weights
    )
    design = _drift_design(ref_score, cur_score)
    y = np.concatenate([ref_label, cur_label])
    w = np.concatenate([ref_weights, cur_weights])
    full = sm.GLM(y, design, family=sm.families.Binomial(), var_weights=w).fit(
        cov_type="HC0", tol=1e-12
    )
    theta = full.params[2:]
    statistic = float(theta @ np.linalg.solve(full.cov_params()[2:, 2:], theta))
    assert result.method.startswith("Wald")
    assert result.statistic == pytest.approx(statistic, rel=1e-5)
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, 2), rel=1e-5)


def test_weights_constant_within_each_window_use_the_lr_test() -> None:
    rng = np.random.default_rng(6)
    ref_score, ref_label = _sample(rng, 300)
    cur_score, cur_label = _sample(rng, 300, b=0.6)
    plain = calibration_tests.calibration_drift_test(ref_score, ref_label, cur_score, cur_label)
    scaled = calibration_tests.calibration_drift_test(
        ref_score, ref_label, cur_score, cur_label, np.full(300, 3.0), np.full(300, 7.0)
    )
    assert scaled == plain


def test_perfect_calibration_lr_and_wald_match_references(
    weighted_data: tuple[FloatArray, FloatArray, FloatArray],
) -> None:
    score, label, weights = weighted_data
    design = sm.add_constant(_logit(score))
    clipped = np.clip(score, 1e-6, 1 - 1e-6)
    fitted = sm.GLM(label, design, family=sm.families.Binomial()).fit(tol=1e-12)
    null_llf = float(np.sum(stats.bernoulli.logpmf(label, clipped)))
    statistic = 2 * (fitted.llf - null_llf)
    lr = calibration_tests.perfect_calibration_test(score, label)
    assert lr.statistic == pytest.approx(statistic, rel=1e-6)
    assert lr.p_value == pytest.approx(stats.chi2.sf(statistic, 2), rel=1e-6)
    # The data were generated with a = 0.3, b = 0.8: the test should see it.
    assert lr.p_value < 0.05

    weighted = sm.GLM(label, design, family=sm.families.Binomial(), var_weights=weights).fit(
        cov_type="HC0", tol=1e-12
    )
    delta = weighted.params - np.array([0.0, 1.0])
    wald_statistic = float(delta @ np.linalg.solve(weighted.cov_params(), delta))
    wald = calibration_tests.perfect_calibration_test(score, label, weights)
    assert wald.method.startswith("Wald")
    assert wald.statistic == pytest.approx(wald_statistic, rel=1e-5)
    assert wald.p_value == pytest.approx(stats.chi2.sf(wald_statistic, 2), rel=1e-5)


def test_drift_test_reports_non_convergence() -> None:
    rng = np.random.default_rng(8)
    ref_score, ref_label = _sample(rng, 200)
    cur_score = rng.beta(2, 3, size=50)
    result = calibration_tests.calibration_drift_test(ref_score, ref_label, cur_score, np.zeros(50))
    assert math.isnan(result.statistic)
    assert math.isnan(result.p_value)
    assert "did not converge" in result.method
    empty = calibration_tests.calibration_drift_test(ref_score, ref_label, [], [])
    assert "did not converge" in empty.method
    weighted = calibration_tests.calibration_drift_test(
        ref_score, ref_label, cur_score, np.zeros(50), rng.uniform(1, 5, 200), np.ones(50)
    )
    assert weighted.method.startswith("Wald")
    assert "did not converge" in weighted.method


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 20])
@pytest.mark.parametrize("x", [0.0, 0.01, 0.5, 2.0, 5.99, 10.0, 40.0, 150.0])
def test_chi2_survival_matches_scipy(df: int, x: float) -> None:
    expected = float(stats.chi2.sf(x, df))
    assert calibration_tests._chi2_sf(x, df) == pytest.approx(expected, rel=1e-10, abs=1e-300)


def test_spiegelhalter_matches_formula_and_scipy_norm() -> None:
    score, label = _sample(np.random.default_rng(9), 400, a=0.4)
    z, p_value = calibration.spiegelhalter_z(score, label)
    numerator = np.sum((label - score) * (1 - 2 * score))
    expected = numerator / np.sqrt(np.sum((1 - 2 * score) ** 2 * score * (1 - score)))
    assert z == pytest.approx(expected)
    assert p_value == pytest.approx(2 * stats.norm.sf(abs(expected)))
    # Every score ½: the variance is zero and the test is undefined.
    assert all(math.isnan(v) for v in calibration.spiegelhalter_z([0.5, 0.5], [0, 1]))
    assert all(math.isnan(v) for v in calibration.spiegelhalter_z([], []))


# --- Brier and CORP against scikit-learn ---------------------------------------------------


def test_brier_matches_sklearn(weighted_data: tuple[FloatArray, FloatArray, FloatArray]) -> None:
    score, label, weights = weighted_data
    assert calibration.brier_score(score, label) == pytest.approx(brier_score_loss(label, score))
    assert calibration.brier_score(score, label, weights) == pytest.approx(
        brier_score_loss(label, score, sample_weight=weights)
    )
    assert math.isnan(calibration.brier_score([], []))


@pytest.mark.parametrize("with_ties", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_corp_decomposition_matches_sklearn_isotonic(
    weighted_data: tuple[FloatArray, FloatArray, FloatArray], with_ties: bool, weighted: bool
) -> None:
    score, label, weights = weighted_data
    if with_ties:
        score = np.round(score, 1)
    w = weights if weighted else np.ones_like(score)
    isotonic = IsotonicRegression(increasing=True).fit(score, label, sample_weight=w)
    p_iso = isotonic.predict(score)
    brier = brier_score_loss(label, score, sample_weight=w)
    brier_iso = brier_score_loss(label, p_iso, sample_weight=w)
    mean_label = np.average(label, weights=w)
    brier_climatology = brier_score_loss(label, np.full_like(score, mean_label), sample_weight=w)

    result = calibration.brier_decomposition(score, label, weights if weighted else None)
    assert result.brier == pytest.approx(brier, rel=1e-12)
    assert result.miscalibration == pytest.approx(brier - brier_iso, abs=1e-12)
    assert result.discrimination == pytest.approx(brier_climatology - brier_iso, abs=1e-12)
    assert result.uncertainty == pytest.approx(mean_label * (1 - mean_label), rel=1e-12)
    assert result.brier == pytest.approx(
        result.miscalibration - result.discrimination + result.uncertainty, abs=1e-15
    )
    np.testing.assert_allclose(
        calibration._isotonic(score, label, w), p_iso, rtol=1e-12, atol=1e-12
    )


def test_corp_on_a_perfectly_calibrated_isotonic_score_has_zero_miscalibration() -> None:
    score = np.array([0.0, 0.5, 0.5, 1.0])
    label = np.array([0.0, 0.0, 1.0, 1.0])
    result = calibration.brier_decomposition(score, label)
    assert result.miscalibration == pytest.approx(0.0)
    assert result.brier == pytest.approx(0.125)
    assert result.uncertainty == pytest.approx(0.25)
    assert result.discrimination == pytest.approx(0.125)
    assert all(math.isnan(v) for v in astuple(calibration.brier_decomposition([], [])))


# --- reliability curve and ECE -------------------------------------------------------------


def test_reliability_curve_by_hand() -> None:
    score = [0.1, 0.2, 0.8, 0.9]
    label = [0, 1, 1, 1]
    curve = calibration.reliability_curve(score, label, n_bins=2)
    assert len(curve.bins) == 2
    low, high = curve.bins
    assert (low.score_low, low.score_high, low.count) == (0.1, 0.2, 2)
    assert low.mean_score == pytest.approx(0.15)
    assert low.observed_rate == pytest.approx(0.5)
    assert high.observed_rate == pytest.approx(1.0)
    assert high.ci_high == 1.0
    # |0.5 − 0.15|·½ + |1 − 0.85|·½
    assert calibration.expected_calibration_error(score, label, n_bins=2) == pytest.approx(0.25)


def test_reliability_curve_weighted_bins_have_equal_mass() -> None:
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    label = np.array([0, 0, 1, 0, 1, 1], dtype=float)
    weights = np.array([3.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # total 8: bins of weight 4 and 4
    curve = calibration.reliability_curve(score, label, weights, n_bins=2)
    assert [b.weight for b in curve.bins] == [4.0, 4.0]
    assert [b.count for b in curve.bins] == [2, 4]
    first = curve.bins[0]
    assert first.mean_score == pytest.approx((3 * 0.1 + 0.2) / 4)
    assert first.effective_n == pytest.approx(16 / 10)
    from statsmodels.stats.proportion import proportion_confint

    second = curve.bins[1]
    assert second.observed_rate == pytest.approx(0.75)
    assert (second.ci_low, second.ci_high) == pytest.approx(
        proportion_confint(3, 4, method="wilson")
    )
    gap = (4 * abs(0 - first.mean_score) + 4 * abs(0.75 - 0.45)) / 8
    assert calibration.expected_calibration_error(score, label, weights, n_bins=2) == pytest.approx(
        gap
    )


def test_ties_share_a_bin_and_degenerate_inputs() -> None:
    score = np.array([0.3] * 6 + [0.7] * 2)
    label = np.array([0, 1, 0, 1, 0, 0, 1, 1], dtype=float)
    curve = calibration.reliability_curve(score, label, n_bins=4)
    # One heavy tie cannot be split: fewer bins than asked for.
    assert [b.count for b in curve.bins] == [6, 2]
    single = calibration.reliability_curve(score, label, n_bins=1)
    assert len(single.bins) == 1
    assert single.bins[0].observed_rate == pytest.approx(0.5)
    assert calibration.expected_calibration_error(score, label, n_bins=1) == pytest.approx(
        abs(0.5 - score.mean())
    )
    empty = calibration.reliability_curve([], [])
    assert empty.bins == ()
    assert empty.n == 0
    assert math.isnan(calibration.expected_calibration_error([], []))
    all_ones = calibration.reliability_curve([0.2, 0.6, 0.9], [1, 1, 1], n_bins=3)
    assert [b.observed_rate for b in all_ones.bins] == [1.0, 1.0, 1.0]


def test_weighted_ece_tracks_the_population_and_unweighted_does_not() -> None:
    rng = np.random.default_rng(10)
    # Population: scores over-confident at the top; sampling favours high scores.
    score, label = _sample(rng, 200_000, a=-0.4, b=0.7)
    population_ece = calibration.expected_calibration_error(score, label)
    pi = np.where(score > 0.5, 0.2, 0.01)
    sampled = rng.random(len(score)) < pi
    weighted = calibration.expected_calibration_error(
        score[sampled], label[sampled], 1 / pi[sampled]
    )
    unweighted = calibration.expected_calibration_error(score[sampled], label[sampled])
    assert abs(weighted - population_ece) < abs(unweighted - population_ece)
    assert abs(weighted - population_ece) < 0.02


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": [0.1, 0.2], "label": [0]}, "equal lengths"),
        ({"score": [0.1, math.nan], "label": [0, 1]}, "finite"),
        ({"score": [0.1, 1.2], "label": [0, 1]}, r"\[0, 1\]"),
        ({"score": [0.1, 0.2], "label": [0, 2]}, "0 and 1"),
        ({"score": [0.1, 0.2], "label": [0, 1], "weights": [1.0, 0.0]}, "positive"),
        ({"score": [0.1, 0.2], "label": [0, 1], "weights": [1.0, math.inf]}, "finite"),
        ({"score": [0.1, 0.2], "label": [0, 1], "weights": [1.0]}, "equal lengths"),
    ],
)
@pytest.mark.parametrize(
    "function",
    [
        calibration.reliability_curve,
        calibration.expected_calibration_error,
        calibration.brier_score,
        calibration.brier_decomposition,
        calibration.cox_calibration,
        calibration_tests.perfect_calibration_test,
    ],
)
def test_validation(function: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        function(**kwargs)


def test_other_validation() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        calibration.reliability_curve([0.1], [1], n_bins=0)
    with pytest.raises(ValueError, match="n_bins"):
        calibration.expected_calibration_error([0.1], [1], n_bins=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label"):
        calibration.spiegelhalter_z([0.1, 0.2], [0, 3])
    with pytest.raises(ValueError, match="equal lengths"):
        calibration_tests.calibration_drift_test([0.1], [1], [0.2, 0.3], [1])


# --- size and power by simulation ----------------------------------------------------------

DRIFT_REPETITIONS = 400
WINDOW_SIZE = 800


def _rejection_rate(
    rng: np.random.Generator, current_a: float, current_b: float, weighted: bool = False
) -> float:
    """Share of repetitions where the drift test rejects at α = 0.05.

    Both windows share the calibration a = 0.2, b = 0.9 unless `current_*` changes
    it; the score distribution always shifts, Beta(2, 5) → Beta(4, 3).
    Unweighted: 800 labels per window. Weighted: 1500 decisions per window
    sampled with π = 0.4 below score 0.4 and 0.8 above (about 740 and 1100
    labels), weights 1/π.
    """
    rejections = 0
    for _ in range(DRIFT_REPETITIONS):
        size = 1500 if weighted else WINDOW_SIZE
        ref_score, ref_label = _sample(rng, size, a=0.2, b=0.9, beta=(2.0, 5.0))
        cur_score, cur_label = _sample(rng, size, a=current_a, b=current_b, beta=(4.0, 3.0))
        if weighted:
            # π depends on the score (as a score-stratified planner would), so
            # labels are missing at random given the score.
            ref_pi = np.where(ref_score > 0.4, 0.8, 0.4)
            cur_pi = np.where(cur_score > 0.4, 0.8, 0.4)
            ref_in = rng.random(size) < ref_pi
            cur_in = rng.random(size) < cur_pi
            result = calibration_tests.calibration_drift_test(
                ref_score[ref_in],
                ref_label[ref_in],
                cur_score[cur_in],
                cur_label[cur_in],
                1 / ref_pi[ref_in],
                1 / cur_pi[cur_in],
            )
            assert result.method.startswith("Wald")
        else:
            result = calibration_tests.calibration_drift_test(
                ref_score, ref_label, cur_score, cur_label
            )
            assert result.method.startswith("likelihood-ratio")
        rejections += result.p_value < 0.05
    return rejections / DRIFT_REPETITIONS


SIZE_MC_SE = math.sqrt(0.05 * 0.95 / DRIFT_REPETITIONS)  # 0.011


def test_drift_test_size_when_only_the_score_distribution_shifts() -> None:
    size = _rejection_rate(np.random.default_rng(100), current_a=0.2, current_b=0.9)
    print(f"LR size {size:.3f}")
    assert abs(size - 0.05) < 3 * SIZE_MC_SE


def test_drift_test_power_when_the_slope_drifts() -> None:
    power = _rejection_rate(np.random.default_rng(101), current_a=0.2, current_b=0.45)
    print(f"LR power {power:.3f}")
    assert power > 0.7


def test_weighted_drift_test_size_and_power() -> None:
    size = _rejection_rate(np.random.default_rng(102), 0.2, 0.9, weighted=True)
    power = _rejection_rate(np.random.default_rng(103), 0.2, 0.45, weighted=True)
    print(f"Wald size {size:.3f} power {power:.3f}")
    assert abs(size - 0.05) < 3 * SIZE_MC_SE
    assert power > 0.7


# --- properties ----------------------------------------------------------------------------

scores = st.one_of(
    st.floats(0.0, 1.0, allow_nan=False), st.sampled_from([0.0, 0.1, 0.5, 0.5, 0.9, 1.0])
)


@st.composite
def calibration_data(draw: st.DrawFn, min_size: int = 1) -> tuple[FloatArray, FloatArray]:
    n = draw(st.integers(min_size, 60))
    s = np.array(draw(st.lists(scores, min_size=n, max_size=n)))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=float)
    return s, y


def _same(a: Any, b: Any) -> None:
    # The logistic fits are iterative: summing in another order moves the last digits of a
    # statistic (4e-7 relative seen near separation), so equality is to 1e-5.
    np.testing.assert_allclose(
        np.asarray(_flatten(a), dtype=float),
        np.asarray(_flatten(b), dtype=float),
        rtol=1e-5,
        atol=1e-9,
        equal_nan=True,
    )


def _flatten(value: Any) -> list[float]:
    if isinstance(value, calibration_tests.DriftTest | calibration.CoxFit):
        value = [v for v in astuple(value) if not isinstance(v, str)]
    if isinstance(value, calibration.ReliabilityCurve):
        value = [astuple(b) for b in value.bins] + [value.n, value.weight_sum]
    if isinstance(value, calibration.BrierDecomposition):
        value = astuple(value)
    if isinstance(value, list | tuple):
        return [x for item in value for x in _flatten(item)]
    return [float(value)]


def _all_estimators(s: FloatArray, y: FloatArray, w: FloatArray | None) -> list[tuple[str, object]]:
    half = len(s) // 2
    return [
        ("reliability", calibration.reliability_curve(s, y, w, n_bins=5)),
        ("ece", calibration.expected_calibration_error(s, y, w, n_bins=5)),
        ("brier", calibration.brier_score(s, y, w)),
        ("corp", calibration.brier_decomposition(s, y, w)),
        ("cox", calibration.cox_calibration(s, y, w)),
        ("perfect", calibration_tests.perfect_calibration_test(s, y, w)),
        (
            "drift",
            calibration_tests.calibration_drift_test(
                s[:half],
                y[:half],
                s[half:],
                y[half:],
                None if w is None else w[:half],
                None if w is None else w[half:],
            ),
        ),
    ]


@settings(max_examples=40, deadline=None)
@given(data=calibration_data())
def test_all_ones_weights_equal_no_weights(data: tuple[FloatArray, FloatArray]) -> None:
    s, y = data
    for (_, unweighted), (_, weighted) in zip(
        _all_estimators(s, y, None), _all_estimators(s, y, np.ones(len(s))), strict=True
    ):
        _same(unweighted, weighted)


@settings(max_examples=40, deadline=None)
@given(data=calibration_data(min_size=2), weights_data=st.data())
def test_estimators_are_permutation_invariant(
    data: tuple[FloatArray, FloatArray], weights_data: st.DataObject
) -> None:
    s, y = data
    n = len(s)
    w = np.array(
        weights_data.draw(st.lists(st.sampled_from([1.0, 2.0, 5.0, 10.0]), min_size=n, max_size=n))
    )
    order = np.array(weights_data.draw(st.permutations(range(n))))
    # The drift test splits the data into windows: permute within each window.
    half = n // 2
    within = np.concatenate(
        [
            weights_data.draw(st.permutations(range(half))),
            half + np.array(weights_data.draw(st.permutations(range(n - half)))),
        ]
    ).astype(int)
    for weights in (None, w):
        before = dict(_all_estimators(s, y, weights))
        permuted_weights = None if weights is None else weights[order]
        after = dict(_all_estimators(s[order], y[order], permuted_weights))
        within_weights = None if weights is None else weights[within]
        after_within = dict(_all_estimators(s[within], y[within], within_weights))
        for name, value in before.items():
            if name == "drift":
                _same(value, after_within[name])
            else:
                _same(value, after[name])
    z_before = calibration.spiegelhalter_z(s, y)
    z_after = calibration.spiegelhalter_z(s[order], y[order])
    _same(list(z_before), list(z_after))


@settings(max_examples=40, deadline=None)
@given(data=calibration_data(), scale=st.sampled_from([0.5, 3.0, 100.0]), wd=st.data())
def test_corp_parts_are_non_negative_and_scale_free(
    data: tuple[FloatArray, FloatArray], scale: float, wd: st.DataObject
) -> None:
    s, y = data
    w = np.array(
        wd.draw(st.lists(st.sampled_from([1.0, 2.0, 5.0]), min_size=len(s), max_size=len(s)))
    )
    result = calibration.brier_decomposition(s, y, w)
    assert result.miscalibration >= -1e-12
    assert result.discrimination >= -1e-12
    assert result.brier == pytest.approx(
        result.miscalibration - result.discrimination + result.uncertainty, abs=1e-12
    )
    _same(result, calibration.brier_decomposition(s, y, w * scale))
