"""Router calibration and router economics for the read API (queries + the pure stats)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Float, case, cast, func, literal, select
from sqlmodel import Session

from shadoweval import paging
from shadoweval.events.models import Event, EventKind
from shadoweval.ingest.models import Decision
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.providers.pricing import PER_MILLION, ModelPrice, PricingTable
from shadoweval.sql import percentiles, prefer_hash_aggregate, table_of
from shadoweval.stats import calibration, calibration_tests, economics

VERDICT_TABLE = table_of(Verdict)
DECISION_TABLE = table_of(Decision)
EVENT_TABLE = table_of(Event)


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


class DailyEconomics(BaseModel):
    """One UTC day of decision ts in GET /v1/economics?by=day: USD per request unless a
    name says otherwise; the day's own always-strong baseline model."""

    day: datetime
    n_requests: int
    strong_model: str | None
    realized_cost_per_request_usd: float | None
    always_strong_cost_per_request_usd: float | None
    savings_total_usd: float | None
    savings_per_request_usd: float | None
    savings_per_request_ci95_usd: list[float] | None
    savings_rate: float | None = Field(description="savings ÷ the always-strong cost, 0–1")
    strong_share: ShareFigure | None


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
    days: list[DailyEconomics] | None = Field(
        default=None, description="with by=day: the same figures per UTC day of decision ts"
    )


# Per judge key: router scores, labels (strong_needed) and weights 1/π.
Labelled = dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]]


def _labelled(
    session: Session, router: str | None, since: datetime | None, until: datetime | None
) -> Labelled:
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
    # .all() fetches in one call: iterating the result fetches row by row (psycopg's
    # fetchone took 0.3 s of 16 k labels at 1 M decisions).
    for judge_key, score, label, pi in session.execute(query).all():
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
    return reports_of(
        current,
        reference,
        router=router,
        window={"since": since, "until": until},
        reference_window={"since": reference_since, "until": reference_until},
        n_bins=n_bins,
        window_starts_at=window_starts_at,
        change=change,
    )


def reports_of(
    current: Labelled,
    reference: Labelled,
    *,
    router: str | None,
    window: dict[str, datetime | None],
    reference_window: dict[str, datetime | None],
    n_bins: int,
    window_starts_at: str = "requested",
    change: Event | None = None,
) -> list[CalibrationReport]:
    """One report per judge key of `current` ((score, label, weight) per judge), each with
    the drift test against the same judge's labels in `reference` when it has any."""
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
                window=window,
                reference_window=reference_window if drift is not None else None,
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
    groups: EconomicsGroups | None = None,
) -> EconomicsReport:
    """Realized cost against the always-strong baseline, savings, break-even, rates, latency.

    What a request would have cost on the strong tier: its own cost when served
    there; otherwise the strong model's price applied to its token counts, or, with
    no token counts, its cost scaled by the strong/served price ratio. The decision log
    adds up the sums per group (tier, served model, tokens known, router cost known)
    and the latency percentiles itself: the cost grows with the groups, not the rows.
    `groups`: the window's sums when the caller has them (the days' sums added up,
    `economics_days.window_groups`), which saves a scan of the window.
    """
    c = DECISION_TABLE.c
    where = [c.router == router]
    if since is not None:
        where.append(c.ts >= since)
    if until is not None:
        where.append(c.ts < until)
    # A few dozen groups over up to millions of rows: hashed, and not worth JIT-compiling
    # (PostgreSQL's JIT took seconds of a cold read at 1 M decisions).
    prefer_hash_aggregate(session)
    if groups is None:
        groups = _economics_groups(session, where)
    if not groups:
        return EconomicsReport(router=router, n_requests=0, message="no decisions in this window")
    if strong_model is None:
        strong_model = _most_chosen_model(groups, strong_tier)
    strong_price = pricing.lookup(strong_model) if strong_model else None
    escalated = c.escalated_from.is_not(None)
    found = percentiles(
        session,
        c.latency_ms,
        where=where,
        groups={"all": literal(True), "escalated": escalated, "not_escalated": ~escalated},
        quantiles=(0.5, 0.9, 0.99),
    )

    def latency(name: str) -> economics.LatencyPercentiles:
        count, values = found[name]
        p50, p90, p99 = values if values is not None else (None, None, None)
        return economics.LatencyPercentiles(p50_ms=p50, p90_ms=p90, p99_ms=p99, n=count)

    result = economics.router_economics_from_moments(
        decision_groups(groups, pricing, strong_price, strong_tier),
        latency_all_ms=latency("all"),
        latency_escalated_ms=latency("escalated"),
        latency_not_escalated_ms=latency("not_escalated"),
    )
    report: dict[str, Any] = _clean(result)
    report.update(router=router, strong_model=strong_model, window={"since": since, "until": until})
    return EconomicsReport.model_validate(report)


# (*by, tier, served model, chosen model, tokens known, router cost known) ->
# (Σ x xᵀ, (escalated, fallback, failover))
EconomicsGroups = dict[tuple[Any, ...], tuple[np.ndarray[Any, Any], tuple[int, ...]]]


def _economics_groups(
    session: Session, where: list[Any], by: tuple[Any, ...] = ()
) -> EconomicsGroups:
    """Per (*by, tier, served model, chosen model, tokens known, router cost known): Σ x xᵀ
    over the window's decisions, x = (1, cost, router cost, input tokens, output tokens)
    (a missing value as 0, tokens only where both are known), and the escalated,
    fallback, failover counts."""
    return _economics_groups_each(session, where, [{}], by)[0]


def _economics_groups_each(
    session: Session,
    where: list[Any],
    parameters: Sequence[Mapping[str, Any]],
    by: tuple[Any, ...] = (),
) -> list[EconomicsGroups]:
    """`_economics_groups` once per set of values for the bound parameters in `where`
    (one statement built once: building it costs more than running it over a day of a
    small log)."""
    c = DECISION_TABLE.c
    with_tokens = c.input_tokens.is_not(None) & c.output_tokens.is_not(None)
    reported = c.router_cost_usd.is_not(None)
    with_tokens_flag = case((with_tokens, 1), else_=0)
    reported_flag = case((reported, 1), else_=0)
    x = [
        func.coalesce(cast(c.cost_usd, Float), 0.0),
        func.coalesce(cast(c.router_cost_usd, Float), 0.0),
        case((with_tokens, cast(c.input_tokens, Float)), else_=0.0),
        case((with_tokens, cast(c.output_tokens, Float)), else_=0.0),
    ]
    products = [func.sum(a) for a in x] + [
        func.sum(x[i] * x[j]) for i in range(len(x)) for j in range(i, len(x))
    ]
    flags = [
        func.sum(case((condition, 1), else_=0))
        for condition in (c.escalated_from.is_not(None), c.fallback.is_(True), c.failover.is_(True))
    ]
    keys = (*by, c.tier, c.served_model, c.chosen_model, with_tokens_flag, reported_flag)
    query = select(*keys, func.count(), *products, *flags).where(*where).group_by(*keys)
    size = len(x) + 1
    answers = []
    for values in parameters:
        out: EconomicsGroups = {}
        for row in session.execute(query, dict(values)):
            prefix = tuple(row[: len(by)])
            tier, served_model, chosen_model, tokens, known, n, *sums = row[len(by) :]
            moments = np.zeros((size, size))
            moments[0, 0] = n
            moments[0, 1:] = moments[1:, 0] = [float(v or 0.0) for v in sums[: len(x)]]
            position = len(x)
            for i in range(1, size):
                for j in range(i, size):
                    moments[i, j] = moments[j, i] = float(sums[position] or 0.0)
                    position += 1
            counts = tuple(int(v or 0) for v in sums[position:])
            key = (*prefix, tier, served_model, chosen_model, bool(tokens), bool(known))
            out[key] = (moments, counts)
        answers.append(out)
    return answers


def _most_chosen_model(groups: dict[Any, Any], strong_tier: str) -> str | None:
    """The model the strong tier chose most often in the window (the baseline's price)."""
    counts: dict[str, float] = {}
    for (tier, _, chosen, _, _), (moments, _) in groups.items():
        if tier == strong_tier:
            counts[chosen] = counts.get(chosen, 0.0) + float(moments[0, 0])
    return max(counts, key=lambda model: (counts[model], model)) if counts else None


def decision_groups(
    groups: dict[Any, Any],
    pricing: PricingTable,
    strong_price: ModelPrice | None,
    strong_tier: str,
) -> list[economics.DecisionGroup]:
    """The grouped sums of a window or day as `stats.economics` reads them, each with the
    form that prices its requests on the strong model."""
    return [
        economics.DecisionGroup(
            moments=moments,
            strong_cost_form=_strong_cost_form(
                pricing, strong_price, tier == strong_tier, served_model, with_tokens
            ),
            on_strong_tier=tier == strong_tier,
            router_cost_reported=reported,
            escalated=counts[0],
            fallback=counts[1],
            failover=counts[2],
        )
        for (tier, served_model, _, with_tokens, reported), (moments, counts) in groups.items()
    ]


def _strong_cost_form(
    pricing: PricingTable,
    strong_price: ModelPrice | None,
    on_strong_tier: bool,
    served_model: str,
    with_tokens: bool,
) -> np.ndarray[Any, Any]:
    """λ with strong cost = λ·(1, cost, router cost, input tokens, output tokens)."""
    form = np.zeros(len(economics.MOMENT_TERMS))
    if on_strong_tier or strong_price is None:
        form[1] = 1.0
    elif with_tokens:
        form[3] = strong_price.input / PER_MILLION
        form[4] = strong_price.output / PER_MILLION
    else:
        served = pricing.lookup(served_model)
        if served is None or served.input + served.output == 0:
            form[1] = 1.0
        else:
            form[1] = (strong_price.input + strong_price.output) / (served.input + served.output)
    return form
