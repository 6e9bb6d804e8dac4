"""One Evidently `DataDriftPreset` run for `drift.feature_drift`: the report's per-column
scores and drift flags, the drifted-column count and the HTML, read from its JSON.

Nothing leaves the machine: Evidently ships usage telemetry (`evidently/telemetry.py`,
iterative-telemetry posting to Evidently's collector, used by its UI service and
collector app, not by `Report.run`; and a legacy `EVIDENTLY_DISABLE_TELEMETRY` flag), so
`_import_evidently` switches both off before the first import, whoever imports it later.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COUNT = "evidently:metric_v2:DriftedColumnsCount"


@dataclass(frozen=True)
class _EvidentlyRun:
    scores: dict[str, float]
    flags: dict[str, bool]  # per column; empty without tests
    drifted_count: int  # DriftedColumnsCount, computed with or without tests
    html: str


def _test_failed(test: Mapping[str, Any]) -> bool:
    return str(test["status"]) in ("FAIL", "TestStatus.FAIL")


# Evidently's opt-outs: iterative-telemetry's DO_NOT_TRACK (any value) and its legacy flag.
TELEMETRY_OPT_OUTS = {"DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}


def _import_evidently() -> tuple[Any, Any]:
    """`evidently` and `evidently.presets`, imported with its telemetry switched off."""
    for name, value in TELEMETRY_OPT_OUTS.items():
        os.environ.setdefault(name, value)
    return importlib.import_module("evidently"), importlib.import_module("evidently.presets")


def _run_evidently(
    reference: Mapping[str, NDArray[Any]],
    current: Mapping[str, NDArray[Any]],
    *,
    numerical: list[str],
    categorical: list[str],
    methods: Mapping[str, str],
    thresholds: Mapping[str, float],
    drift_share: float,
    include_tests: bool,
    include_html: bool,
) -> _EvidentlyRun:
    """Run DataDriftPreset exactly as reference/drift.md §1's verified code does."""
    pandas: Any = importlib.import_module("pandas")
    evidently, presets = _import_evidently()

    definition = evidently.DataDefinition(
        numerical_columns=numerical, categorical_columns=categorical
    )
    ref_ds = evidently.Dataset.from_pandas(
        pandas.DataFrame(dict(reference)), data_definition=definition
    )
    cur_ds = evidently.Dataset.from_pandas(
        pandas.DataFrame(dict(current)), data_definition=definition
    )
    preset = presets.DataDriftPreset(
        columns=numerical + categorical,
        drift_share=drift_share,
        per_column_method=dict(methods),
        per_column_threshold=dict(thresholds),
    )
    report = evidently.Report([preset], include_tests=include_tests)
    with warnings.catch_warnings():
        # Evidently's internals warn on every run (scipy deprecations, floored p-values,
        # zero spreads in summary widgets); none is actionable by the caller.
        warnings.simplefilter("ignore")
        snapshot = report.run(cur_ds, ref_ds)  # (current, reference): current first
        data = snapshot.dict()
        # save_html(file object) writes nothing in 0.7.23; get_html_str is what it wraps.
        html = str(snapshot.get_html_str(as_iframe=False)) if include_html else ""

    flags: dict[str, bool] = {}
    for test in data.get("tests", []):
        params = test["metric_config"]["params"]
        if params["type"] == _VALUE_DRIFT:
            flags[str(params["column"])] = _test_failed(test)
    scores: dict[str, float] = {}
    drifted_count = 0
    for metric in data["metrics"]:
        config = metric["config"]
        if config["type"] == _VALUE_DRIFT:
            scores[str(config["column"])] = float(metric["value"])
        elif config["type"] == _DRIFTED_COUNT:
            drifted_count = int(metric["value"]["count"])
    missing = set(methods) - set(scores)
    if missing:
        raise RuntimeError(f"Evidently returned no drift score for {sorted(missing)}")
    return _EvidentlyRun(scores=scores, flags=flags, drifted_count=drifted_count, html=html)
