"""The off-policy threshold curve of `stats.thresholds`, with the unlabelled traffic as sums.

`thresholds.threshold_curve` takes one entry per request of the window. Only the labelled
requests (the verdicts, tens of thousands) are needed one by one: every other request
enters the curve through sums per stratum (segment), routed tier and score bin of the
threshold grid — how many, their own cost (with how many costs are known), and the
outcome model m(s) = expit(a + b·logit(s)) added up — which a database can compute where
the decision log is stored (issue 19 §4). Same formulas, same bootstrap draws (labelled
units in the same order, strata in the same order), so the same curve to float rounding.

A score's bin is the number of grid thresholds at or below it, so "score < t_k" is
"bin ≤ k" and each threshold's sum is a cumulative sum over bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shadoweval.stats import thresholds as per_request
from shadoweval.stats.thresholds import Estimator, ThresholdCurve

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BinnedTraffic:
    """Every request of the window (labelled ones too), summed per stratum h, routed tier
    (0 cheap, 1 strong) and score bin b: arrays of shape (strata, 2, grid size + 1)."""

    count: IntArray
    cost_known: IntArray  # requests whose own cost is logged
    cost_sum: FloatArray  # Σ own cost over those, USD
    model_sum: FloatArray  # Σ m(s), with the model the labels fit (`outcome_coefficients`)


@dataclass(frozen=True)
class LabelledUnits:
    """The labelled requests, in the order the per-request curve would meet them."""

    score: FloatArray
    strong_routed: npt.NDArray[np.bool_]
    cost_usd: FloatArray  # own cost, nan when not logged
    strong_needed: FloatArray
    other_cost_usd: FloatArray  # the shadow's cost on the other tier, nan when none
    inclusion_probability: FloatArray
    stratum: IntArray  # index into BinnedTraffic's first axis


def score_bin(score: npt.ArrayLike, grid: npt.ArrayLike) -> IntArray:
    """The bin of each score on `grid` (sorted): how many thresholds are ≤ the score."""
    out: IntArray = np.searchsorted(np.asarray(grid, dtype=float), score, side="right").astype(
        np.int64
    )
    return out


def outcome_coefficients(labelled: LabelledUnits) -> FloatArray:
    """(a, b) of the outcome model m(s) = expit(a + b·logit(s)), fitted to the labels
    exactly as `thresholds.threshold_curve` fits it; the sums of m come from these."""
    weight = 1.0 / labelled.inclusion_probability
    return per_request.outcome_model(labelled.score, labelled.strong_needed, weight)


def _below(values: FloatArray) -> FloatArray:
    """Per threshold k of the grid, the sum over bins 0..k (requests with score < t_k)."""
    out: FloatArray = np.cumsum(values, axis=-1)[..., :-1]
    return out


def threshold_curve_from_bins(
    *,
    traffic: BinnedTraffic,
    labelled: LabelledUnits,
    grid: npt.ArrayLike,
    coefficients: FloatArray,
    threshold_in_force: float,
    estimator: Estimator = "auto",
    replicates: int = 400,
    confidence: float = 0.95,
    seed: int = 0,
) -> ThresholdCurve:
    """`thresholds.threshold_curve` over `grid` from binned traffic and the labelled units.

    `coefficients` must be `outcome_coefficients(labelled)` and `traffic.model_sum` the
    sums of m(s) with them. Deterministic for a `seed`."""
    thresholds = np.asarray(grid, dtype=float)
    if traffic.count.shape != (traffic.count.shape[0], 2, thresholds.size + 1):
        raise ValueError("traffic must have one bin more than the grid has thresholds")
    n = int(traffic.count.sum())
    if n == 0:
        raise ValueError("no requests")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    if replicates < 20:
        raise ValueError("replicates must be at least 20")
    t0 = float(threshold_in_force)
    rng = np.random.default_rng(seed)
    s_lab = labelled.score
    strong_lab = labelled.strong_routed
    y_lab = labelled.strong_needed
    w_lab = 1.0 / labelled.inclusion_probability

    # A decision logged without its cost stands at its tier's mean logged cost.
    tier_mean = np.zeros(2)
    for tier in (0, 1):
        known = int(traffic.cost_known[:, tier].sum())
        tier_mean[tier] = float(traffic.cost_sum[:, tier].sum()) / known if known else 0.0
    missing = traffic.count - traffic.cost_known
    filled_cost = traffic.cost_sum + missing * tier_mean[None, :, None]
    own_lab = np.where(np.isfinite(labelled.cost_usd), labelled.cost_usd, tier_mean[strong_lab * 1])
    other_lab = labelled.other_cost_usd

    m_harm_lab = per_request._predict(coefficients, s_lab)
    ratio: dict[bool, float] = {}
    for tier in (False, True):
        rows = (strong_lab == tier) & np.isfinite(other_lab)
        denominator = float(np.sum(w_lab[rows] * own_lab[rows]))
        if rows.any() and denominator > 0:
            ratio[tier] = float(np.sum(w_lab[rows] * other_lab[rows]) / denominator)
    if len(ratio) == 1:
        (known_ratio,) = ratio.items()
        ratio[not known_ratio[0]] = 1.0 / known_ratio[1] if known_ratio[1] > 0 else 1.0
    if not ratio:
        ratio = {False: 1.0, True: 1.0}
    step = np.array([ratio[False] - 1.0, ratio[True] - 1.0])
    m_cost_lab = own_lab * step[strong_lab * 1]
    d_lab = np.where(np.isfinite(other_lab), other_lab - own_lab, m_cost_lab)
    # Σ m_cost_delta per stratum, tier and bin: the own cost (filled) times the tier's step.
    cost_model_bins = filled_cost * step[None, :, None]

    n_grid = thresholds.size
    point = {name: np.zeros(n_grid) for name in ("harm_h", "harm_dr", "cost_h", "cost_dr")}
    boot = {name: np.zeros((replicates, n_grid)) for name in point}
    for group in range(traffic.count.shape[0]):
        for tier in (False, True):
            n_h = int(traffic.count[group, int(tier)].sum())
            if n_h == 0:
                continue
            harm_below = _below(traffic.model_sum[group, int(tier)])
            cost_below = _below(cost_model_bins[group, int(tier)])
            cost_total = float(cost_model_bins[group, int(tier)].sum())
            cost_moved = cost_below if tier else cost_total - cost_below
            rows = np.flatnonzero((labelled.stratum == group) & (strong_lab == tier))
            if rows.size == 0:
                # Nothing measured here: the model stands in (both estimators).
                for name, modelled in (
                    ("harm_h", harm_below),
                    ("harm_dr", harm_below),
                    ("cost_h", cost_moved),
                    ("cost_dr", cost_moved),
                ):
                    point[name] += modelled
                    boot[name] += modelled[None, :]
                continue
            harm_total = float(traffic.model_sum[group, int(tier)].sum())
            harm_model = harm_below if tier else -(harm_total - harm_below)
            _add_labelled_stratum(
                point,
                boot,
                rng,
                rows=rows,
                n_h=n_h,
                tier=tier,
                w=w_lab[rows],
                y=y_lab[rows],
                signed_switch=per_request._signed_switch(s_lab[rows], tier, thresholds),
                m_harm=m_harm_lab[rows],
                d=d_lab[rows],
                m_cost=m_cost_lab[rows],
                harm_model=harm_model,
                cost_model=cost_moved,
                replicates=replicates,
            )
    requests_below = np.cumsum(traffic.count.sum(axis=(0, 1)))[:-1]
    base_cost = float(filled_cost.sum())
    return _curve(
        thresholds=thresholds,
        t0=t0,
        n=n,
        point=point,
        boot=boot,
        base_cost=base_cost,
        requests_below=requests_below.astype(np.int64),
        s_lab=s_lab,
        w_lab=w_lab,
        y_lab=y_lab,
        estimator=estimator,
        confidence=confidence,
        replicates=replicates,
    )


def _add_labelled_stratum(
    point: dict[str, FloatArray],
    boot: dict[str, FloatArray],
    rng: np.random.Generator,
    *,
    rows: npt.NDArray[np.intp],
    n_h: int,
    tier: bool,
    w: FloatArray,
    y: FloatArray,
    signed_switch: FloatArray,
    m_harm: FloatArray,
    d: FloatArray,
    m_cost: FloatArray,
    harm_model: FloatArray,
    cost_model: FloatArray,
    replicates: int,
) -> None:
    """One stratum with labels: the Hájek and DR sums and their bootstrap replicates, as in
    `thresholds.threshold_curve` (the same multinomial draw from the same generator)."""
    base = 0.0 if tier else 1.0  # harm of the routed tier: only cheap answers harm
    any_switch = np.abs(signed_switch)
    values = {
        "harm_h": base * y[:, None] + signed_switch * y[:, None],
        "harm_dr": base * y[:, None] + signed_switch * (y - m_harm)[:, None],
        "cost_h": any_switch * d[:, None],
        "cost_dr": any_switch * (d - m_cost)[:, None],
    }
    counts = rng.multinomial(rows.size, np.full(rows.size, 1.0 / rows.size), replicates)
    boot_w = counts * w[None, :]
    boot_norm = n_h / boot_w.sum(axis=1)
    norm = n_h / w.sum()
    point["harm_dr"] += harm_model
    boot["harm_dr"] += harm_model[None, :]
    point["cost_dr"] += cost_model
    boot["cost_dr"] += cost_model[None, :]
    for name in ("harm_h", "harm_dr", "cost_h", "cost_dr"):
        point[name] += norm * (w @ values[name])
        boot[name] += boot_norm[:, None] * (boot_w @ values[name])


def _curve(
    *,
    thresholds: FloatArray,
    t0: float,
    n: int,
    point: dict[str, FloatArray],
    boot: dict[str, FloatArray],
    base_cost: float,
    requests_below: IntArray,
    s_lab: FloatArray,
    w_lab: FloatArray,
    y_lab: FloatArray,
    estimator: Estimator,
    confidence: float,
    replicates: int,
) -> ThresholdCurve:
    """The estimator choice, bands and the curve, as at the end of `threshold_curve`."""
    se_h = boot["harm_h"].std(axis=0, ddof=1) / n
    se_dr = boot["harm_dr"].std(axis=0, ddof=1) / n
    mean_se_h, mean_se_dr = float(np.mean(se_h)), float(np.mean(se_dr))
    use_dr = estimator == "doubly_robust" or (estimator == "auto" and mean_se_dr < mean_se_h)
    key = "dr" if use_dr else "h"
    harm = point[f"harm_{key}"] / n
    harm_boot = boot[f"harm_{key}"] / n
    cost = (base_cost + point[f"cost_{key}"]) / n
    cost_boot = (base_cost + boot[f"cost_{key}"]) / n
    always_strong = int(np.argmin(thresholds))
    close = np.isclose(thresholds, t0)
    in_force = int(np.flatnonzero(close)[0]) if np.any(close) else None
    savings_strong = cost[always_strong] - cost
    savings_strong_boot = cost_boot[:, [always_strong]] - cost_boot
    in_force_cost = cost[in_force] if in_force is not None else base_cost / n
    in_force_boot = cost_boot[:, [in_force]] if in_force is not None else base_cost / n
    savings_now = in_force_cost - cost
    savings_now_boot = in_force_boot - cost_boot

    served_cheap_share = requests_below / n
    sorted_labelled = np.sort(s_lab)
    lo_band = np.minimum(thresholds, t0)
    hi_band = np.maximum(thresholds, t0)
    labels_in_band = (
        np.searchsorted(sorted_labelled, hi_band, side="left")
        - np.searchsorted(sorted_labelled, lo_band, side="left")
    ).astype(np.int64)
    above = thresholds > t0
    lab_below = s_lab[:, None] < thresholds[None, :]
    lab_band = lab_below & (s_lab >= t0)[:, None] & above[None, :]
    # Requests with score < t0: t0 is on the grid, so it is a cumulative count too.
    below_t0 = int(requests_below[int(np.searchsorted(thresholds, t0, side="left"))])
    band_requests = np.where(above, requests_below - below_t0, 0)
    floor = np.maximum(
        per_request._rare_event_floor(lab_below, w_lab, y_lab, requests_below, n),
        per_request._rare_event_floor(lab_band, w_lab, y_lab, band_requests, n),
    )
    return per_request.assemble_curve(
        thresholds=thresholds,
        threshold_in_force=t0,
        served_cheap_share=served_cheap_share,
        estimates=(harm, cost, savings_strong, savings_now),
        replicates_of=(harm_boot, cost_boot, savings_strong_boot, savings_now_boot),
        harm_floor=floor,
        labels_in_band=labels_in_band,
        n_requests=n,
        n_labels=int(s_lab.size),
        doubly_robust=use_dr,
        confidence=confidence,
        replicates=replicates,
        mean_harm_se=(mean_se_h, mean_se_dr),
    )
