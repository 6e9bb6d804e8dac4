"""Gate runs: validate and create one, and read them back (the API's reads)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shadoweval import paging
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.gate.models import (
    GateCreate,
    GateRun,
    GateStatus,
)
from shadoweval.gate.rows import DECISION_TABLE, RUN_TABLE, KnowsModel


def validate_request(session: Session, spec: GateCreate, knows_model: KnowsModel) -> None:
    """Refuse a gate whose arguments name nothing that exists (InvalidRequest, with `field`)."""
    if spec.candidate == spec.replace:
        raise InvalidRequest(
            "candidate and replace are the same model; a gate compares two models",
            field="candidate",
        )
    decisions = DECISION_TABLE.c
    routers = session.execute(
        select(func.count()).select_from(DECISION_TABLE).where(decisions.router == spec.router)
    ).scalar_one()
    if not routers:
        raise InvalidRequest(f"unknown router {spec.router!r}: no decisions logged", field="router")
    per_segment = segment_traffic(session, spec.router, spec.replace, [])
    if not per_segment:
        raise InvalidRequest(
            f"router {spec.router!r} never routed to {spec.replace!r}; "
            "--replace must be a model the router chooses",
            field="replace",
        )
    unknown = [s for s in spec.segments if s not in per_segment]
    if unknown:
        raise InvalidRequest(
            f"no decisions of router {spec.router!r} to {spec.replace!r} in segment(s) "
            f"{', '.join(unknown)}; known: {', '.join(sorted(per_segment))}",
            field="segments",
        )
    for field, model in (("candidate", spec.candidate), ("replace", spec.replace)):
        if not knows_model(model):
            raise InvalidRequest(
                f"unknown model {model!r}: no price for it (add it to "
                "SHADOWEVAL_PRICING_OVERRIDES if the id is right)",
                field=field,
            )


def create_gate(
    *,
    session: Session,
    settings: Settings,
    spec: GateCreate,
    knows_model: KnowsModel,
    requested_by: str | None = None,
    now: datetime | None = None,
    commit: bool = True,
) -> GateRun:
    """Validate and store a queued gate run (committed); a worker or the CLI runs it.

    `commit=False` only flushes (the run has its id), so a caller can store the run in
    its own transaction, e.g. with the model_change event that starts it."""
    validate_request(session, spec, knows_model)
    now = now or utcnow()
    run = GateRun(
        router=spec.router,
        candidate_model=spec.candidate,
        replaced_model=spec.replace,
        sample_size=spec.sample,
        max_drop=spec.max_drop,
        alpha=spec.alpha if spec.alpha is not None else settings.gate_alpha,
        segments=list(spec.segments),
        seed=spec.seed,
        max_cost_usd=spec.max_cost_usd or settings.gate_max_cost_usd,
        requested_by=requested_by,
        status=GateStatus.QUEUED,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(run)
    if not commit:
        session.flush()
        return run
    session.commit()
    session.refresh(run)
    return run


def segment_traffic(
    session: Session | Connection, router: str, model: str, segments: list[str]
) -> dict[str, int]:
    """Decisions per segment that the router sent to `model` (the weights of the overall test)."""
    columns = DECISION_TABLE.c
    query = (
        select(columns.segment_value, func.count())
        .where(columns.router == router, columns.chosen_model == model)
        .group_by(columns.segment_value)
    )
    if segments:
        query = query.where(columns.segment_value.in_(segments))
    return {str(segment): int(count) for segment, count in session.execute(query)}


# --- reading ---------------------------------------------------------------------------------


def get_gate(session: Session, gate_id: int) -> GateRun:
    run = session.get(GateRun, gate_id)
    if run is None:
        raise NotFound(f"gate run {gate_id} not found", gate_id=gate_id)
    return run


def list_gates(
    session: Session,
    *,
    router: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[GateRun], str | None]:
    """Newest first; `cursor` is the id to continue below."""
    query = select(GateRun).order_by(RUN_TABLE.c.id.desc()).limit(limit + 1)
    if router:
        query = query.where(RUN_TABLE.c.router == router)
    if status:
        query = query.where(RUN_TABLE.c.status == status)
    if cursor:
        query = query.where(RUN_TABLE.c.id < paging.decode_id(cursor))
    runs = list(session.scalars(query))
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, (paging.encode_id(cast(int, runs[-1].id)) if more and runs else None)
