"""Input checks the estimators share (rates, pairwise, calibration, expected harm, PPI):
finite 1-D vectors, 0/1 labels, equal lengths, inclusion probabilities in (0, 1]."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _vector(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (no nan or inf)")
    return array


def _binary(values: npt.ArrayLike, name: str) -> FloatArray:
    array = _vector(values, name)
    if not np.all((array == 0.0) | (array == 1.0)):
        raise ValueError(f"{name} must contain only 0 and 1")
    return array


def _same_length(**arrays: FloatArray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"inputs must have equal lengths, got {described}")


def _inclusion_probability(inclusion_probability: npt.ArrayLike, n: int) -> FloatArray:
    pi = np.asarray(inclusion_probability, dtype=np.float64)
    if pi.ndim == 0:
        pi = np.full(n, float(pi))
    pi = _vector(pi, "inclusion_probability")
    if len(pi) != n:
        raise ValueError(f"inclusion_probability has {len(pi)} values for {n} observations")
    if not np.all((pi > 0.0) & (pi <= 1.0)):
        raise ValueError("inclusion_probability must lie in (0, 1]")
    return pi


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _two_sided_z(confidence: float) -> float:
    _check_confidence(confidence)
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)
