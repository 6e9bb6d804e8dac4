"""`shadoweval bench pages` at a tiny size: a page renders without error against a real API
over the loaded log, its cold render calls the API and its warm one reads the cache."""

from __future__ import annotations

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
