"""Group commit's bookkeeping: a merged group's outcome goes back to each request intact."""

from __future__ import annotations

from shadoweval.config import Settings
from shadoweval.ingest.models import ItemError, ItemResult
from shadoweval.ingest.parsing import ParsedBody
from shadoweval.ingest.service import IngestOutcome
from shadoweval.ingest.writer import _Job, _merge, split_outcome


def test_merged_bodies_keep_order_and_unreadable_lines_move_with_their_request() -> None:
    settings = Settings()
    jobs = [
        _Job(ParsedBody(items=[{"n": 0}, None], unparsable={1: "line 2 is not JSON"}), settings),
        _Job(ParsedBody(items=[{"n": 1}]), settings),
        _Job(ParsedBody(items=[None, {"n": 2}], unparsable={0: "line 1 is not JSON"}), settings),
    ]
    merged, offsets = _merge(jobs)
    assert offsets == [0, 2, 3]
    assert merged.items == [{"n": 0}, None, {"n": 1}, None, {"n": 2}]
    assert merged.unparsable == {1: "line 2 is not JSON", 3: "line 1 is not JSON"}


def test_split_outcome_renumbers_results_and_errors_per_request() -> None:
    statuses = ["stored", "invalid", "duplicate", "invalid", "stored"]
    outcome = IngestOutcome(
        results=[ItemResult(index=i, status=s) for i, s in enumerate(statuses)],
        errors=[
            ItemError(index=1, loc=["tier"], msg="missing", type="missing"),
            ItemError(index=3, loc=[], msg="not JSON", type="json_invalid"),
        ],
    )
    first, second, third = split_outcome(outcome, [0, 2, 3], [2, 1, 2])
    assert [(r.index, r.status) for r in first.results] == [(0, "stored"), (1, "invalid")]
    assert [(e.index, e.loc) for e in first.errors] == [(1, ["tier"])]
    assert [(r.index, r.status) for r in second.results] == [(0, "duplicate")]
    assert second.errors == []
    assert [(r.index, r.status) for r in third.results] == [(0, "invalid"), (1, "stored")]
    assert [(e.index, e.type) for e in third.errors] == [(0, "json_invalid")]
