"""`shadoweval bench pages` at a tiny size: a page renders without error against a real API
over the loaded log, its cold render calls the API and its warm one reads the cache."""

from __future__ import annotations

from pathlib import Path

from shadoweval.bench.pages import format_pages_report, run_pages_bench


def test_a_page_renders_cold_from_the_api_and_warm_from_the_cache() -> None:
    figures = run_pages_bench(decisions=600, verdicts=60, pages=("views/quality.py",))
    (page,) = figures["pages"]
    assert page["errors"] == []
    assert page["cold"]["api_calls"] > 0
    assert page["cold"]["failed_calls"] == []
    assert "/v1/segments" in page["cold"]["by_path"]
    assert page["warm"]["api_calls"] == 0
    assert page["warm_seconds"] > 0
    assert 0 < page["cold_seconds"] < 600
    assert "views/quality.py" in format_pages_report(figures)


def test_a_reused_database_is_loaded_once_and_kept(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    first = run_pages_bench(
        decisions=300, verdicts=30, pages=("views/drift.py",), reuse_database=kept
    )
    again = run_pages_bench(
        decisions=300, verdicts=30, pages=("views/drift.py",), reuse_database=kept
    )
    other_size = run_pages_bench(
        decisions=200, verdicts=20, pages=("views/drift.py",), reuse_database=kept
    )
    assert (first["database_reused"], again["database_reused"]) == (False, True)
    assert other_size["database_reused"] is False  # a different load is loaded afresh
    assert again["pages"][0]["errors"] == []
    assert (kept / "bench.db").exists()  # not removed after the run
