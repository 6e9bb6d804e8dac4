"""GET /v1/thresholds: the threshold advisor's curve and recommendation per segment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from shadoweval.analytics import thresholds as thresholds_service
from shadoweval.analytics.thresholds import ThresholdReport
from shadoweval.db import SessionDep
from shadoweval.deps import ReadScope, SettingsDep

router = APIRouter(prefix="/v1", tags=["analytics"], dependencies=[ReadScope])


@router.get("/thresholds")
def thresholds(
    session: SessionDep,
    settings: SettingsDep,
    router_name: Annotated[str, Query(alias="router", min_length=1, max_length=200)],
    segment: Annotated[str | None, Query(max_length=200)] = None,
    harm_budget: Annotated[
        float,
        Query(gt=0, lt=1, description="ε: the harm rate (share of all traffic) allowed."),
    ] = 0.05,
    delta: Annotated[
        float, Query(gt=0, lt=1, description="δ: the risk that the recommendation exceeds ε.")
    ] = 0.1,
) -> ThresholdReport:
    """Per segment, what each threshold of a p_strong_needed router would have done on the
    last decision days' traffic — share routed strong, harm rate, USD per request, savings,
    with bands simultaneous over the grid — and the cheapest threshold whose harm is ≤
    harm_budget with probability ≥ 1 − delta (Learn then Test), with its USD per day forecast.
    Routers without a usable score get `applicable: false` and the reason."""
    return thresholds_service.advise_thresholds(
        session=session,
        settings=settings,
        router=router_name,
        segment=segment,
        harm_budget=harm_budget,
        delta=delta,
    )
