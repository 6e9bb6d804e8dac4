"""Calibration over decision time: equal windows, each against the first, from one read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import case, func, literal, select
from sqlmodel import Session

from shadoweval.analytics.calibration_service import (
    DECISION_TABLE,
    VERDICT_TABLE,
    CalibrationReport,
    Labelled,
    reports_of,
)
from shadoweval.db import UtcDateTime, aware_utc
from shadoweval.judge.models import VerdictStatus


class CalibrationWindow(BaseModel):
    since: datetime = Field(description="window start (decision ts, inclusive)")
    until: datetime | None = Field(
        description="window end (exclusive); null for the last window when no `until` was "
        "given (it takes the decisions still arriving)"
    )
    reports: list[CalibrationReport] = Field(
        description="one per judge key with labels in the window; every window after the "
        "first carries the drift test against the first window's labels of the same judge"
    )


class CalibrationWindows(BaseModel):
    """The calibration reports of `count` equal windows of decision time."""

    router: str | None
    windows: list[CalibrationWindow] = Field(
        description="oldest first; empty when the router has no decisions in the span"
    )


def calibration_windows(
    *,
    session: Session,
    router: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
    count: int = 6,
    n_bins: int = 10,
) -> CalibrationWindows:
    """`count` equal windows of decision time from `since` (default: the router's first
    decision; every router's without one) to `until` (default: its newest decision, the
    last window left open), each window's reports as `/v1/calibration?since=…&until=…`
    gives them with the first window as the reference. The span's labels are read once
    and split by ts (one statement, not two per window)."""
    d = DECISION_TABLE.c
    mine = [d.router == router] if router is not None else []
    # Two statements: SQLite answers a lone min() or max() from the (router, ts) index
    # but scans the router's million index entries for both in one.
    first = session.execute(select(func.min(d.ts)).where(*mine)).scalar()
    newest = session.execute(select(func.max(d.ts)).where(*mine)).scalar()
    if first is None:
        return CalibrationWindows(router=router, windows=[])
    start = max(since, _utc(first)) if since is not None else _utc(first)
    end = until if until is not None else _utc(newest)
    if end <= start:
        return CalibrationWindows(router=router, windows=[])
    step = (end - start) / count
    bounds = [(start + i * step, start + (i + 1) * step) for i in range(count)]
    # The last window ends at `until` or stays open: labels past `end` fall in it.
    window_of, judge, score, label, weight = _labels_by_window(
        session, router, start, until, [high for _, high in bounds[:-1]]
    )

    def labelled(index: int) -> Labelled:
        chosen = window_of == index
        return {
            key: (score[mask], label[mask], weight[mask])
            for key in sorted(set(judge[chosen].tolist()))
            if (mask := chosen & (judge == key)).any()
        }

    reference = labelled(0)
    windows = []
    for index, (low, high) in enumerate(bounds):
        last = index == count - 1
        window_until = until if last else high
        windows.append(
            CalibrationWindow(
                since=low,
                until=window_until,
                reports=reports_of(
                    labelled(index),
                    reference,
                    router=router,
                    window={"since": low, "until": window_until},
                    reference_window={"since": bounds[0][0], "until": bounds[0][1]},
                    n_bins=n_bins,
                ),
            )
        )
    return CalibrationWindows(router=router, windows=windows)


def _labels_by_window(
    session: Session,
    router: str | None,
    since: datetime,
    until: datetime | None,
    ends: list[datetime],
) -> tuple[np.ndarray[Any, Any], ...]:
    """The span's labelled pairs (as `calibration_service._labelled` selects them): the
    window each falls in (0-based; the first whose end it is before, else the last, worked
    out in SQL, so no ts is decoded per row), judge key, score, label, weight 1/π."""
    c = VERDICT_TABLE.c
    window = case(
        *((c.ts < literal(end, UtcDateTime()), index) for index, end in enumerate(ends)),
        else_=len(ends),
    )
    query = select(
        window, c.judge_key, c.router_score, c.strong_needed, c.inclusion_probability
    ).where(
        c.status == VerdictStatus.DONE,
        c.router_score.is_not(None),
        c.score_semantics == "p_strong_needed",
        c.ts >= since,
    )
    if router is not None:
        query = query.where(c.router == router)
    if until is not None:
        query = query.where(c.ts < until)
    rows = session.execute(query).all()
    return (
        np.array([r[0] for r in rows], dtype=np.intp),
        np.array([r[1] for r in rows], dtype=object),
        np.array([r[2] for r in rows], dtype=float),
        np.array([r[3] for r in rows], dtype=float),
        1.0 / np.array([r[4] for r in rows], dtype=float),
    )


def _utc(value: Any) -> datetime:
    moment = aware_utc(value)
    assert moment is not None
    return moment
