"""Feature and router-score distribution drift between a reference and a current window.

A thin, typed wrapper over Evidently 0.7's `DataDriftPreset` (reference/drift.md
§1), with every choice Evidently would otherwise make by itself made explicitly:
column types through a `DataDefinition`, one named method and threshold per column
type (the auto-selected test switches from p-values to distances at 1000 reference
rows), and `include_tests=True`, the only way to get the per-column drift flags.

Evidently and pandas are imported inside the functions: importing them takes
seconds and ~300 MB, which the API process must not pay. The Evidently run itself, with
its telemetry switched off, is in `drift_evidently.py`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from shadoweval.stats.drift_evidently import _EvidentlyRun, _run_evidently

ColumnKind = Literal["numerical", "categorical"]
ColumnStatus = Literal[
    "tested",
    "constant",
    "missing_in_reference",
    "missing_in_current",
    "empty_in_reference",
    "empty_in_current",
]

_NUMERICAL: frozenset[ColumnKind] = frozenset({"numerical"})
_CATEGORICAL: frozenset[ColumnKind] = frozenset({"categorical"})
_BOTH: frozenset[ColumnKind] = _NUMERICAL | _CATEGORICAL


@dataclass(frozen=True)
class _Method:
    kinds: frozenset[ColumnKind]
    default_threshold: float
    is_p_value: bool  # p-values drift below the threshold, distances at or above it
    binary_only: bool = False


# Evidently 0.7.23's stat tests (evidently/legacy/calculations/stattests/) with their
# default thresholds; reference/drift.md §1 lists the directions.
METHODS: Mapping[str, _Method] = {
    "wasserstein": _Method(_NUMERICAL, 0.1, False),
    "ks": _Method(_NUMERICAL, 0.05, True),
    "mannw": _Method(_NUMERICAL, 0.05, True),
    "t_test": _Method(_NUMERICAL, 0.05, True),
    "anderson": _Method(_NUMERICAL, 0.1, True),
    "cramer_von_mises": _Method(_NUMERICAL, 0.1, True),
    "ed": _Method(_NUMERICAL, 0.1, False),
    "empirical_mmd": _Method(_NUMERICAL, 0.1, True),
    "psi": _Method(_BOTH, 0.1, False),
    "kl_div": _Method(_BOTH, 0.1, False),
    "jensenshannon": _Method(_BOTH, 0.1, False),
    "hellinger": _Method(_BOTH, 0.1, False),
    "chisquare": _Method(_CATEGORICAL, 0.05, True),
    "z": _Method(_CATEGORICAL, 0.05, True, binary_only=True),
    "g_test": _Method(_CATEGORICAL, 0.1, True),
    "fisher_exact": _Method(_CATEGORICAL, 0.1, True, binary_only=True),
    "TVD": _Method(_CATEGORICAL, 0.1, True),
}


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift: the method, its score, the threshold and the flag.

    `statistic` is a p-value for p-value methods (drift when below the threshold)
    and a distance otherwise (drift when at or above it), None where the method is
    undefined for the data. Status "constant" means one value, the same in both
    windows: not drifted, with the no-change statistic (distance 0, p-value 1) and not
    sent to Evidently. `drifted` is None when the column was not compared (missing or
    empty on one side) or the tests were not requested.
    """

    column: str
    kind: ColumnKind | None
    status: ColumnStatus
    method: str | None
    statistic: float | None
    threshold: float | None
    is_p_value: bool | None
    drifted: bool | None
    n_reference: int
    n_current: int
    note: str = ""


@dataclass(frozen=True)
class DriftResult:
    """Drift of one current window against its reference window.

    `status` is "ok", or "insufficient_data" when a window has fewer than `min_rows`
    rows or no column could be compared (then nothing ran and `message` says why).
    `drifted_share` is the drifted share of the compared columns (tested or constant);
    `dataset_drift` is drifted_share ≥ `drift_share` (Evidently's dataset-level rule).
    `report_html` is Evidently's standalone HTML report (about 4 MB: it embeds its
    JavaScript), or "" when not requested or not run.
    """

    status: Literal["ok", "insufficient_data"]
    message: str
    n_reference: int
    n_current: int
    columns: tuple[ColumnDrift, ...]
    drifted_count: int
    drifted_share: float
    drift_share: float
    dataset_drift: bool
    report_html: str = ""

    def to_dict(self, include_html: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; the HTML is left out unless asked for (it is large)."""
        data = dataclasses.asdict(self)
        data["columns"] = {c["column"]: c for c in data["columns"]}
        if not include_html:
            data.pop("report_html")
        return data

    def column(self, name: str) -> ColumnDrift:
        """The result for one column; KeyError if it was in neither window."""
        for item in self.columns:
            if item.column == name:
                return item
        raise KeyError(name)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class _Column:
    values: NDArray[Any]
    kind: ColumnKind
    n_present: int


def _read_column(name: str, raw: Sequence[Any] | NDArray[Any]) -> _Column:
    array = np.asarray(raw)
    if array.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, got shape {array.shape}")
    if array.dtype == np.bool_:
        return _Column(array.astype(str).astype(object), "categorical", int(array.size))
    if np.issubdtype(array.dtype, np.number):
        numeric = array.astype(np.float64)
        return _Column(numeric, "numerical", int((~np.isnan(numeric)).sum()))
    items = array.astype(object).tolist()
    present = [v for v in items if not _is_missing(v)]
    if present and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_) for v in present
    ):
        numeric = np.array([np.nan if _is_missing(v) else float(v) for v in items])
        return _Column(numeric, "numerical", len(present))
    # Categories are compared as strings, so True and "True" or 1 and "1" agree.
    categories = np.array([None if _is_missing(v) else str(v) for v in items], dtype=object)
    return _Column(categories, "categorical", len(present))


def _read_window(
    label: str, window: Mapping[str, Sequence[Any] | NDArray[Any]]
) -> tuple[dict[str, _Column], int]:
    columns = {str(name): _read_column(str(name), values) for name, values in window.items()}
    lengths = {c.values.size for c in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"{label} columns must all have the same length, got {sorted(lengths)}")
    return columns, (lengths.pop() if lengths else 0)


def _resolve_method(column: str, kind: ColumnKind, method: str) -> _Method:
    spec = METHODS.get(method)
    if spec is None:
        raise ValueError(f"unknown drift method {method!r}; use one of {sorted(METHODS)}")
    if kind not in spec.kinds:
        raise ValueError(f"method {method!r} does not apply to {kind} column {column!r}")
    return spec


def _as_categories(column: _Column) -> NDArray[Any]:
    """Category strings; numbers become their repr so both windows spell them alike."""
    if column.kind == "categorical":
        return column.values
    return np.array([None if math.isnan(v) else repr(v) for v in column.values], dtype=object)


def _distinct(values: NDArray[Any]) -> set[Any]:
    return {v for v in values.tolist() if not _is_missing(v)}


def feature_drift(
    reference: Mapping[str, Sequence[Any] | NDArray[Any]],
    current: Mapping[str, Sequence[Any] | NDArray[Any]],
    *,
    numeric_method: str = "wasserstein",
    categorical_method: str = "jensenshannon",
    numeric_threshold: float | None = None,
    categorical_threshold: float | None = None,
    categorical_columns: Collection[str] = (),
    per_column_method: Mapping[str, str] | None = None,
    per_column_threshold: Mapping[str, float] | None = None,
    drift_share: float = 0.5,
    include_tests: bool = True,
    include_html: bool = True,
    min_rows: int = 30,
) -> DriftResult:
    """Per-column distribution drift of `current` against `reference` with Evidently.

    Columns are typed here, not by Evidently: booleans and strings are categorical,
    numbers numerical, and names in `categorical_columns` categorical regardless (an
    int code with few values). Every column gets an explicit method and threshold:
    per column if given, else by type; thresholds default to the method's Evidently
    default (`METHODS`). Defaults: normed Wasserstein distance W1/σ_ref ≥ 0.1 (about a
    0.1σ mean shift) for numbers and the Jensen–Shannon distance ≥ 0.1 for categories,
    which do not flip from p-values to distances with the window size
    (reference/drift.md §1). Distances have no sample-size correction: below a few
    hundred rows per window, noise alone reaches W1/σ ≈ 0.1, so compare windows of
    at least ~1000 rows, or use a p-value method (`ks`, `chisquare`).

    Calls, as verified in reference/drift.md §1: `Report([DataDriftPreset(...)],
    include_tests=True).run(current, reference)` (current first); a column's flag is
    its ValueDrift test failing. Scores equal scipy's (W1/σ_ref with the population
    σ, the natural-log Jensen–Shannon distance, `ks_2samp`'s p-value), see the tests.

    Not errors: a window with fewer than `min_rows` rows (status "insufficient_data");
    a column absent from one window or without a single value there (reported with
    that status, not tested); a column with one value in both windows (status
    "constant"); a column constant in the reference only (tested, with a note: normed
    distances are degenerate, Evidently's normed Wasserstein then reports 1000). Missing
    values (None, NaN) are dropped per column. `z` and `fisher_exact` need binary
    columns (ValueError otherwise). `warnings.catch_warnings` around the run is
    process-global: do not run two reports in threads of one process.
    """
    if not (0.0 < drift_share <= 1.0):
        raise ValueError(f"drift_share must lie in (0, 1], got {drift_share!r}")
    if int(min_rows) != min_rows or min_rows < 1:
        raise ValueError(f"min_rows must be a positive integer, got {min_rows!r}")
    choices = _Choices(
        numeric_method=numeric_method,
        categorical_method=categorical_method,
        numeric_threshold=numeric_threshold,
        categorical_threshold=categorical_threshold,
        forced_categorical=frozenset(categorical_columns),
        per_column_method=dict(per_column_method or {}),
        per_column_threshold=dict(per_column_threshold or {}),
    )
    ref_columns, n_reference = _read_window("reference", reference)
    cur_columns, n_current = _read_window("current", current)
    if n_reference < min_rows or n_current < min_rows:
        return _insufficient(
            f"insufficient data: {n_reference} reference and {n_current} current rows, "
            f"at least {min_rows} needed in each",
            n_reference=n_reference,
            n_current=n_current,
            drift_share=drift_share,
        )

    untested: list[ColumnDrift] = []
    constant: list[ColumnDrift] = []
    tested: dict[str, _Tested] = {}
    prepared: dict[str, tuple[NDArray[Any], NDArray[Any]]] = {}
    names = list(ref_columns) + [c for c in cur_columns if c not in ref_columns]
    for name in names:
        ref, cur = ref_columns.get(name), cur_columns.get(name)
        if ref is None or cur is None or ref.n_present == 0 or cur.n_present == 0:
            untested.append(_untested_column(name, ref, cur))
            continue
        prepared[name], planned = _plan_column(name, ref, cur, choices)
        if isinstance(planned, ColumnDrift):
            constant.append(planned)
        else:
            tested[name] = planned

    unknown = (set(choices.per_column_method) | set(choices.per_column_threshold)) - set(names)
    if unknown:
        raise ValueError(f"per-column settings for unknown columns: {sorted(unknown)}")
    if not tested and not constant:
        return _insufficient(
            "insufficient data: no column is present in both windows",
            n_reference=n_reference,
            n_current=n_current,
            drift_share=drift_share,
            columns=untested,
        )

    results: dict[str, ColumnDrift] = {c.column: c for c in untested + constant}
    drifted_count, html = 0, ""
    if tested:
        run = _run_evidently(
            {name: prepared[name][0] for name in tested},
            {name: prepared[name][1] for name in tested},
            numerical=[n for n, spec in tested.items() if spec[0] == "numerical"],
            categorical=[n for n, spec in tested.items() if spec[0] == "categorical"],
            methods={n: spec[1] for n, spec in tested.items()},
            thresholds={n: spec[2] for n, spec in tested.items()},
            drift_share=drift_share,
            include_tests=include_tests,
            include_html=include_html,
        )
        drifted_count, html = run.drifted_count, run.html
        for name, plan in tested.items():
            results[name] = _tested_column(
                name, plan, run, ref_columns[name], cur_columns[name], include_tests
            )
    compared = len(tested) + len(constant)
    drifted_share = drifted_count / compared
    return DriftResult(
        status="ok",
        message=f"{drifted_count} of {compared} compared columns drifted",
        n_reference=n_reference,
        n_current=n_current,
        columns=tuple(results[name] for name in names),
        drifted_count=drifted_count,
        drifted_share=drifted_share,
        drift_share=drift_share,
        dataset_drift=drifted_share >= drift_share,
        report_html=html,
    )


# What Evidently tests for one column: its type, method, threshold, method spec and a note.
_Tested = tuple[ColumnKind, str, float, _Method, str]


@dataclass(frozen=True)
class _Choices:
    """`feature_drift`'s choice of type, method and threshold for each column."""

    numeric_method: str
    categorical_method: str
    numeric_threshold: float | None
    categorical_threshold: float | None
    forced_categorical: frozenset[str]
    per_column_method: Mapping[str, str]
    per_column_threshold: Mapping[str, float]


def _insufficient(
    message: str,
    *,
    n_reference: int,
    n_current: int,
    drift_share: float,
    columns: Sequence[ColumnDrift] = (),
) -> DriftResult:
    return DriftResult(
        status="insufficient_data",
        message=message,
        n_reference=n_reference,
        n_current=n_current,
        columns=tuple(columns),
        drifted_count=0,
        drifted_share=0.0,
        drift_share=drift_share,
        dataset_drift=False,
    )


def _untested_column(name: str, ref: _Column | None, cur: _Column | None) -> ColumnDrift:
    """A column absent from one window, or without a single value there."""
    status: ColumnStatus = (
        "missing_in_reference"
        if ref is None
        else "missing_in_current"
        if cur is None
        else "empty_in_reference"
        if ref.n_present == 0
        else "empty_in_current"
    )
    return ColumnDrift(
        column=name,
        kind=None,
        status=status,
        method=None,
        statistic=None,
        threshold=None,
        is_p_value=None,
        drifted=None,
        n_reference=ref.n_present if ref else 0,
        n_current=cur.n_present if cur else 0,
    )


def _plan_column(
    name: str, ref: _Column, cur: _Column, choices: _Choices
) -> tuple[tuple[NDArray[Any], NDArray[Any]], ColumnDrift | _Tested]:
    """A column present in both windows: its values as compared, and either its result (one
    value, the same in both windows) or what Evidently is to test."""
    kind: ColumnKind = (
        "categorical"
        if name in choices.forced_categorical or "categorical" in (ref.kind, cur.kind)
        else "numerical"
    )
    if kind == "categorical":
        pair = (_as_categories(ref), _as_categories(cur))
    else:
        pair = (ref.values, cur.values)
    method = choices.per_column_method.get(
        name, choices.numeric_method if kind == "numerical" else choices.categorical_method
    )
    spec = _resolve_method(name, kind, method)
    threshold = choices.per_column_threshold.get(
        name, choices.numeric_threshold if kind == "numerical" else choices.categorical_threshold
    )
    threshold = spec.default_threshold if threshold is None else float(threshold)
    ref_values, cur_values = (_distinct(v) for v in pair)
    if len(ref_values) == 1 and ref_values == cur_values:
        # One value, the same in both windows: no drift by definition. Evidently would
        # answer NaN (chisquare, t_test) or fail (anderson), so it is not asked.
        return pair, ColumnDrift(
            column=name,
            kind=kind,
            status="constant",
            method=method,
            statistic=1.0 if spec.is_p_value else 0.0,
            threshold=threshold,
            is_p_value=spec.is_p_value,
            drifted=False,
            n_reference=ref.n_present,
            n_current=cur.n_present,
            note="one value, the same in both windows",
        )
    if spec.binary_only and len(ref_values | cur_values) > 2:
        raise ValueError(f"method {method!r} needs a binary column; {name!r} has more values")
    note = ""
    if len(ref_values) == 1:
        note = "constant in reference: a distance normed by its spread is degenerate"
    return pair, (kind, method, threshold, spec, note)


def _tested_column(
    name: str, plan: _Tested, run: _EvidentlyRun, ref: _Column, cur: _Column, include_tests: bool
) -> ColumnDrift:
    kind, method, threshold, spec, note = plan
    score: float | None = run.scores[name]
    if score is None or not math.isfinite(score):
        score, note = None, (note + "; " if note else "") + "statistic undefined"
    return ColumnDrift(
        column=name,
        kind=kind,
        status="tested",
        method=method,
        statistic=score,
        threshold=threshold,
        is_p_value=spec.is_p_value,
        drifted=run.flags.get(name) if include_tests else None,
        n_reference=ref.n_present,
        n_current=cur.n_present,
        note=note,
    )


def score_drift(
    reference_scores: Sequence[float] | NDArray[np.float64],
    current_scores: Sequence[float] | NDArray[np.float64],
    *,
    method: str = "wasserstein",
    threshold: float | None = None,
    include_html: bool = True,
    min_rows: int = 30,
) -> DriftResult:
    """Drift of the router score's distribution, as the numerical column "router_score".

    Same rules as `feature_drift`. A shift in the score distribution alone is not
    miscalibration (the calibration drift test conditions on the score); it says the
    traffic the router sees has changed.
    """
    return feature_drift(
        {"router_score": reference_scores},
        {"router_score": current_scores},
        numeric_method=method,
        numeric_threshold=threshold,
        include_html=include_html,
        min_rows=min_rows,
    )
