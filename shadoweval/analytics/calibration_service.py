"""Router calibration and router economics for the read API (queries + the pure stats)."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Table, select
from sqlmodel import Session

from shadoweval import paging
from shadoweval.events.models import Event, EventKind
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.providers.pricing import PricingTable
from shadoweval.stats import calibration, calibration_tests, economics

VERDICT_TABLE = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
DECISION_TABLE = cast(Table, Decision.__table__)  # type: ignore[attr-defined]
EVENT_TABLE = cast(Table, Event.__table__)  # type: ignore[attr-defined]


def _clean(value: Any) -> Any:
    """Dataclasses to JSON-able values, NaN/inf to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _clean(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating | np.integer):
        return _clean(value.item())
    return value


class CalibrationReport(BaseModel):
    router: str | None
    judge_key: str
    n: int = Field(description="labelled pairs with a p_strong_needed router score")
    window: dict[str, datetime | None]
    reference_window: dict[str, datetime | None] | None
    reliability_curve: list[dict[str, Any]]
    expected_calibration_error: float | None = Field(description="display only; biased upward")
    brier: dict[str, Any]
    spiegelhalter: dict[str, Any]
    cox: dict[str, Any] = Field(description="calibration intercept and slope (ideal 0 and 1)")
    against_perfect_calibration: dict[str, Any]
    drift_against_reference: dict[str, Any] | None
    window_starts_at: str = Field(
        default="requested",
        description="model_change: the window starts at the router's latest model change and "
        "the reference is the window before it; requested: since/until as given; all: no bounds",
    )
    model_change: dict[str, Any] | None = Field(
        default=None, description="the model_change event that starts the window, if any"
    )


class CalibrationReportPage(BaseModel):
    """Reports per judge, by judge key; `next_cursor` (a position) continues them."""

    items: list[CalibrationReport]
    next_cursor: str | None = None


class ShareFigure(BaseModel):
    """A share of requests, count/n, with its 95 % Wilson interval."""

    share: float
    ci95_low: float
    ci95_high: float
    count: int
    n: int


class LatencyFigure(BaseModel):
    """Latency percentiles in milliseconds over the requests that reported one."""

    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    n: int


class BreakEvenFigure(BaseModel):
    """(1 − p_strong)(C_strong − C_weak) against the router's overhead r, USD per request."""

    strong_share: float
    strong_cost_per_request_usd: float | None
    weak_cost_per_request_usd: float | None
    savings_side_usd: float
    router_cost_side_usd: float
    router_pays_for_itself: bool


class EconomicsReport(BaseModel):
    """GET /v1/economics: USD per request unless a name says otherwise, 95 % intervals as
    [low, high]; with no decisions in the window only router, n_requests and message."""

    router: str
    n_requests: int
    message: str | None = Field(default=None, description="why the figures are missing")
    strong_model: str | None = Field(
        default=None, description="the model the always-strong baseline prices every request at"
    )
    window: dict[str, datetime | None] | None = None
    realized_cost_per_request_usd: float | None = None
    realized_cost_per_request_ci95_usd: list[float] | None = None
    model_cost_per_request_usd: float | None = None
    router_overhead_per_request_usd: float | None = None
    router_cost_reported_share: float | None = Field(
        default=None, description="share of decisions that carry router_cost_usd (0–1)"
    )
    always_strong_cost_per_request_usd: float | None = None
    savings_total_usd: float | None = Field(
        default=None, description="over the window, against always-strong; router overhead in"
    )
    savings_per_request_usd: float | None = None
    savings_per_request_ci95_usd: list[float] | None = None
    savings_rate: float | None = Field(
        default=None, description="savings ÷ the always-strong cost, a 0–1 share"
    )
    strong_share: ShareFigure | None = None
    break_even: BreakEvenFigure | None = None
    escalation: ShareFigure | None = None
    escalation_warn_rate: float | None = None
    escalation_warning: bool | None = None
    fallback: ShareFigure | None = None
    failover: ShareFigure | None = None
    latency_all_ms: LatencyFigure | None = None
    latency_escalated_ms: LatencyFigure | None = None
    latency_not_escalated_ms: LatencyFigure | None = None
    escalation_added_p90_ms: float | None = None
    escalation_added_p99_ms: float | None = None


def _labelled(
    session: Session, router: str | None, since: datetime | None, until: datetime | None
) -> dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    c = VERDICT_TABLE.c
    query = select(c.judge_key, c.router_score, c.strong_needed, c.inclusion_probability).where(
        c.status == VerdictStatus.DONE,
        c.router_score.is_not(None),
        c.score_semantics == "p_strong_needed",
    )
    if router is not None:
        query = query.where(c.router == router)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    groups: dict[str, list[tuple[float, int, float]]] = {}
    for judge_key, score, label, pi in session.execute(query):
        groups.setdefault(judge_key, []).append((score, label, pi))
    return {
        key: (
            np.array([r[0] for r in rows], dtype=float),
            np.array([r[1] for r in rows], dtype=float),
            1.0 / np.array([r[2] for r in rows], dtype=float),
        )
        for key, rows in groups.items()
    }


def labelled_scores(
    session: Session, router: str, since: datetime, until: datetime
) -> dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """Per judge key, the window's labelled (router score, strong_needed, inclusion
    probability π), for tests that take π rather than the weights 1/π."""
    return {
        key: (score, label, 1.0 / weight)
        for key, (score, label, weight) in _labelled(session, router, since, until).items()
    }


def calibration_report_page(
    *,
    session: Session,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    reference_since: datetime | None = None,
    reference_until: datetime | None = None,
    n_bins: int = 10,
    cursor: str | None = None,
    limit: int | None = None,
) -> CalibrationReportPage:
    """One page of `calibration_reports` (by judge key), from the cursor's position."""
    reports = calibration_reports(
        session=session,
        router=router,
        since=since,
        until=until,
        reference_since=reference_since,
        reference_until=reference_until,
        n_bins=n_bins,
    )
    items, next_cursor = paging.page_of(reports, cursor, limit)
    return CalibrationReportPage(items=items, next_cursor=next_cursor)


def calibration_reports(
    *,
    session: Session,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    reference_since: datetime | None = None,
    reference_until: datetime | None = None,
    n_bins: int = 10,
) -> list[CalibrationReport]:
    """Calibration of router_score against strong_needed, weighted by 1/π, one report per
    judge (verdicts of different judges are never pooled), with a drift test against the
    reference window when one is given.

    For one router with no window given, the current window starts at the router's latest
    model_change event and the reference is the window before it (back to the previous
    change): a reset never hides a miscalibrated router, since every report also carries
    the test against perfect calibration.
    """
    window_starts_at = "all" if since is None and until is None else "requested"
    change: Event | None = None
    no_window = since is None and reference_since is None and reference_until is None
    if router is not None and no_window:
        change, previous = _model_changes(session, router, until)
        if change is not None:
            window_starts_at = "model_change"
            since, reference_until = change.ts, change.ts
            reference_since = previous.ts if previous is not None else None
    current = _labelled(session, router, since, until)
    reference = (
        _labelled(session, router, reference_since, reference_until)
        if reference_since is not None or reference_until is not None
        else {}
    )
    reports = []
    for judge_key, (score, label, weight) in sorted(current.items()):
        drift = None
        if judge_key in reference:
            ref_score, ref_label, ref_weight = reference[judge_key]
            drift = _clean(
                calibration_tests.calibration_drift_test(
                    ref_score, ref_label, score, label, ref_weights=ref_weight, cur_weights=weight
                )
            )
        z, p_value = calibration.spiegelhalter_z(score, label)
        reports.append(
            CalibrationReport(
                router=router,
                judge_key=judge_key,
                n=int(score.size),
                window={"since": since, "until": until},
                reference_window={"since": reference_since, "until": reference_until}
                if drift is not None
                else None,
                reliability_curve=_clean(
                    calibration.reliability_curve(score, label, weight, n_bins=n_bins)
                )["bins"],
                expected_calibration_error=_clean(
                    calibration.expected_calibration_error(score, label, weight, n_bins=n_bins)
                ),
                brier=_clean(calibration.brier_decomposition(score, label, weight)),
                spiegelhalter={"z": _clean(z), "p_value": _clean(p_value)},
                cox=_clean(calibration.cox_calibration(score, label, weight)),
                against_perfect_calibration=_clean(
                    calibration_tests.perfect_calibration_test(score, label, weight)
                ),
                drift_against_reference=drift,
                window_starts_at=window_starts_at,
                model_change=_change_details(change),
            )
        )
    return reports


def _model_changes(
    session: Session, router: str, until: datetime | None
) -> tuple[Event | None, Event | None]:
    """The router's latest model_change event (before `until`) and the one before it."""
    c = EVENT_TABLE.c
    query = select(Event).where(c.kind == EventKind.MODEL_CHANGE, c.router == router)
    if until is not None:
        query = query.where(c.ts < until)
    latest = session.scalars(query.order_by(c.ts.desc(), c.id.desc()).limit(1)).first()
    if latest is None:
        return None, None
    # Changes of several tiers at one ts open one window, not an empty reference.
    previous = session.scalars(
        query.where(c.ts < latest.ts).order_by(c.ts.desc(), c.id.desc()).limit(1)
    ).first()
    return latest, previous


def _change_details(change: Event | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {
        "event_id": change.id,
        "ts": change.ts,
        "tier": change.details.get("tier"),
        "model": change.details.get("model"),
        "previous_models": change.details.get("previous_models", []),
        "source": change.details.get("source"),
    }


def router_economics_report(
    *,
    session: Session,
    pricing: PricingTable,
    router: str,
    since: datetime | None = None,
    until: datetime | None = None,
    strong_tier: str = "strong",
    strong_model: str | None = None,
) -> EconomicsReport:
    """Realized cost against the always-strong baseline, savings, break-even, rates, latency.

    What a request would have cost on the strong tier: its own cost when served
    there; otherwise the strong model's price applied to its token counts, or, with
    no token counts, its cost scaled by the strong/served price ratio.
    """
    c = DECISION_TABLE.c
    query = select(
        c.tier,
        c.cost_usd,
        c.router_cost_usd,
        c.latency_ms,
        c.escalated_from,
        c.fallback,
        c.failover,
        c.served_model,
        c.chosen_model,
        c.input_tokens,
        c.output_tokens,
    ).where(c.router == router)
    if since is not None:
        query = query.where(c.ts >= since)
    if until is not None:
        query = query.where(c.ts < until)
    rows = session.execute(query).all()
    if not rows:
        return EconomicsReport(router=router, n_requests=0, message="no decisions in this window")
    if strong_model is None:
        strong_models = [r.chosen_model for r in rows if r.tier == strong_tier]
        strong_model = max(set(strong_models), key=strong_models.count) if strong_models else None
    strong_price = pricing.lookup(strong_model) if strong_model else None

    def strong_cost(row: Any) -> float:
        cost = float(row.cost_usd or 0.0)
        if row.tier == strong_tier or strong_price is None:
            return cost
        if row.input_tokens is not None and row.output_tokens is not None:
            return strong_price.cost_usd(row.input_tokens, row.output_tokens)
        served = pricing.lookup(row.served_model)
        if served is None or served.input + served.output == 0:
            return cost
        return cost * (strong_price.input + strong_price.output) / (served.input + served.output)

    result = economics.router_economics(
        tier=[r.tier for r in rows],
        cost_usd=[float(r.cost_usd or 0.0) for r in rows],
        strong_cost_usd=[strong_cost(r) for r in rows],
        router_cost_usd=[
            math.nan if r.router_cost_usd is None else r.router_cost_usd for r in rows
        ],
        latency_ms=[math.nan if r.latency_ms is None else r.latency_ms for r in rows],
        escalated=[r.escalated_from is not None for r in rows],
        fallback=[bool(r.fallback) for r in rows],
        failover=[bool(r.failover) for r in rows],
        strong_tier=strong_tier,
    )
    report: dict[str, Any] = _clean(result)
    report.update(router=router, strong_model=strong_model, window={"since": since, "until": until})
    return EconomicsReport.model_validate(report)
