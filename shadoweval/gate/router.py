"""Gate routes: start a gate run (operate) and read runs with their reports (read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from shadoweval.auth.models import Principal, Scope
from shadoweval.db import SessionDep
from shadoweval.deps import ReadScope, RowId, SettingsDep, require_scope
from shadoweval.gate import service
from shadoweval.gate.models import GateAccepted, GateCreate, GateDetail, GatePage, GateSummary
from shadoweval.providers.registry import pricing_table

router = APIRouter(prefix="/v1", tags=["gate"])
OperatePrincipal = Annotated[Principal, Depends(require_scope(Scope.OPERATE))]


@router.post("/gates", status_code=status.HTTP_202_ACCEPTED)
def start_gate(
    body: GateCreate,
    session: SessionDep,
    settings: SettingsDep,
    principal: OperatePrincipal,
) -> GateAccepted:
    """Queue a gate run; a worker samples, replays and judges it. Poll GET /v1/gates/{id}.

    422 `underpowered_gate` (with the figures) when the per-segment sample is below the
    fewest pairs a pass needs, unless `allow_underpowered` is true."""
    run = service.create_gate(
        session=session,
        settings=settings,
        spec=body,
        knows_model=pricing_table(settings).knows,
        requested_by=principal.prefix,
        require_power=True,
    )
    assert run.id is not None
    return GateAccepted(id=run.id, status=run.status, url=f"/v1/gates/{run.id}")


@router.get("/gates", dependencies=[ReadScope])
def list_gates(
    session: SessionDep,
    router_name: Annotated[str | None, Query(alias="router")] = None,
    status_filter: Annotated[
        str | None, Query(alias="status", pattern="^(queued|running|passed|failed|error)$")
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> GatePage:
    """Gate runs, newest first, with their status and progress."""
    runs, next_cursor = service.list_gates(
        session, router=router_name, status=status_filter, cursor=cursor, limit=limit
    )
    return GatePage(
        items=[GateSummary.model_validate(run, from_attributes=True) for run in runs],
        next_cursor=next_cursor,
    )


@router.get("/gates/{gate_id}", dependencies=[ReadScope])
def get_gate(gate_id: RowId, session: SessionDep) -> GateDetail:
    """One gate run: status, progress, per-segment results, the Markdown report and JUnit XML."""
    return GateDetail.model_validate(service.get_gate(session, gate_id), from_attributes=True)
