"""GET /v1/judge/quality summed in the database gives the figures of the Python path it
replaced (kept below as the reference), on a seeded set of verdicts, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import judge_quality
from shadoweval.judge import quality
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from tests.conftest import Keys, LiveApi
from tests.integration.test_sql_aggregation import START, _seed, assert_same


def reference_judge_quality_report(
    *, session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[judge_quality.JudgeQualityReport]:
    """The report as it was computed before issue 19: every verdict loaded into Python."""
    query = select(Verdict).where(Verdict.status.in_([VerdictStatus.DONE, VerdictStatus.ERROR]))  # type: ignore[attr-defined]
    if since is not None:
        query = query.where(Verdict.ts >= since)
    if until is not None:
        query = query.where(Verdict.ts < until)
    groups: dict[tuple[str, str], list[Verdict]] = {}
    for verdict in session.scalars(query):
        groups.setdefault((verdict.judge_model, verdict.prompt_hash), []).append(verdict)
    reports = []
    for (model, prompt_hash), verdicts in sorted(groups.items()):
        done = [v for v in verdicts if v.status == VerdictStatus.DONE]
        direction = {Outcome.STRONGER_WINS: 1, Outcome.CHEAPER_WINS: -1}
        figures = quality.judge_quality(
            consistent=[bool(v.consistent) for v in done],
            winners_first=[(v.order_cheaper_first or {}).get("winner") or "" for v in done],
            winners_second=[(v.order_stronger_first or {}).get("winner") or "" for v in done],
            stronger_minus_cheaper_chars=[
                (v.stronger_chars or 0) - (v.cheaper_chars or 0) for v in done
            ],
            verdict_direction=[
                direction.get(Outcome(v.outcome), 0) if v.outcome else 0 for v in done
            ],
        )
        reports.append(
            judge_quality.JudgeQualityReport(
                judge_model=model,
                prompt_hash=prompt_hash,
                verdicts_done=len(done),
                verdicts_error=len(verdicts) - len(done),
                swap_consistency=judge_quality._figure(figures.swap_consistency),
                position_a_preference=judge_quality._figure(figures.position_a_preference),
                verbosity_correlation=judge_quality._figure(figures.verbosity_correlation),
                judge_cost_usd=sum(v.judge_cost_usd for v in verdicts),
            )
        )
    return reports


def _judged(engine: Engine) -> None:
    """`_seed`'s verdicts, given three judges: two with orders, lengths and consistency
    drawn at random (missing on some), one whose length difference never varies (no
    correlation to report), and some verdicts failed."""
    _seed(engine)
    rng = np.random.default_rng(11)
    with Session(engine) as session:
        for i, verdict in enumerate(session.scalars(select(Verdict).order_by(Verdict.id))):  # type: ignore[arg-type]
            judge = (
                ("sonnet", "p1")
                if i % 3 == 0
                else ("haiku", "p2")
                if i % 3 == 1
                else ("opus", "p1")
            )
            verdict.judge_model, verdict.prompt_hash = judge
            if i % 17 == 0:
                verdict.status = VerdictStatus.ERROR
            done = verdict.status == VerdictStatus.DONE
            if not done:
                continue
            winners = ["A", "B", "tie", None]
            first, second = rng.choice(4, size=2, p=[0.45, 0.35, 0.15, 0.05])
            verdict.order_cheaper_first = None if i % 23 == 0 else {"winner": winners[first]}
            verdict.order_stronger_first = {"winner": winners[second]}
            verdict.consistent = None if i % 29 == 0 else bool(first == second)
            if judge[0] == "opus":
                verdict.stronger_chars, verdict.cheaper_chars = 900, 400
            else:
                verdict.stronger_chars = None if i % 31 == 0 else int(rng.integers(50, 60_000))
                verdict.cheaper_chars = int(rng.integers(50, 40_000))
        session.commit()


@pytest.mark.parametrize("hours", [None, (20, 50)])
def test_judge_quality_equals_the_per_verdict_python(
    engine: Engine, hours: tuple[int, int] | None
) -> None:
    _judged(engine)
    since, until = (
        (START + timedelta(hours=hours[0]), START + timedelta(hours=hours[1]))
        if hours
        else (None, None)
    )
    with Session(engine) as session:
        ours = judge_quality.judge_quality_report(session=session, since=since, until=until)
        theirs = reference_judge_quality_report(session=session, since=since, until=until)
    assert [(r.judge_model, r.prompt_hash) for r in ours] == [
        ("haiku", "p2"),
        ("opus", "p1"),
        ("sonnet", "p1"),
    ]
    assert_same([r.model_dump() for r in ours], [r.model_dump() for r in theirs])
    by_judge = {r.judge_model: r for r in ours}
    assert by_judge["opus"].verbosity_correlation.estimate is None
    assert by_judge["sonnet"].verbosity_correlation.estimate is not None
    assert by_judge["sonnet"].verdicts_error > 0
    assert 0 < by_judge["haiku"].position_a_preference.n < 2 * by_judge["haiku"].verdicts_done


def test_the_judge_page_reads_its_pairs_in_one_call(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    _seed(engine)
    with Session(engine) as session:
        ids = list(session.scalars(select(Verdict.id).order_by(Verdict.id)))  # type: ignore[arg-type]
    wanted = [ids[-1], ids[0], ids[len(ids) // 2]]
    with live_api.client(keys.read) as client:
        page = client.get(
            "/v1/verdicts", params={"id": wanted, "include_answers": "true", "limit": 3}
        ).json()
        too_many = client.get("/v1/verdicts", params={"id": list(range(1, 502))})
    assert sorted(v["id"] for v in page["items"]) == sorted(wanted)
    assert too_many.status_code == 422


def test_the_judge_timeline_counts_what_the_page_counted_from_the_verdicts(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    """Per UTC hour, the page drew consistency (every outcome but "inconsistent") and the
    position-A share of decisive calls from the finished verdicts it fetched; the API's
    counts give the same series, for a segment too."""
    _judged(engine)
    with Session(engine) as session:
        done = list(
            session.scalars(
                select(Verdict).where(Verdict.status == VerdictStatus.DONE)  # type: ignore[arg-type]
            )
        )
    assert len({v.ts.replace(minute=0, second=0, microsecond=0) for v in done}) > 24
    with live_api.client(keys.read) as client:
        for segment in (None, "beta"):
            params = {"router": "agg"} | ({"segment": segment} if segment else {})
            hours = client.get("/v1/judge/timeline", params=params).json()
            expected: dict[str, list[int]] = {}
            for v in done:
                if segment and v.segment_value != segment:
                    continue
                hour = v.ts.replace(minute=0, second=0, microsecond=0)
                key = hour.strftime("%Y-%m-%dT%H")
                row = expected.setdefault(key, [0, 0, 0, 0])
                row[0] += 1
                row[1] += v.outcome != Outcome.INCONSISTENT
                for order in (v.order_cheaper_first, v.order_stronger_first):
                    winner = (order or {}).get("winner")
                    row[2] += winner in ("A", "B")
                    row[3] += winner == "A"
            got = {
                h["start"][:13]: [
                    h["verdicts"],
                    h["consistent"],
                    h["decisive_calls"],
                    h["position_a_calls"],
                ]
                for h in hours
            }
            assert got == expected
            assert [h["start"] for h in hours] == sorted(h["start"] for h in hours)


def test_the_judge_pairs_are_the_newest_matches_and_their_count(
    engine: Engine, live_api: LiveApi, keys: Keys
) -> None:
    _judged(engine)
    with Session(engine) as session:
        rows = list(session.scalars(select(Verdict)))
    with live_api.client(keys.read) as client:
        for filters in ({}, {"segment": "alpha", "outcome": "stronger_wins"}):
            answer = client.get(
                "/v1/judge/pairs", params={"router": "agg", "limit": 7, **filters}
            ).json()
            matching = [
                v
                for v in rows
                if all(
                    {"segment": v.segment_value, "outcome": v.outcome}[k] == value
                    for k, value in filters.items()
                )
            ]
            newest = sorted(matching, key=lambda v: (v.ts, v.id), reverse=True)[:7]
            assert answer == {"matching": len(matching), "newest_ids": [v.id for v in newest]}
            assert len(matching) > 7
