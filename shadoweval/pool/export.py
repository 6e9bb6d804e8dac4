"""Training export: judged pairs of a router since a time, streamed as labelled tuples.

Formats (reference/routers.md §1, §4, §8):
- `jsonl`: one judged pair per line with every field (messages, both answers, both
  orders' verdicts, scores, router score and threshold, costs, π and weight 1/π, segment,
  and the threshold advisor's recommendation for the segment, `threshold_advice`).
- `routellm`: JSONL with RouteLLM's battle columns (`routellm/gpt4_judge_battles`):
  id, model_a (the cheaper model), model_b (the stronger), prompt (a JSON list of the
  user turns), response_a, response_b, winner_model_a, winner_model_b, winner_tie, plus
  the weight. The winner follows the label: `strong_needed = 1` is a model_b win; a
  consistent cheaper win is a model_a win; ties and inconsistent orders are ties.
- `notdiamond`: NotDiamond's custom-router CSV, `prompt, <provider>/<model>/response,
  <provider>/<model>/score` per model; the score is the judge's 1–10 score of that answer
  (mean over both orders) and cells of models not in a pair are empty.

Pairs are read in (ts, id) keyset pages, so a large export never holds all rows.
`export_schema.py` documents each format's rows (the OpenAPI document names them).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import and_, func, or_, select, union
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge import answers as judge_answers
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.pool.export_schema import ThresholdAdvice
from shadoweval.providers.base import content_text
from shadoweval.providers.registry import ProviderRegistry
from shadoweval.shadow.models import ShadowRun
from shadoweval.sql import table_of

VERDICT_TABLE = table_of(Verdict)
DECISION_TABLE = table_of(Decision)
PAYLOAD_TABLE = table_of(DecisionPayload)
RUN_TABLE = table_of(ShadowRun)

DEFAULT_PAGE_SIZE = 500


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    ROUTELLM = "routellm"
    NOTDIAMOND = "notdiamond"


MEDIA_TYPES = {
    ExportFormat.JSONL: "application/x-ndjson",
    ExportFormat.ROUTELLM: "application/x-ndjson",
    ExportFormat.NOTDIAMOND: "text/csv; charset=utf-8",
}
FILE_EXTENSIONS = {
    ExportFormat.JSONL: "jsonl",
    ExportFormat.ROUTELLM: "jsonl",
    ExportFormat.NOTDIAMOND: "csv",
}


@dataclass(frozen=True)
class ExportQuery:
    router: str
    since: datetime | None = None
    until: datetime | None = None


def _where(query: ExportQuery) -> list[Any]:
    c = VERDICT_TABLE.c
    conditions: list[Any] = [
        c.router == query.router,
        c.status == VerdictStatus.DONE,
        c.strong_needed.is_not(None),
    ]
    if query.since is not None:
        conditions.append(c.ts >= query.since)
    if query.until is not None:
        conditions.append(c.ts < query.until)
    return conditions


def count_pairs(*, session: Session, query: ExportQuery) -> int:
    """How many pairs the export will stream (for a progress bar)."""
    return int(
        session.execute(
            select(func.count()).select_from(VERDICT_TABLE).where(*_where(query))
        ).scalar_one()
    )


def pair_models(*, session: Session, query: ExportQuery) -> list[str]:
    """Every model that appears on either side of the exported pairs, sorted."""
    c = VERDICT_TABLE.c
    models = union(
        select(c.cheaper_model.label("model")).where(*_where(query)),
        select(c.stronger_model.label("model")).where(*_where(query)),
    )
    return sorted(str(m) for m in session.execute(models).scalars())


# --- reading pairs -------------------------------------------------------------------------


def _messages(request: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not request:
        return []
    messages = request.get("messages")
    return list(messages) if isinstance(messages, list) else []


def _user_turns(messages: list[dict[str, Any]]) -> list[str]:
    return [
        content_text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user"
    ]


def _winner(outcome: str | None, strong_needed: int) -> str:
    if strong_needed == 1:
        return "model_b"
    if outcome == Outcome.CHEAPER_WINS:
        return "model_a"
    return "tie"


def _pair(
    verdict: Any,
    decision: Any,
    payload: dict[str, Any] | None,
    runs: dict[str, judge_answers.RunAnswer],
) -> dict[str, Any]:
    """One judged pair as the `jsonl` record; the other formats are views of it."""
    request = payload["request"] if payload else None
    answers = judge_answers.assemble(
        verdict,
        logged_response=payload["response"] if payload else None,
        runs=runs,
        logged_cost_usd=decision.cost_usd,
    )
    messages = _messages(request)
    turns = _user_turns(messages)
    pi = float(verdict.inclusion_probability)
    strong_needed = int(verdict.strong_needed)
    return {
        "id": f"{verdict.router}:{verdict.request_id}",
        "verdict_id": int(verdict.id),
        "decision_id": int(verdict.decision_id),
        "router": verdict.router,
        "router_version": decision.router_version,
        "request_id": verdict.request_id,
        "ts": verdict.ts.isoformat(),
        "segment": dict(decision.segment or {}),
        "segment_value": verdict.segment_value,
        "routed_tier": verdict.routed_tier,
        "direction": verdict.direction,
        "prompt": turns[-1] if turns else None,
        "system": (request or {}).get("system"),
        "messages": messages,
        "cheaper_tier": answers.cheaper_tier,
        "stronger_tier": answers.stronger_tier,
        "cheaper_model": answers.cheaper_model,
        "stronger_model": answers.stronger_model,
        "cheaper_answer": answers.cheaper_answer,
        "stronger_answer": answers.stronger_answer,
        "outcome": verdict.outcome,
        "consistent": verdict.consistent,
        "strong_needed": strong_needed,
        "cheap_acceptable": int(verdict.cheap_acceptable),
        "winner": _winner(verdict.outcome, strong_needed),
        "judge": {
            "model": verdict.judge_model,
            "prompt_hash": verdict.prompt_hash,
            "judge_key": verdict.judge_key,
            "scale": "1-10",
            "order_cheaper_first": verdict.order_cheaper_first,
            "order_stronger_first": verdict.order_stronger_first,
        },
        "score_cheaper": verdict.score_cheaper,
        "score_stronger": verdict.score_stronger,
        "score_delta": verdict.score_delta,
        "router_score": verdict.router_score,
        "score_semantics": verdict.score_semantics,
        "threshold": decision.threshold,
        "cost_cheaper_usd": answers.cheaper_cost_usd,
        "cost_stronger_usd": answers.stronger_cost_usd,
        "inclusion_probability": pi,
        "weight": 1.0 / pi,
        "simulated": bool(verdict.simulated),
    }


def iter_pairs(
    *, engine: Engine, query: ExportQuery, page_size: int = DEFAULT_PAGE_SIZE
) -> Iterator[dict[str, Any]]:
    """Every judged pair of the query in (ts, id) order, read one keyset page at a time."""
    v, d = VERDICT_TABLE.c, DECISION_TABLE.c
    after: tuple[datetime, int] | None = None
    while True:
        with Session(engine) as session:
            page = select(VERDICT_TABLE, d.router_version, d.segment, d.threshold, d.cost_usd).join(
                DECISION_TABLE, d.id == v.decision_id
            )
            page = page.where(*_where(query))
            if after is not None:
                page = page.where(or_(v.ts > after[0], and_(v.ts == after[0], v.id > after[1])))
            rows = session.execute(page.order_by(v.ts, v.id).limit(page_size)).all()
            if not rows:
                return
            ids = [row.decision_id for row in rows]
            payloads = {
                p.decision_id: {"request": p.request, "response": p.response}
                for p in session.execute(
                    select(
                        PAYLOAD_TABLE.c.decision_id,
                        PAYLOAD_TABLE.c.request,
                        PAYLOAD_TABLE.c.response,
                    ).where(PAYLOAD_TABLE.c.decision_id.in_(ids))
                )
            }
            runs: dict[int, dict[str, judge_answers.RunAnswer]] = {}
            for run in session.execute(
                select(
                    RUN_TABLE.c.decision_id,
                    RUN_TABLE.c.kind,
                    RUN_TABLE.c.response_text,
                    RUN_TABLE.c.cost_usd,
                ).where(RUN_TABLE.c.decision_id.in_(ids))
            ):
                runs.setdefault(run.decision_id, {})[run.kind] = judge_answers.RunAnswer(
                    run.response_text, run.cost_usd
                )
        for row in rows:
            yield _pair(row, row, payloads.get(row.decision_id), runs.get(row.decision_id, {}))
        last = rows[-1]
        after = (last.ts, int(last.id))
        if len(rows) < page_size:
            return


# --- formats -------------------------------------------------------------------------------


def routellm_row(pair: dict[str, Any]) -> dict[str, Any]:
    """A pair in RouteLLM's battle columns (model_a = cheaper, model_b = stronger)."""
    winner = pair["winner"]
    return {
        "id": pair["id"],
        "model_a": pair["cheaper_model"],
        "model_b": pair["stronger_model"],
        "prompt": json.dumps(_user_turns(pair["messages"]), ensure_ascii=False),
        "response_a": pair["cheaper_answer"],
        "response_b": pair["stronger_answer"],
        "winner_model_a": int(winner == "model_a"),
        "winner_model_b": int(winner == "model_b"),
        "winner_tie": int(winner == "tie"),
        "weight": pair["weight"],
        "segment": pair["segment_value"],
    }


def notdiamond_header(models: list[str], provider_for: Callable[[str], str]) -> list[str]:
    header = ["prompt"]
    for model in models:
        name = f"{provider_for(model)}/{model}"
        header += [f"{name}/response", f"{name}/score"]
    return header


def notdiamond_row(pair: dict[str, Any], models: list[str]) -> list[Any]:
    cells: dict[str, tuple[Any, Any]] = {
        pair["cheaper_model"]: (pair["cheaper_answer"], pair["score_cheaper"]),
        pair["stronger_model"]: (pair["stronger_answer"], pair["score_stronger"]),
    }
    row: list[Any] = [pair["prompt"]]
    for model in models:
        answer, score = cells.get(model, (None, None))
        row += ["" if answer is None else answer, "" if score is None else score]
    return row


def _csv_line(cells: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def export_lines(
    *,
    engine: Engine,
    query: ExportQuery,
    export_format: ExportFormat,
    provider_for: Callable[[str], str],
    page_size: int = DEFAULT_PAGE_SIZE,
    on_pair: Callable[[int], None] | None = None,
    settings: Settings | None = None,
) -> Iterator[str]:
    """The export as text lines (each ending in a newline); `on_pair(1)` after each pair.
    With `settings`, each `jsonl` pair carries its segment's `threshold_advice`."""
    models: list[str] = []
    advice: dict[str, dict[str, Any]] = {}
    if settings is not None and export_format == ExportFormat.JSONL:
        advice = segment_threshold_advice(engine=engine, settings=settings, router=query.router)
    if export_format == ExportFormat.NOTDIAMOND:
        with Session(engine) as session:
            models = pair_models(session=session, query=query)
        yield _csv_line(notdiamond_header(models, provider_for))
    for pair in iter_pairs(engine=engine, query=query, page_size=page_size):
        if export_format == ExportFormat.JSONL:
            if settings is not None:
                pair["threshold_advice"] = advice.get(pair["segment_value"])
            yield json.dumps(pair, ensure_ascii=False) + "\n"
        elif export_format == ExportFormat.ROUTELLM:
            yield json.dumps(routellm_row(pair), ensure_ascii=False) + "\n"
        else:
            yield _csv_line(notdiamond_row(pair, models))
        if on_pair is not None:
            on_pair(1)


def segment_threshold_advice(
    *, engine: Engine, settings: Settings, router: str
) -> dict[str, dict[str, Any]]:
    """The threshold advisor's recommendation per segment value (analytics/thresholds.py, at
    its default budget and risk), for a retrain to use; empty when it does not apply."""
    from shadoweval.analytics import thresholds as advisor
    from shadoweval.exceptions import ShadowevalError

    with Session(engine) as session:
        try:
            report = advisor.advise_thresholds(session=session, settings=settings, router=router)
        except ShadowevalError:
            return {}
    if not report.applicable:
        return {}
    return {
        segment.segment: ThresholdAdvice(
            recommended_threshold=segment.recommendation.threshold,
            change=segment.recommendation.change,
            threshold_in_force=report.threshold_in_force,
            harm_budget=report.harm_budget,
            delta=report.delta,
            window_until=report.window_until.isoformat() if report.window_until else None,
            labels=segment.n_labels,
        ).model_dump(mode="json")
        for segment in report.segments
        if segment.segment is not None
    }


# --- the CLI's side ------------------------------------------------------------------------


def parse_format(text: str) -> ExportFormat:
    try:
        return ExportFormat(text)
    except ValueError as error:
        choices = ", ".join(f.value for f in ExportFormat)
        raise ValueError(f"--format: one of {choices}, not {text!r}") from error


def parse_query(*, router: str, since: str | None, until: str | None) -> ExportQuery:
    """An export query from command-line text; ValueError names the bad option."""

    def moment(name: str, text: str | None) -> datetime | None:
        if text is None:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError as error:
            raise ValueError(f"--{name}: not an RFC 3339 time: {text!r}") from error
        if value.tzinfo is None:
            raise ValueError(f"--{name}: give a UTC offset, e.g. {text}Z")
        return value

    if not router:
        raise ValueError("--router: a router name is needed")
    return ExportQuery(router=router, since=moment("since", since), until=moment("until", until))


def write_export(
    *,
    engine: Engine,
    settings: Settings,
    query: ExportQuery,
    export_format: ExportFormat,
    output: Path | None,
    progress: Callable[[int], AbstractContextManager[Any]],
) -> int:
    """Write the export to `output` (standard output when None) under a progress bar built by
    `progress(total)`; returns the pairs written."""
    with Session(engine) as session:
        total = count_pairs(session=session, query=query)
    written = 0

    def advance(n: int) -> None:
        nonlocal written
        written += n
        bar.update(n)

    stream: TextIO
    with contextlib.ExitStack() as stack:
        if output is None:
            stream = sys.stdout
        else:
            stream = stack.enter_context(output.open("w", encoding="utf-8", newline=""))
        bar = stack.enter_context(progress(total))
        for line in export_lines(
            engine=engine,
            query=query,
            export_format=export_format,
            provider_for=ProviderRegistry(settings).provider_name_for,
            on_pair=advance,
            settings=settings,
        ):
            stream.write(line)
        stream.flush()
    return written
