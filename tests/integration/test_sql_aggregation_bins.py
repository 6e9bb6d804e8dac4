"""The binned threshold curve (unlabelled traffic as sums per stratum, tier and score bin)
equals the per-request curve of `stats.thresholds` on the same requests (issue 19 §4)."""

from __future__ import annotations

import numpy as np
import pytest

from shadoweval.stats import threshold_bins, thresholds


def _requests(seed: int, n: int = 4000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    score = rng.beta(2, 3, n)
    score[:20] = 0.3  # exactly on a grid threshold: the bin edge must match "score < t"
    strong = score >= 0.45
    cost = np.where(strong, 0.006, 0.002) * rng.uniform(0.5, 1.5, n)
    cost[rng.random(n) < 0.05] = np.nan  # unlogged costs stand at the tier mean
    pi = np.where(strong, 0.05, 0.1)
    labelled = rng.random(n) < pi
    labelled[(score > 0.8)] = False  # a stratum region without labels
    y = (rng.random(n) < score * 0.7).astype(float)
    other = np.where(strong, cost / 3.0, cost * 3.0)
    other[rng.random(n) < 0.1] = np.nan
    stratum = rng.integers(0, 3, n)
    stratum[stratum == 2] = np.where(strong[stratum == 2], 2, 1)  # stratum 2: strong only
    return {
        "score": score,
        "strong": strong,
        "cost": cost,
        "labelled": labelled,
        "y": y,
        "other": other,
        "pi": pi,
        "stratum": stratum.astype(np.int64),
    }


def _binned(r: dict[str, np.ndarray], grid: np.ndarray) -> threshold_bins.BinnedTraffic:
    labelled = threshold_bins.LabelledUnits(
        score=r["score"][r["labelled"]],
        strong_routed=r["strong"][r["labelled"]],
        cost_usd=r["cost"][r["labelled"]],
        strong_needed=r["y"][r["labelled"]],
        other_cost_usd=r["other"][r["labelled"]],
        inclusion_probability=r["pi"][r["labelled"]],
        stratum=r["stratum"][r["labelled"]],
    )
    coefficients = threshold_bins.outcome_coefficients(labelled)
    m = thresholds._predict(coefficients, r["score"])
    shape = (int(r["stratum"].max()) + 1, 2, grid.size + 1)
    index = (r["stratum"], r["strong"].astype(int), threshold_bins.score_bin(r["score"], grid))
    count = np.zeros(shape, dtype=np.int64)
    known = np.zeros(shape, dtype=np.int64)
    cost = np.zeros(shape)
    model = np.zeros(shape)
    np.add.at(count, index, 1)
    np.add.at(known, index, np.isfinite(r["cost"]).astype(np.int64))
    np.add.at(cost, index, np.nan_to_num(r["cost"]))
    np.add.at(model, index, m)
    traffic = threshold_bins.BinnedTraffic(count, known, cost, model)
    return traffic, labelled, coefficients


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binned_curve_equals_the_per_request_curve(seed: int) -> None:
    r = _requests(seed)
    t0 = 0.45
    grid = thresholds.default_grid(t0)
    reference = thresholds.threshold_curve(
        score=r["score"],
        strong_routed=r["strong"],
        cost_usd=r["cost"],
        labelled=r["labelled"],
        strong_needed=np.where(r["labelled"], r["y"], np.nan),
        other_cost_usd=r["other"],
        inclusion_probability=np.where(r["labelled"], r["pi"], 0.0),
        threshold_in_force=t0,
        stratum=r["stratum"],
        replicates=200,
    )
    traffic, labelled, coefficients = _binned(r, grid)
    binned = threshold_bins.threshold_curve_from_bins(
        traffic=traffic,
        labelled=labelled,
        grid=grid,
        coefficients=coefficients,
        threshold_in_force=t0,
        replicates=200,
    )
    assert binned.estimator == reference.estimator
    assert binned.n_requests == reference.n_requests
    assert binned.n_labels == reference.n_labels
    for field in (
        "threshold",
        "strong_share",
        "harm_rate",
        "harm_se",
        "harm_low",
        "harm_high",
        "cost_per_request_usd",
        "cost_low_usd",
        "cost_high_usd",
        "savings_vs_always_strong_usd",
        "savings_vs_in_force_usd",
        "savings_vs_in_force_low_usd",
        "savings_vs_in_force_high_usd",
        "labels_in_band",
    ):
        np.testing.assert_allclose(
            getattr(binned, field), getattr(reference, field), rtol=1e-9, atol=1e-12, err_msg=field
        )
