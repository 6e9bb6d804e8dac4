"""Label-free expected harm (CBPE-style) and the expected-vs-observed gap test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shadoweval.stats import expected_harm as eh


def _true_harm(score: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """A calibrated router: P(harm | s) = s; `shift` moves the log-odds (calibration change)."""
    logit = np.log(score) - np.log1p(-score)
    return np.asarray(1.0 / (1.0 + np.exp(-(logit + shift))))


def test_hand_worked_isotonic_map_and_expected_harm() -> None:
    # Scores 0.1 0.2 0.3 0.4 with labels 0 1 0 1: PAV pools the violating middle pair
    # (1, 0) → 0.5 each, giving the map 0, 0.5, 0.5, 1 at the four knots. Decisions
    # scored 0.15 and 0.4 expect (0.25 + 1)/2 = 0.625 harm (linear between knots).
    calibration = eh.fit_calibration_map([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], method="isotonic")
    assert calibration.method == "isotonic"
    assert calibration.predict([0.1, 0.2, 0.3, 0.4]) == pytest.approx([0.0, 0.5, 0.5, 1.0])
    _, by_hour = eh.expected_harm_by_group(
        [0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], 1.0, [0.15, 0.4], ["h1", "h1"], method="isotonic"
    )
    assert by_hour["h1"].estimate == pytest.approx(0.625)
    assert by_hour["h1"].decisions == 2
    assert by_hour["h1"].ci_low <= 0.625 <= by_hour["h1"].ci_high


def test_platt_recovers_a_logistic_calibration_and_auto_picks_by_heldout_brier() -> None:
    rng = np.random.default_rng(0)
    score = rng.beta(2, 6, 3000)
    label = (rng.random(3000) < _true_harm(score, shift=0.5)).astype(float)
    platt = eh.fit_calibration_map(score, label, method="platt")
    assert platt.coefficients[0] == pytest.approx(0.5, abs=0.2)
    assert platt.coefficients[1] == pytest.approx(1.0, abs=0.2)
    chosen = eh.fit_calibration_map(score, label)
    assert set(chosen.heldout_brier) == {"platt", "isotonic"}
    best = min(chosen.heldout_brier, key=lambda m: chosen.heldout_brier[m])
    assert chosen.method == best


def test_separated_labels_fall_back_to_isotonic() -> None:
    calibration = eh.fit_calibration_map([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], method="platt")
    assert calibration.method == "isotonic"


def test_score_shift_with_unchanged_calibration_is_tracked_within_the_interval() -> None:
    # Labels from last week's traffic (scores around 0.2); this hour's traffic moved into a
    # riskier score region (around 0.4). The router is still calibrated, so expected harm
    # follows the truth: the mean true P(harm) of this hour's decisions.
    rng = np.random.default_rng(11)
    repetitions, covered, errors = 50, 0, []
    for rep in range(repetitions):
        s_labelled = rng.beta(2, 8, 400)
        y_labelled = (rng.random(400) < _true_harm(s_labelled)).astype(float)
        s_hour = rng.beta(4, 6, 300)
        _, out = eh.expected_harm_by_group(
            s_labelled, y_labelled, 1.0, s_hour, [0] * 300, n_boot=40, seed=rep
        )
        truth = float(_true_harm(s_hour).mean())
        covered += out[0].ci_low <= truth <= out[0].ci_high
        errors.append(out[0].estimate - truth)
    assert covered / repetitions >= 0.85
    assert abs(float(np.mean(errors))) < 0.02


def _gap_rejections(shift: float, repetitions: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    rejected = 0
    for rep in range(repetitions):
        s_reference = rng.beta(2, 8, 400)
        y_reference = (rng.random(400) < _true_harm(s_reference)).astype(float)
        s_new = rng.beta(2, 8, 400)
        y_new = (rng.random(400) < _true_harm(s_new, shift)).astype(float)
        test = eh.expected_observed_gap(
            s_reference, y_reference, 1.0, s_new, y_new, 1.0, method="platt", n_boot=20, seed=rep
        )
        rejected += test.significant
    return rejected / repetitions


def test_gap_test_keeps_its_size_without_a_change() -> None:
    assert _gap_rejections(0.0, 160, seed=5) <= 0.09


def test_gap_test_rejects_a_calibration_change_with_power() -> None:
    # log-odds +0.8 at a 20 % harm level (≈ +7 points), 400 labels each side: power ≥ 0.9.
    assert _gap_rejections(0.8, 60, seed=6) >= 0.9


def test_a_score_shift_alone_is_no_gap() -> None:
    rng = np.random.default_rng(8)
    s_reference = rng.beta(2, 8, 1500)
    y_reference = (rng.random(1500) < _true_harm(s_reference)).astype(float)
    s_new = rng.beta(4, 6, 1500)
    y_new = (rng.random(1500) < _true_harm(s_new)).astype(float)
    test = eh.expected_observed_gap(s_reference, y_reference, 1.0, s_new, y_new, 1.0, n_boot=40)
    assert not test.significant
    assert test.expected > 0.3  # expected harm moved with the scores


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="method"):
        eh.fit_calibration_map([0.1], [1], method="beta")
    with pytest.raises(ValueError, match="at least one label"):
        eh.fit_calibration_map([], [])
    empty = eh.expected_observed_gap([0.1, 0.9], [0, 1], 1.0, [], [], 1.0)
    assert math.isnan(empty.gap)
    assert not empty.significant


def test_calibration_gap_evidence_hand_worked() -> None:
    # Reference: 20 pairs at score 0.2 never harmful, 20 at 0.8 always: the isotonic map is
    # 0 at 0.2 (every bootstrap refit too, so no map variance). This window: 4 pairs at 0.2,
    # 2 harmful. Observed 0.5, expected 0, D = 0.5; SE² = Σ(y − 0 − 0.5)²/n² = 4·0.25/16,
    # SE = 0.25, z = 2, p = 2(1 − Φ(2)) = 0.0455 < 0.05; interval 0.5 ± 1.96·0.25.
    reference_score = [0.2] * 20 + [0.8] * 20
    reference_label = [0] * 20 + [1] * 20
    evidence = eh.calibration_gap_evidence(
        reference_score,
        reference_label,
        1.0,
        [0.2] * 4,
        [0, 1, 0, 1],
        1.0,
        method="isotonic",
        n_boot=20,
        min_labels=4,
    )
    assert evidence["gap_status"] == "tested"
    assert (evidence["gap_observed"], evidence["gap_expected"]) == (0.5, 0.0)
    assert evidence["gap"] == pytest.approx(0.5)
    assert evidence["gap_std_error"] == pytest.approx(0.25)
    assert evidence["gap_z"] == pytest.approx(2.0)
    assert evidence["gap_p_value"] == pytest.approx(0.0455, abs=1e-4)
    assert evidence["gap_significant"] is True
    assert evidence["gap_ci_low"] == pytest.approx(0.5 - 1.959964 * 0.25, abs=1e-5)
    assert evidence["gap_ci_high"] == pytest.approx(0.5 + 1.959964 * 0.25, abs=1e-5)
    assert "concept drift" in evidence["gap_reading"]
    assert (evidence["gap_labels"], evidence["gap_reference_labels"]) == (4, 40)
    # The same window at a stricter α is no evidence.
    strict = eh.calibration_gap_evidence(
        reference_score,
        reference_label,
        1.0,
        [0.2] * 4,
        [0, 1, 0, 1],
        1.0,
        method="isotonic",
        n_boot=20,
        min_labels=4,
        alpha=0.01,
    )
    assert strict["gap_significant"] is False
    assert strict["gap_ci_low"] < 0 < strict["gap_ci_high"]
    # Too few labels: counts and the reason, no test.
    few = eh.calibration_gap_evidence(reference_score, reference_label, 1.0, [0.2], [1], 1.0)
    assert few["gap_status"].startswith("not tested")
    assert "gap_p_value" not in few


def test_calibration_gap_evidence_flags_a_calibration_change_not_a_score_shift() -> None:
    rng = np.random.default_rng(12)
    s_reference = rng.beta(2, 8, 600)
    y_reference = (rng.random(600) < _true_harm(s_reference)).astype(float)
    s_shifted = rng.beta(4, 6, 600)  # riskier scores, same calibration
    y_shifted = (rng.random(600) < _true_harm(s_shifted)).astype(float)
    s_same = rng.beta(2, 8, 600)
    y_changed = (rng.random(600) < _true_harm(s_same, 1.2)).astype(float)  # meaning changed
    shift = eh.calibration_gap_evidence(
        s_reference, y_reference, 1.0, s_shifted, y_shifted, 1.0, n_boot=30, seed=1
    )
    change = eh.calibration_gap_evidence(
        s_reference, y_reference, 1.0, s_same, y_changed, 1.0, n_boot=30, seed=1
    )
    assert shift["gap_significant"] is False
    assert change["gap_significant"] is True
    assert change["gap"] > 0
    assert change["gap_ci_low"] > 0
