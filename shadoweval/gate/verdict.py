"""Gate step 3: once the last item has finished, compute the run's verdict and write it
once, by a conditional update."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.gate import evaluation, report
from shadoweval.gate.models import (
    FINISHED_GATE_STATUSES,
    GateItem,
    GateItemStatus,
    GateRun,
    GateStatus,
)
from shadoweval.gate.plan import error_values
from shadoweval.gate.rows import ITEM_TABLE, OPEN_ITEM_STATUSES, RUN_TABLE
from shadoweval.ingest.models import DecisionPayload
from shadoweval.judge.prompts import render_conversation


def _judged_pairs(session: Session, run_id: int) -> list[evaluation.JudgedPair]:
    rows = session.execute(
        select(GateItem, DecisionPayload.request)  # type: ignore[call-overload]
        .join(DecisionPayload, DecisionPayload.decision_id == GateItem.decision_id, isouter=True)
        .where(GateItem.gate_run_id == run_id)
        .order_by(GateItem.id)
    ).all()
    pairs = []
    for item, request in rows:
        order = item.order_replaced_first or {}
        pairs.append(
            evaluation.JudgedPair(
                segment=item.segment_value,
                request_id=item.request_id,
                label=item.label if item.status == GateItemStatus.DONE else None,
                score_candidate=item.score_candidate,
                score_replaced=item.score_replaced,
                request_text=render_conversation(
                    list((request or {}).get("messages") or []), (request or {}).get("system")
                ),
                candidate_answer=item.candidate_answer or "",
                replaced_answer=item.replaced_answer or "",
                rationale=str(order.get("rationale") or ""),
                error=item.error if item.status == GateItemStatus.ERROR else None,
            )
        )
    return pairs


def finalize_run(engine: Engine, *, run_id: int, settings: Settings) -> str | None:
    """Write the verdict of a planned run whose items are all finished; its status, or None
    while items are open. Idempotent: the update only applies to a run still `running`."""
    now = utcnow()
    with Session(engine) as session:
        run = session.get(GateRun, run_id)
        if run is None or run.planned_at is None or run.status != GateStatus.RUNNING:
            return run.status if run is not None else None
        open_items = session.execute(
            select(func.count())
            .select_from(ITEM_TABLE)
            .where(ITEM_TABLE.c.gate_run_id == run_id, ITEM_TABLE.c.status.in_(OPEN_ITEM_STATUSES))
        ).scalar_one()
        if open_items:
            return None
        pairs = _judged_pairs(session, run_id)
        cost = session.execute(
            select(
                func.coalesce(
                    func.sum(
                        ITEM_TABLE.c.candidate_cost_usd
                        + ITEM_TABLE.c.replaced_cost_usd
                        + ITEM_TABLE.c.judge_cost_usd
                    ),
                    0.0,
                )
            ).where(ITEM_TABLE.c.gate_run_id == run_id)
        ).scalar_one()
    errors = sum(1 for p in pairs if p.label is None)
    counts = {"items_done": len(pairs) - errors, "items_error": errors, "cost_usd": float(cost)}
    if evaluation.error_share_exceeded(len(pairs), errors, settings.gate_max_error_share):
        reasons = sorted({(p.error or "").split(":")[0] for p in pairs if p.label is None})
        message = (
            f"{errors} of {len(pairs)} replayed requests could not be judged "
            f"({', '.join(r for r in reasons if r) or 'errors'}); more than "
            f"{settings.gate_max_error_share:.0%} failing means the judged sample is no longer "
            "the sample drawn, so there is no verdict. First error: "
            + next((p.error or "" for p in pairs if p.label is None), "")
        )
        values = {**error_values(run, message, now), **counts}
    else:
        result = evaluation.evaluate(
            router=run.router,
            candidate_model=run.candidate_model,
            replaced_model=run.replaced_model,
            max_drop=run.max_drop,
            alpha=run.alpha,
            pairs=pairs,
            segment_traffic=run.segment_traffic,
            cost_usd=float(cost),
        )
        values = {
            "status": GateStatus.PASSED if result.passed else GateStatus.FAILED,
            "finished_at": now,
            "results": result.to_json(),
            "report_markdown": report.render_markdown(result),
            "junit_xml": report.render_junit(result),
            **counts,
        }
    with engine.begin() as connection:
        connection.execute(
            update(RUN_TABLE)
            .where(RUN_TABLE.c.id == run_id, RUN_TABLE.c.status == GateStatus.RUNNING)
            .values(**values)
        )
    with Session(engine) as session:
        final = session.get(GateRun, run_id)
        assert final is not None
        return final.status


def finalize_ready_runs(engine: Engine, *, settings: Settings) -> int:
    """Safety net: verdicts for planned runs whose last item finished without writing one."""
    with Session(engine) as session:
        ids = list(
            session.scalars(
                select(RUN_TABLE.c.id).where(
                    RUN_TABLE.c.status == GateStatus.RUNNING,
                    RUN_TABLE.c.planned_at.is_not(None),
                )
            )
        )
    return sum(
        1
        for run_id in ids
        if finalize_run(engine, run_id=run_id, settings=settings) in FINISHED_GATE_STATUSES
    )
