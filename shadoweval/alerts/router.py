"""Alert routes: list and read alerts (read), acknowledge and silence (operate), rules (admin)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from shadoweval.alerts import service
from shadoweval.alerts.models import AlertPage, AlertPublic, RuleSetPublic, SilenceIn
from shadoweval.alerts.rules import RuleSet
from shadoweval.auth.models import Principal, Scope
from shadoweval.db import SessionDep
from shadoweval.deps import ReadScope, RowId, SettingsDep, require_scope

router = APIRouter(prefix="/v1", tags=["alerts"])

Operator = Annotated[Principal, Depends(require_scope(Scope.OPERATE))]
Admin = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]


@router.get("/alerts", dependencies=[ReadScope])
def list_alerts(
    session: SessionDep,
    state: Literal["pending", "firing", "resolved", "all"] = "all",
    router_name: Annotated[str | None, Query(alias="router")] = None,
    segment: str | None = None,
    rule: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertPage:
    """Alerts, newest first, each with the numbers behind it and its dashboard link."""
    return service.list_alerts(
        session=session,
        state=state,
        router=router_name,
        segment=segment,
        rule=rule,
        cursor=cursor,
        limit=limit,
    )


@router.get("/alerts/{alert_id}", dependencies=[ReadScope])
def get_alert(alert_id: RowId, session: SessionDep) -> AlertPublic:
    return service.get_alert(session=session, alert_id=alert_id)


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(
    alert_id: RowId, session: SessionDep, settings: SettingsDep, principal: Operator
) -> AlertPublic:
    """Stops reminders for this episode; clears a `router_stale` alert."""
    return service.acknowledge(
        session=session, settings=settings, alert_id=alert_id, by=principal.prefix
    )


@router.post("/alerts/{alert_id}/silence")
def silence(
    alert_id: RowId, body: SilenceIn, session: SessionDep, principal: Operator
) -> AlertPublic:
    """No notifications for this alert's key until the silence ends (`minutes` or `until`)."""
    return service.silence(
        session=session, alert_id=alert_id, minutes=body.minutes, until=body.until
    )


@router.get("/alert-rules")
def get_rules(session: SessionDep, settings: SettingsDep, principal: Admin) -> RuleSetPublic:
    """The rules in force: the last set put here, else the rule file."""
    return service.current_rules(session=session, settings=settings)


@router.put("/alert-rules")
def put_rules(body: RuleSet, session: SessionDep, principal: Admin) -> RuleSetPublic:
    """Replace the whole rule set; invalid rules answer 422 with the field path of each error."""
    return service.put_rules(session=session, rule_set=body, updated_by=principal.prefix)
