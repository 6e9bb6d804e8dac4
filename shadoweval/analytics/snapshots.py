"""Aggregator service: fold finished verdicts into window snapshots, advance sequential tests.

Each finished verdict is queued by the database as it finishes (`verdict_fold_queue`,
migration 0024) and its entry deleted in the transaction that adds it to its hour and day
snapshots, so it is counted exactly once however many workers aggregate. Sequential tests
consume labels in (ts, request_id) order up to the watermark: the earliest ts still waiting
for a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, literal, or_, select, union_all, update
from sqlalchemy.engine import Engine

from shadoweval.analytics import traffic_snapshots
from shadoweval.analytics.models import SNAPSHOT_SUMS, SequentialState, VerdictWindowSnapshot
from shadoweval.config import Settings
from shadoweval.db import UtcDateTime, dialect_insert, utcnow
from shadoweval.events import service as events
from shadoweval.events.models import EventKind
from shadoweval.ingest.models import AWAITING_PLAN, Decision
from shadoweval.judge.models import (
    OPEN_VERDICT_STATUSES,
    Outcome,
    Verdict,
    VerdictFoldQueue,
    VerdictStatus,
)
from shadoweval.sql import day_start, hour_start, prefer_hash_aggregate, table_of, take_and_fold
from shadoweval.stats import change_point, change_point_detector

VERDICT_TABLE = table_of(Verdict)
FOLD_QUEUE_TABLE = table_of(VerdictFoldQueue)
DECISION_TABLE = table_of(Decision)
SNAPSHOT_TABLE = table_of(VerdictWindowSnapshot)
STATE_TABLE = table_of(SequentialState)
# What a verdict's snapshot contribution reads (`contribution`, `_contribution_columns`).
CONTRIBUTION_COLUMNS = (
    "router",
    "segment_value",
    "direction",
    "judge_key",
    "ts",
    "status",
    "skip_reason",
    "inclusion_probability",
    "strong_needed",
    "cheap_acceptable",
    "score_delta",
    "outcome",
    "judge_cost_usd",
)


def _hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def _day(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


WINDOWS: dict[str, Callable[[datetime], datetime]] = {"hour": _hour, "day": _day}


def contribution(verdict: dict[str, Any]) -> dict[str, float]:
    """One finished verdict's additions to its window's sufficient statistics (pure)."""
    sums = dict.fromkeys(SNAPSHOT_SUMS, 0.0)
    sums["judge_cost_usd"] = float(verdict["judge_cost_usd"] or 0.0)
    status = verdict["status"]
    if status == VerdictStatus.ERROR:
        sums["judge_errors"] = 1
        return sums
    if status == VerdictStatus.SKIPPED:
        reason = verdict["skip_reason"]
        column = {
            "no_payload": "skipped_no_payload",
            "provider_failure": "skipped_provider_failure",
        }
        sums[column.get(reason, "skipped_other")] = 1
        return sums
    pi = float(verdict["inclusion_probability"])
    w = 1.0 / pi
    v = (1.0 - pi) * w * w
    forward = verdict["direction"] == "forward"
    y = float(verdict["strong_needed"] if forward else verdict["cheap_acceptable"])
    d = float(verdict["score_delta"] or 0.0)
    outcome = verdict["outcome"]
    sums.update(
        labels=1,
        inconsistent=int(outcome == Outcome.INCONSISTENT),
        sum_w=w,
        sum_w2=w * w,
        sum_wy=w * y,
        sum_vw=v,
        sum_vwy=v * y,
        sum_wd=w * d,
        sum_vwd=v * d,
        sum_vwd2=v * d * d,
    )
    if outcome == Outcome.CHEAPER_WINS:
        sums.update(sum_w_cheaper=w, sum_vw_cheaper=v)
    elif outcome == Outcome.STRONGER_WINS:
        sums.update(sum_w_stronger=w, sum_vw_stronger=v)
    return sums


def aggregate_finished_verdicts(engine: Engine, *, limit: int = 5000) -> int:
    """Add up to `limit` finished verdicts, queued and not yet aggregated, to their snapshots.

    The sums are `contribution`'s, added up in SQL (one INSERT … SELECT … GROUP BY … ON
    CONFLICT DO UPDATE per call), so the cost grows with the windows touched, not in Python
    per verdict; `sql.take_and_fold` deletes their queue entries in the same transaction.
    """
    now = utcnow()
    with engine.begin() as connection:
        prefer_hash_aggregate(connection)
        return take_and_fold(
            connection,
            queue=FOLD_QUEUE_TABLE,
            key="verdict_id",
            source=VERDICT_TABLE,
            columns=CONTRIBUTION_COLUMNS,
            limit=limit,
            fold=lambda rows: _fold_into_snapshots(connection, rows, now),
        )


def _contribution_columns(rows: Any) -> dict[str, Any]:
    """`contribution` as SQL over the rows of `rows`: one expression per snapshot sum."""
    r = rows.c
    done = r.status == VerdictStatus.DONE
    skipped = r.status == VerdictStatus.SKIPPED

    def when(condition: Any, value: Any) -> Any:
        return case((condition, value), else_=literal(0.0))

    def count(condition: Any) -> Any:
        return case((condition, 1), else_=0)

    pi = case((done, r.inclusion_probability), else_=literal(1.0))
    w = literal(1.0) / pi
    v = (literal(1.0) - pi) * w * w
    y = case((r.direction == "forward", r.strong_needed), else_=r.cheap_acceptable) * literal(1.0)
    d = func.coalesce(r.score_delta, 0.0)
    cheaper = done & (r.outcome == Outcome.CHEAPER_WINS)
    stronger = done & (r.outcome == Outcome.STRONGER_WINS)
    return {
        "labels": count(done),
        "judge_errors": count(r.status == VerdictStatus.ERROR),
        "skipped_no_payload": count(skipped & (r.skip_reason == "no_payload")),
        "skipped_provider_failure": count(skipped & (r.skip_reason == "provider_failure")),
        "skipped_redacted": literal(0),
        # What `contribution` files under "other": every other reason, and none.
        "skipped_other": count(
            skipped
            & or_(
                r.skip_reason.is_(None),
                r.skip_reason.not_in(("no_payload", "provider_failure")),
            )
        ),
        "inconsistent": count(done & (r.outcome == Outcome.INCONSISTENT)),
        "sum_w": when(done, w),
        "sum_w2": when(done, w * w),
        "sum_wy": when(done, w * y),
        "sum_vw": when(done, v),
        "sum_vwy": when(done, v * y),
        "sum_w_cheaper": when(cheaper, w),
        "sum_vw_cheaper": when(cheaper, v),
        "sum_w_stronger": when(stronger, w),
        "sum_vw_stronger": when(stronger, v),
        "sum_wd": when(done, w * d),
        "sum_vwd": when(done, v * d),
        "sum_vwd2": when(done, v * d * d),
        "judge_cost_usd": func.coalesce(r.judge_cost_usd, 0.0),
    }


def _fold_into_snapshots(connection: Any, rows: Any, now: datetime) -> Any:
    """INSERT … SELECT of the hour and day sums of `rows`, added to existing snapshots.

    The rows are summed per hour once; each day is the sum of its hours (one pass over the
    verdicts, not one per window)."""
    r = rows.c
    keys = ("router", "segment_value", "direction", "judge_key")
    per_row = _contribution_columns(rows)
    hour = hour_start(connection, r.ts)
    hours = (
        select(
            *(r[k] for k in keys),
            hour.label("window_start"),
            *(func.sum(value).label(name) for name, value in per_row.items()),
        )
        .group_by(*(r[k] for k in keys), hour)
        # Nested inside the SELECT, so the statement starts with INSERT: Python's sqlite3
        # opens the transaction only before a statement it sees as DML, and a first
        # statement starting with WITH would commit at once; a fold that died after it
        # would keep both its sums and its queue entries (counted twice).
        .cte("hours", nesting=True)
    )
    h = hours.c
    day = day_start(connection, h.window_start)
    days = select(
        *(h[k] for k in keys),
        literal("day").label("window"),
        day.label("window_start"),
        *(func.sum(h[name]).label(name) for name in SNAPSHOT_SUMS),
    ).group_by(*(h[k] for k in keys), day)
    both = union_all(
        select(
            *(h[k] for k in keys),
            literal("hour").label("window"),
            h.window_start,
            *(h[name] for name in SNAPSHOT_SUMS),
        ),
        days,
    ).subquery("windows")
    group = [both.c[k] for k in (*keys, "window", "window_start")]
    ordered = (
        select(
            *group,
            *(both.c[name] for name in SNAPSHOT_SUMS),
            literal(now, UtcDateTime()).label("updated_at"),
        )
        # One order for every aggregator: concurrent ones lock snapshot rows alike.
        .order_by(*group)
    )
    insert = dialect_insert(connection)(SNAPSHOT_TABLE).from_select(
        [*keys, "window", "window_start", *SNAPSHOT_SUMS, "updated_at"], ordered
    )
    return insert.on_conflict_do_update(
        index_elements=[*keys, "window", "window_start"],
        set_={
            **{k: SNAPSHOT_TABLE.c[k] + insert.excluded[k] for k in SNAPSHOT_SUMS},
            "updated_at": insert.excluded["updated_at"],
        },
    )


def watermark(engine: Engine, now: datetime | None = None) -> datetime:
    """The earliest decision ts still waiting for its verdict (DESIGN.md, Time); `now` when none."""
    now = now or utcnow()
    with engine.connect() as connection:
        open_verdict = connection.scalar(
            select(func.min(VERDICT_TABLE.c.ts)).where(
                VERDICT_TABLE.c.status.in_(OPEN_VERDICT_STATUSES)
            )
        )
        unplanned = connection.scalar(
            select(func.min(DECISION_TABLE.c.ts)).where(
                DECISION_TABLE.c.sampled.is_(True),
                ~select(VERDICT_TABLE.c.id)
                .where(VERDICT_TABLE.c.decision_id == DECISION_TABLE.c.id)
                .exists(),
            )
        )
        # Decisions whose sampling period is still open may yet be sampled (hourly mode).
        awaiting = connection.scalar(
            select(func.min(DECISION_TABLE.c.ts)).where(
                DECISION_TABLE.c.sampling_skip_reason == AWAITING_PLAN
            )
        )
    candidates = [t for t in (open_verdict, unplanned, awaiting) if t is not None]
    if not candidates:
        return now
    decoded = [UtcDateTime().process_result_value(t, engine.dialect) for t in candidates]
    return min(t for t in decoded if t is not None)


def advance_sequential_tests(
    engine: Engine, settings: Settings, *, now: datetime | None = None
) -> dict[str, int]:
    """Feed each segment's new harm labels (forward pairs), in order, up to the watermark.

    Every label feeds a change-point detector with unknown pre- and post-change harm
    rates (`stats.change_point_detector.change_point_update`): after each label it tests every
    change point within the last `change_point_window_labels` labels, on a geometric grid,
    for a rise of at least harm_alert_rate − harm_baseline, with the segment's whole
    earlier history as the pre-change side, so it needs no clean baseline and finds a
    change that starts early or mid-way. It alarms at G ≥ h = glr_threshold(A), A =
    `sequential_alarm_threshold`: an in-control ARL ≥ A labels per segment, calibrated by
    simulation for harm rates 0.01–0.5. A new alarm records a `quality_drop` event at the
    alarming label's decision ts.
    """
    now = now or utcnow()
    limit_ts = watermark(engine, now)
    columns = VERDICT_TABLE.c
    with engine.begin() as connection:
        keys = connection.execute(
            select(columns.router, columns.segment_value, columns.judge_key)
            .where(columns.status == VerdictStatus.DONE, columns.direction == "forward")
            .group_by(columns.router, columns.segment_value, columns.judge_key)
        ).all()
        threshold = change_point.glr_threshold(settings.sequential_alarm_threshold)
        # Rounded so 0.15 − 0.10 reads 0.05 in events, not 0.04999999999999999.
        min_rise = max(0.0, round(settings.harm_alert_rate - settings.harm_baseline, 12))
        fed = alarms = 0
        insert = dialect_insert(connection)
        for router, segment, judge_key in keys:
            connection.execute(
                insert(STATE_TABLE)
                .values(
                    router=router,
                    segment_value=segment,
                    direction="forward",
                    judge_key=judge_key,
                    baseline_labels=0,
                    baseline_positives=0,
                    labels=0,
                    positives=0,
                    log_e_value=0.0,
                    log_shiryaev_roberts=-1e300,
                    statistic=0.0,
                    post_change_labels=0,
                    post_change_harms=0,
                    recent_labels="",
                    recent_ts=[],
                    updated_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=["router", "segment_value", "direction", "judge_key"]
                )
            )
            lock = select(STATE_TABLE).where(
                STATE_TABLE.c.router == router,
                STATE_TABLE.c.segment_value == segment,
                STATE_TABLE.c.direction == "forward",
                STATE_TABLE.c.judge_key == judge_key,
            )
            if connection.dialect.name == "postgresql":
                lock = lock.with_for_update()
            state = dict(connection.execute(lock).mappings().one())
            query = (
                select(columns.ts, columns.request_id, columns.strong_needed)
                .where(
                    columns.router == router,
                    columns.segment_value == segment,
                    columns.judge_key == judge_key,
                    columns.direction == "forward",
                    columns.status == VerdictStatus.DONE,
                    columns.ts < limit_ts,
                )
                .order_by(columns.ts, columns.request_id)
            )
            if state["last_ts"] is not None:
                query = query.where(
                    or_(
                        columns.ts > state["last_ts"],
                        and_(
                            columns.ts == state["last_ts"],
                            columns.request_id > state["last_request_id"],
                        ),
                    )
                )
            rows = connection.execute(query).all()
            if not rows:
                continue
            fed += len(rows)
            update_values, new_alarms = _feed(state, rows, min_rise, threshold, settings)
            for alarm in new_alarms:
                alarms += 1
                events.record_event(
                    connection,
                    kind=EventKind.QUALITY_DROP,
                    dedup_key=f"{router}/{segment}/{judge_key}/{alarm['ts'].isoformat()}",
                    ts=alarm["ts"],
                    router=router,
                    details={"segment": segment, "judge_key": judge_key, **alarm["details"]},
                )
            connection.execute(
                update(STATE_TABLE)
                .where(STATE_TABLE.c.id == state["id"])
                .values(updated_at=now, **update_values)
            )
    return {"labels_fed": fed, "new_alarms": alarms}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _from_epoch_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def _feed(
    state: dict[str, Any],
    rows: Sequence[Any],
    min_rise: float,
    threshold: float,
    settings: Settings,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One segment's new labels through the detector: the state row's new values, and the
    new alarms (decision ts and event details)."""
    window = settings.change_point_window_labels
    recent_labels = state["recent_labels"] or ""
    recent_ts = [int(v) for v in (state["recent_ts"] or [])]
    if len(recent_ts) != len(recent_labels):
        # A row from before the ts were kept: its labels still count as history.
        recent_labels, recent_ts = "", []
    before = change_point_detector.restore_state(
        n=int(state["labels"]),
        harms=int(state["positives"]),
        recent=tuple(int(c) for c in recent_labels),
        split=(
            int(state["baseline_labels"] or 0),
            int(state["baseline_positives"] or 0),
            int(state["post_change_labels"] or 0),
            int(state["post_change_harms"] or 0),
        ),
        alarmed=state["alarmed_at_ts"] is not None,
        alarm_n=state["alarm_labels"],
    )
    labels = np.array([int(r[2]) for r in rows], dtype=np.int64)
    result = change_point_detector.change_point_update(
        before, labels, min_rise=min_rise, threshold=threshold, window_labels=window
    )
    after = result.state
    # Decision ts of every label from the oldest kept one on; label k (1-based, counted
    # since the state began) sits at position k − first.
    timeline = recent_ts + [_epoch_us(r[0]) for r in rows]
    first = before.n - len(before.recent) + 1

    def ts_of(label: int) -> datetime:
        return _from_epoch_us(timeline[label - first])

    new_alarms = [
        {
            "ts": ts_of(alarm.n),
            "details": {
                "detector": "bernoulli_glr_change_point",
                "pre_change_harm_rate": alarm.pre_change_rate,
                "post_change_harm_rate": alarm.post_change_rate,
                "change_point_ts": ts_of(alarm.change_n).isoformat(),
                "pre_change_labels": alarm.pre_labels,
                "pre_change_harms": alarm.pre_harms,
                "post_change_labels": alarm.post_labels,
                "post_change_harms": alarm.post_harms,
                "labels_used": alarm.pre_labels + alarm.post_labels,
                "statistic": alarm.statistic,
                "threshold": threshold,
                "min_rise": min_rise,
                "in_control_arl_labels": settings.sequential_alarm_threshold,
            },
        }
        for alarm in result.alarms
    ]
    kept = len(after.recent)
    log_a = math.log(settings.sequential_alarm_threshold)
    # While alarmed the row shows the alarmed rise (change point kept from its alarm) and
    # the evidence for it; otherwise the best split of the detector's history and G.
    pre, pre_harms, post, post_harms = after.split
    statistic = after.evidence if after.alarmed else after.statistic
    if after.alarmed:
        change_ts = ts_of(result.alarms[-1].change_n) if result.alarms else state["change_ts"]
    else:
        change_ts = ts_of(after.n - post + 1) if post else None
    values: dict[str, Any] = {
        "last_ts": rows[-1][0],
        "last_request_id": rows[-1][1],
        "labels": after.n,
        "positives": after.harms,
        "statistic": statistic,
        "threshold": threshold,
        "log_shiryaev_roberts": statistic / threshold * log_a if statistic > 0 else -1e300,
        "post_change_labels": post,
        "post_change_harms": post_harms,
        "change_ts": change_ts,
        "baseline_rate": after.pre_change_rate,
        "baseline_labels": pre,
        "baseline_positives": pre_harms,
        "recent_labels": "".join(str(v) for v in after.recent),
        "recent_ts": timeline[len(timeline) - kept :],
        "alarm_labels": after.alarm_n if after.alarmed else None,
    }
    if not after.alarmed:
        values["alarmed_at_ts"] = None
    elif result.alarms:
        values["alarmed_at_ts"] = new_alarms[-1]["ts"]
    return values, new_alarms


# The traffic side lives in its own module; callers keep reaching it here.
fold_traffic_deltas = traffic_snapshots.fold_traffic_deltas
rebuild_traffic_snapshots = traffic_snapshots.rebuild_traffic_snapshots
