"""Judge change control: one `judge_changed` event each time a router's verdicts switch
to another judge key (model + prompt hash).

Finished verdicts are read in (finished_at, id) order past a watermark, and grouped
per router into runs of consecutive equal judge keys: completion order says
which judge was configured when, whatever the decisions' ts. Every run after the
router's first records an event, so switching A → B → A records two. The router's first
run only establishes its judge, like the first models of a new router. Windows,
snapshots and sequential tests are keyed by judge key already, so the event marks where
a router's estimates start over; it never merges them.

The watermark cannot skip a verdict that commits late as long as it commits within
`judge_watch_settle_seconds` of its finished_at (set in the finishing transaction itself,
so the lag is that transaction's duration): only verdicts finished longer ago are read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, and_, or_, select
from sqlmodel import Session

from shadoweval.db import dialect_insert, utcnow
from shadoweval.events.models import EventKind
from shadoweval.events.service import record_event
from shadoweval.feedback.models import JudgeWatchState
from shadoweval.judge.models import Verdict, VerdictStatus

VERDICT = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
STATE = cast(Table, JudgeWatchState.__table__)  # type: ignore[attr-defined]
_DEDUP_KEY_MAX = 300  # event.dedup_key's length
BATCH = 5000


@dataclass(frozen=True)
class JudgeRun:
    """Consecutive finished verdicts of one router from one judge key."""

    judge_key: str
    judge_model: str
    prompt_hash: str
    first_ts: datetime  # earliest decision ts among the run's verdicts read so far
    started_at: datetime  # finished_at of the run's first verdict


def judge_event_key(router: str, judge_key: str, started_at: datetime | None = None) -> str:
    """`router|judge_key` for a key's first run (what /v1/segments looks up); a return to
    an earlier key appends `@` + the run's start, so it gets an event of its own."""
    key = f"{router}|{judge_key}"
    if started_at is not None:
        key += f"@{started_at.isoformat()}"
    if len(key) <= _DEDUP_KEY_MAX:
        return key
    # Over-long names still get exactly one event each.
    return f"{router[:200]}|sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _runs(rows: list[Row[Any]], current: str | None) -> list[tuple[str | None, JudgeRun]]:
    """(previous key, run) for each run in rows that starts a new key after `current`."""
    found: list[tuple[str | None, JudgeRun]] = []
    for row in rows:
        if row.judge_key == current:
            if found and row.ts < found[-1][1].first_ts:
                # The event's ts is the earliest decision the new run judged.
                previous, run = found[-1]
                found[-1] = (previous, replace(run, first_ts=row.ts))
            continue
        found.append(
            (
                current,
                JudgeRun(
                    judge_key=row.judge_key,
                    judge_model=row.judge_model,
                    prompt_hash=row.prompt_hash,
                    first_ts=row.ts,
                    started_at=row.finished_at,
                ),
            )
        )
        current = row.judge_key
    return found


def _record(session: Session, router: str, previous: str, run: JudgeRun) -> bool:
    seen_before = session.execute(
        select(VERDICT.c.id)
        .where(
            VERDICT.c.router == router,
            VERDICT.c.judge_key == run.judge_key,
            VERDICT.c.status == VerdictStatus.DONE,
            VERDICT.c.finished_at < run.started_at,
        )
        .limit(1)
    ).first()
    return record_event(
        session,
        kind=EventKind.JUDGE_CHANGED,
        dedup_key=judge_event_key(
            router, run.judge_key, run.started_at if seen_before is not None else None
        ),
        ts=run.first_ts,
        router=router,
        details={
            "judge_key": run.judge_key,
            "judge_model": run.judge_model,
            "prompt_hash": run.prompt_hash,
            "previous_judge_key": previous,
            "first_judged_at": run.started_at.isoformat(),
        },
    )


def _watermark(session: Session) -> tuple[datetime, int] | None:
    """How far every router has been read: the newest position any state row records."""
    s = STATE.c
    row = session.execute(
        select(s.last_finished_at, s.last_verdict_id)
        .order_by(s.last_finished_at.desc(), s.last_verdict_id.desc())
        .limit(1)
    ).first()
    return None if row is None else (row[0], int(row[1]))


def record_judge_changes(
    session: Session, *, settle: timedelta, now: datetime | None = None
) -> int:
    """Read finished verdicts past the watermark, in (finished_at, id) order and batches,
    and record an event for every run that follows another judge's on its router; returns
    how many events are new. Safe to repeat: events are unique per (kind, dedup key), and
    a crash before a batch's commit repeats that batch with the same result.

    The watermark is global (one scan of new verdicts, on ix_verdict_finished, serves every
    router); each router's row keeps the judge key its current run is in, and the position
    of the batch that last touched it, so the newest row's position is the watermark."""
    settled = (now or utcnow()) - settle
    v, s = VERDICT.c, STATE.c
    after = _watermark(session)
    recorded = 0
    while True:
        query = select(
            v.id, v.router, v.judge_key, v.judge_model, v.prompt_hash, v.ts, v.finished_at
        ).where(
            v.status == VerdictStatus.DONE,
            v.finished_at.is_not(None),
            v.finished_at <= settled,
        )
        if after is not None:
            query = query.where(
                or_(v.finished_at > after[0], and_(v.finished_at == after[0], v.id > after[1]))
            )
        rows = list(session.execute(query.order_by(v.finished_at, v.id).limit(BATCH)))
        if not rows:
            return recorded
        by_router: dict[str, list[Row[Any]]] = {}
        for row in rows:
            by_router.setdefault(row.router, []).append(row)
        current: dict[str, str] = {
            str(router): str(key)
            for router, key in session.execute(
                select(s.router, s.judge_key).where(s.router.in_(sorted(by_router)))
            )
        }
        after = (rows[-1].finished_at, int(rows[-1].id))
        for router, verdicts in sorted(by_router.items()):
            for previous, run in _runs(verdicts, current.get(router)):
                if previous is not None:
                    recorded += int(_record(session, router, previous, run))
            values = {
                "last_finished_at": after[0],
                "last_verdict_id": after[1],
                "judge_key": verdicts[-1].judge_key,
                "updated_at": utcnow(),
            }
            session.execute(
                dialect_insert(session)(STATE)
                .values(router=router, **values)
                .on_conflict_do_update(index_elements=["router"], set_=values)
            )
        session.commit()
        if len(rows) < BATCH:
            return recorded
