"""Distribution drift through Evidently 0.7, checked against scipy's statistics.

The tests that run Evidently share one module-scoped import (about 4 s) and a few
small seeded windows; they carry `pytest.mark.timeout(120)` so a cold import on a
slow machine is not mistaken for a hang. The whole file runs in about 6 s warm.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from shadoweval.stats import drift

N = 2000


def _windows() -> tuple[dict[str, Any], dict[str, Any]]:
    rng = np.random.default_rng(20240601)
    langs = ["en", "de", "zh"]
    reference = {
        "prompt_tokens": rng.normal(500, 100, N),
        "router_score": rng.beta(2, 5, N),
        "language": rng.choice(langs, N, p=[0.6, 0.3, 0.1]).tolist(),
        "topic": rng.choice(["code", "chat"], N, p=[0.3, 0.7]).tolist(),
        "has_code": rng.random(N) < 0.2,
        "constant": np.ones(N),
        "only_in_reference": np.arange(N),
        "empty_in_current": rng.normal(0, 1, N),
    }
    current = {
        "prompt_tokens": rng.normal(550, 100, N),  # shifted by 0.5 σ
        "router_score": rng.beta(2, 5, N),
        "language": rng.choice(langs, N, p=[0.6, 0.3, 0.1]).tolist(),
        "topic": rng.choice(["code", "chat"], N, p=[0.6, 0.4]).tolist(),  # shifted
        "has_code": rng.random(N) < 0.2,
        "constant": np.ones(N),
        "only_in_current": ["x"] * N,
        "empty_in_current": [None] * N,
    }
    return reference, current


# --- without Evidently -----------------------------------------------------------------------


def test_importing_the_module_does_not_import_evidently_or_pandas() -> None:
    code = textwrap.dedent(
        """
        import sys
        import shadoweval.stats.drift as drift
        heavy = [m for m in sys.modules if m.split(".")[0] in ("evidently", "pandas")]
        assert not heavy, heavy
        # An empty window is answered without ever loading Evidently.
        result = drift.feature_drift({"a": [1.0] * 50}, {"a": []})
        assert result.status == "insufficient_data", result
        assert not [m for m in sys.modules if m.split(".")[0] in ("evidently", "pandas")]
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr


def test_too_few_rows_is_insufficient_data_not_an_error() -> None:
    result = drift.feature_drift({"a": [1.0] * 100}, {"a": [2.0] * 10}, min_rows=30)
    assert result.status == "insufficient_data"
    assert "10 current rows" in result.message
    assert result.columns == ()
    assert not result.dataset_drift
    assert result.report_html == ""
    no_columns = drift.feature_drift({"a": [1.0] * 40}, {"b": [1.0] * 40})
    assert no_columns.status == "insufficient_data"
    assert {c.status for c in no_columns.columns} == {"missing_in_current", "missing_in_reference"}


def test_bad_arguments_are_refused_before_evidently_runs() -> None:
    window = {"x": [1.0, 2.0] * 20, "c": ["a", "b"] * 20}
    with pytest.raises(ValueError, match="unknown drift method"):
        drift.feature_drift(window, window, numeric_method="bogus")
    with pytest.raises(ValueError, match="does not apply"):
        drift.feature_drift(window, window, per_column_method={"c": "ks"})
    with pytest.raises(ValueError, match="unknown columns"):
        drift.feature_drift(window, window, per_column_threshold={"nope": 0.1})
    with pytest.raises(ValueError, match="same length"):
        drift.feature_drift({"x": [1.0] * 40, "y": [1.0] * 41}, window)
    with pytest.raises(ValueError, match="drift_share"):
        drift.feature_drift(window, window, drift_share=0.0)
    with pytest.raises(ValueError, match="1-D"):
        drift.feature_drift({"x": [[1.0, 2.0]] * 40}, window)


# --- with Evidently --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_result() -> drift.DriftResult:
    pytest.importorskip("evidently")
    reference, current = _windows()
    return drift.feature_drift(reference, current)


@pytest.mark.timeout(120)
def test_a_shifted_column_drifts_and_an_unshifted_one_does_not(
    default_result: drift.DriftResult,
) -> None:
    result = default_result
    assert result.status == "ok"
    assert (result.n_reference, result.n_current) == (N, N)
    tokens = result.column("prompt_tokens")
    assert (tokens.kind, tokens.method, tokens.threshold, tokens.is_p_value) == (
        "numerical",
        "wasserstein",
        0.1,
        False,
    )
    assert tokens.drifted is True
    assert result.column("topic").drifted is True
    for unchanged in ("router_score", "language", "has_code"):
        assert result.column(unchanged).drifted is False, unchanged
    assert result.column("has_code").kind == "categorical"
    assert result.column("language").method == "jensenshannon"
    assert result.drifted_count == 2
    assert result.drifted_share == pytest.approx(2 / 6)
    assert result.dataset_drift is False


@pytest.mark.timeout(120)
def test_scores_equal_scipys_statistics(default_result: drift.DriftResult) -> None:
    reference, current = _windows()
    # Normed Wasserstein: W1 / σ_ref (population σ).
    expected = stats.wasserstein_distance(
        reference["prompt_tokens"], current["prompt_tokens"]
    ) / np.std(reference["prompt_tokens"])
    assert default_result.column("prompt_tokens").statistic == pytest.approx(expected, rel=1e-9)
    # Jensen–Shannon distance of the category frequencies, natural log.
    cats = ["chat", "code"]
    ref_freq = [reference["topic"].count(c) / N for c in cats]
    cur_freq = [current["topic"].count(c) / N for c in cats]
    expected = distance.jensenshannon(ref_freq, cur_freq)
    assert default_result.column("topic").statistic == pytest.approx(expected, rel=1e-9)


@pytest.mark.timeout(120)
def test_absent_empty_and_constant_columns(default_result: drift.DriftResult) -> None:
    result = default_result
    assert result.column("only_in_reference").status == "missing_in_current"
    assert result.column("only_in_current").status == "missing_in_reference"
    empty = result.column("empty_in_current")
    assert empty.status == "empty_in_current"
    assert empty.drifted is None
    assert empty.n_reference == N
    assert empty.n_current == 0
    constant = result.column("constant")
    assert constant.status == "constant"
    assert constant.statistic == 0.0
    assert constant.drifted is False
    with pytest.raises(KeyError):
        result.column("nowhere")


@pytest.mark.timeout(120)
def test_report_html_and_plain_dict(default_result: drift.DriftResult) -> None:
    assert "<html" in default_result.report_html.lower()
    data = default_result.to_dict()
    assert "report_html" not in data
    assert data["columns"]["prompt_tokens"]["drifted"] is True
    json.dumps(data)  # plain types only
    assert "report_html" in default_result.to_dict(include_html=True)


@pytest.mark.timeout(120)
def test_p_value_methods_per_column_and_without_tests() -> None:
    pytest.importorskip("evidently")
    reference, current = _windows()
    columns = ("prompt_tokens", "router_score", "topic")
    ref = {c: reference[c] for c in columns}
    cur = {c: current[c] for c in columns}
    result = drift.feature_drift(
        ref,
        cur,
        numeric_method="ks",
        categorical_method="chisquare",
        per_column_method={"router_score": "psi"},
        per_column_threshold={"router_score": 0.2},
        include_html=False,
    )
    tokens = result.column("prompt_tokens")
    assert tokens.statistic == pytest.approx(
        stats.ks_2samp(ref["prompt_tokens"], cur["prompt_tokens"]).pvalue, rel=1e-6
    )
    assert (tokens.threshold, tokens.is_p_value, tokens.drifted) == (0.05, True, True)
    score = result.column("router_score")
    assert (score.method, score.threshold, score.is_p_value) == ("psi", 0.2, False)
    assert score.drifted is False
    assert result.column("topic").drifted is True
    assert result.report_html == ""
    untested = drift.feature_drift(ref, cur, include_tests=False, include_html=False)
    assert untested.column("prompt_tokens").drifted is None
    assert untested.drifted_count == 2  # the dataset-level count needs no tests


@pytest.mark.timeout(120)
def test_constant_columns_with_every_method_family() -> None:
    pytest.importorskip("evidently")
    n = 200
    reference = {"same": np.ones(n), "moved": np.ones(n), "label": ["a"] * n, "x": np.arange(n)}
    current = {"same": np.ones(n), "moved": np.full(n, 2.0), "label": ["a"] * n, "x": np.arange(n)}
    # chisquare and t_test give NaN and anderson fails on a single value; none is asked.
    for numeric, categorical in (("t_test", "chisquare"), ("anderson", "z"), ("ks", "psi")):
        result = drift.feature_drift(
            reference,
            current,
            numeric_method=numeric,
            categorical_method=categorical,
            include_html=False,
        )
        for name in ("same", "label"):
            column = result.column(name)
            assert column.status == "constant"
            assert column.drifted is False
            assert column.statistic == (1.0 if column.is_p_value else 0.0)
        moved = result.column("moved")
        assert moved.status == "tested"
        assert moved.drifted is True
        assert "constant in reference" in moved.note
        assert result.column("x").drifted is False
        assert result.drifted_share == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="binary"):
        drift.feature_drift(
            {"c": ["a", "b", "c"] * 20}, {"c": ["a", "b", "c"] * 20}, categorical_method="z"
        )


@pytest.mark.timeout(120)
def test_score_drift_and_small_windows() -> None:
    pytest.importorskip("evidently")
    rng = np.random.default_rng(9)
    shifted = drift.score_drift(rng.beta(2, 5, 1500), rng.beta(3, 4, 1500), include_html=False)
    assert shifted.column("router_score").drifted is True
    # At 40 rows sampling noise alone is W1/σ ≈ 0.2: distances need large windows.
    small = drift.score_drift(
        rng.normal(0, 1, 40), rng.normal(0, 1, 40), method="ks", include_html=False
    )
    assert small.status == "ok"
    assert small.column("router_score").is_p_value
