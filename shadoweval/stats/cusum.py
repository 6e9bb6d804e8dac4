"""The Bernoulli CUSUM for a known change p0 → p1 at an unknown time (the oracle of
`shadoweval bench detect`), with the threshold h set by simulation for a target in-control
average run length. Labels as in `sequential.py`: one stratum's `strong_needed`, in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shadoweval.stats.sequential import FloatArray, _as_labels, _check_positive, _check_probability


@dataclass(frozen=True)
class BernoulliCusumState:
    """The state of one segment's Bernoulli CUSUM.

    `statistic` is S_t (in nats); `alarmed` is sticky and `alarm_n` is the label count
    at the first S_t ≥ h. The statistic keeps updating after an alarm; start a new
    state after the alarm is handled.
    """

    statistic: float = 0.0
    n: int = 0
    alarmed: bool = False
    alarm_n: int | None = None


def _cusum_increments(p0: float, p1: float) -> tuple[float, float]:
    p0 = _check_probability("p0", p0)
    p1 = _check_probability("p1", p1)
    if not p1 > p0:
        raise ValueError(f"p1 must exceed p0 to detect a rise, got p0={p0}, p1={p1}")
    return math.log(p1 / p0), math.log1p(-p1) - math.log1p(-p0)


def _cusum_path(start: FloatArray, increments: FloatArray) -> FloatArray:
    """S_t = max(0, S_{t−1} + x_t) along the last axis, without a Python loop.

    Lindley's recursion unrolled: S_t = (s0 + C_t) − min(0, min_{k≤t}(s0 + C_k)),
    with C the cumulative sum of the increments.
    """
    walk = start[..., None] + np.cumsum(increments, axis=-1)
    return np.asarray(
        walk - np.minimum(0.0, np.minimum.accumulate(walk, axis=-1)), dtype=np.float64
    )


def bernoulli_cusum_update(
    state: BernoulliCusumState, labels: ArrayLike, p0: float, p1: float, h: float
) -> BernoulliCusumState:
    """Feed labels (1 = harm): S_t = max(0, S_{t−1} + y ln(p1/p0) + (1−y) ln((1−p1)/(1−p0))).

    Alarm at the first S_t ≥ h (Page 1954; the Bernoulli form of Reynolds &
    Stoumbos 1999; reference/drift.md §3b). It is the log-likelihood-ratio CUSUM, so
    the in-control ARL is at least e^h (Lorden 1971) — a loose bound; set h with
    `cusum_threshold_for_arl`. Every label of the chunk is checked.
    """
    up, down = _cusum_increments(p0, p1)
    h = _check_positive("h", h)
    y = _as_labels(labels)
    if y.size == 0:
        return state
    if state.statistic < 0 or math.isnan(state.statistic):
        raise ValueError("inconsistent state: statistic must be nonnegative")
    path = _cusum_path(np.asarray(state.statistic, dtype=np.float64), np.where(y == 1, up, down))
    alarmed, alarm_n = state.alarmed, state.alarm_n
    if not alarmed:
        crossed = np.flatnonzero(path >= h)
        if crossed.size:
            alarmed, alarm_n = True, state.n + int(crossed[0]) + 1
    return replace(
        state, statistic=float(path[-1]), n=state.n + int(y.size), alarmed=alarmed, alarm_n=alarm_n
    )


@dataclass(frozen=True)
class RunLengthEstimate:
    """A simulated average run length, in labels, with its Monte Carlo standard error.

    `censored_share` is the share of paths stopped at `max_run_length` before an alarm;
    with censoring the mean is a lower bound.
    """

    mean_labels: float
    standard_error_labels: float
    median_labels: float
    censored_share: float
    n_paths: int


def _simulate_cusum_run_lengths(
    up: float,
    down: float,
    p_true: float,
    h: float,
    rng: np.random.Generator,
    n_paths: int,
    max_run_length: int,
    stop_when_mean_reaches: float | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Run lengths of n_paths CUSUM paths started at 0, simulated in blocks.

    Paths that alarm leave the active set, so the work is Σ run lengths, not
    n_paths × the longest. With `stop_when_mean_reaches` = T the simulation stops as
    soon as Σ min(RL_i, t) ≥ n T, which already proves ARL ≥ T.
    """
    run_length = np.full(n_paths, max_run_length, dtype=np.int64)
    censored = np.ones(n_paths, dtype=np.bool_)
    active = np.arange(n_paths)
    statistic = np.zeros(n_paths, dtype=np.float64)
    finished_sum = 0.0
    t = 0
    block = 256
    while active.size and t < max_run_length:
        # Cap the block's element count so memory stays ~10 MB whatever n_paths is.
        width = min(block, max_run_length - t, max(16, 1_000_000 // active.size))
        harms = rng.random((active.size, width)) < p_true
        path = _cusum_path(statistic, np.where(harms, up, down))
        crossed = path >= h
        hit = crossed.any(axis=1)
        first = crossed.argmax(axis=1)
        done = active[hit]
        run_length[done] = t + first[hit] + 1
        censored[done] = False
        finished_sum += float(run_length[done].sum())
        statistic = path[~hit, -1]
        active = active[~hit]
        t += width
        if stop_when_mean_reaches is not None and (
            finished_sum + active.size * t >= stop_when_mean_reaches * n_paths
        ):
            run_length[active] = t
            break
        # Longer blocks once only long paths remain: fewer Python iterations.
        block = min(block * 2, 8192)
    return run_length, censored


def cusum_average_run_length(
    p0: float,
    p1: float,
    h: float,
    p_true: float,
    rng_seed: int,
    n_paths: int = 2000,
    max_run_length: int = 1_000_000,
) -> RunLengthEstimate:
    """Simulated average run length of the Bernoulli CUSUM(p0 → p1, h) when harm = p_true.

    ARL = mean over paths of the first t with S_t ≥ h, started at S_0 = 0;
    SE = sd/sqrt(n_paths). With p_true = p0 this is the in-control ARL (labels
    between false alarms); with p_true = p1 it is the detection delay of a change
    present from the start (zero-state ARL). Deterministic for a seed.
    """
    up, down = _cusum_increments(p0, p1)
    h = _check_positive("h", h)
    p_true = _check_probability("p_true", p_true)
    if n_paths < 2 or max_run_length < 1:
        raise ValueError("n_paths must be ≥ 2 and max_run_length ≥ 1")
    rng = np.random.default_rng(rng_seed)
    run_length, censored = _simulate_cusum_run_lengths(
        up, down, p_true, h, rng, n_paths, max_run_length
    )
    lengths = run_length.astype(np.float64)
    return RunLengthEstimate(
        mean_labels=float(lengths.mean()),
        standard_error_labels=float(lengths.std(ddof=1) / math.sqrt(n_paths)),
        median_labels=float(np.median(lengths)),
        censored_share=float(censored.mean()),
        n_paths=n_paths,
    )


def cusum_threshold_for_arl(
    p0: float,
    p1: float,
    target_arl: float,
    rng_seed: int,
    n_paths: int = 1000,
    tolerance: float = 0.01,
) -> float:
    """The CUSUM threshold h whose simulated in-control ARL (harm = p0) reaches target_arl.

    Bisection on h over (0, ln T]: h = ln T is always enough (ARL ≥ e^h, Lorden
    1971) and h = 0 alarms at the first label. Each step simulates n_paths paths
    under p0 with the same seed and stops as soon as the answer "ARL(h) ≥ T?" is
    settled, so a step costs at most about n_paths × T label draws (≈ 0.1 s per
    million on one core) and no run length is ever capped below what the answer needs.
    Returns the upper end of the final bracket, so ARL(h) ≥ T on the simulated paths.

    Accuracy: run lengths are near-geometric, so the simulated ARL at the returned h
    has a relative Monte Carlo error of about 1/sqrt(n_paths) (≈ 3 % at 1000 paths),
    plus the bracket width `tolerance` in h (≈ the same relative error in ARL, since
    ARL grows roughly like e^h). Check with `cusum_average_run_length` if it matters.
    """
    up, down = _cusum_increments(p0, p1)
    if not (target_arl > 1.0) or math.isinf(target_arl):
        raise ValueError(f"target_arl must be a finite number > 1, got {target_arl!r}")
    if n_paths < 10:
        raise ValueError(f"n_paths must be at least 10, got {n_paths!r}")
    tolerance = _check_positive("tolerance", tolerance)
    lo, hi = 0.0, math.log(target_arl)
    # Enough room for every path to reach the target mean; the early stop ends sooner.
    max_run_length = math.ceil(target_arl * n_paths) + 1
    while hi - lo > tolerance:
        mid = 0.5 * (lo + hi)
        rng = np.random.default_rng(rng_seed)
        run_length, _ = _simulate_cusum_run_lengths(
            up, down, p0, mid, rng, n_paths, max_run_length, stop_when_mean_reaches=target_arl
        )
        if run_length.mean() >= target_arl:
            hi = mid
        else:
            lo = mid
    return hi
