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
