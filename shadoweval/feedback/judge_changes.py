"""Judge change control: one `judge_changed` event per new judge key (model + prompt hash).

A judge key is new for a router when its first finished verdict comes after another
key's; the router's first key only establishes its judge, like the first models of a
new router. Windows, snapshots and sequential tests are keyed by judge key already,
so the event marks where a router's estimates start over; it never merges them.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlmodel import Session

from shadoweval.events.service import record_event
from shadoweval.judge.models import Verdict, VerdictStatus

VERDICT = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]
JUDGE_CHANGED = "judge_changed"
_DEDUP_KEY_MAX = 300  # event.dedup_key's length


@dataclass(frozen=True)
class JudgeSeen:
    judge_key: str
    judge_model: str
    prompt_hash: str
    first_ts: datetime  # of the decisions it judged
    first_finished_at: datetime  # when it first finished a verdict
    verdicts: int


def judge_event_key(router: str, judge_key: str) -> str:
    key = f"{router}|{judge_key}"
    if len(key) <= _DEDUP_KEY_MAX:
        return key
    # Over-long names still get exactly one event each.
    return f"{router[:200]}|sha256:{hashlib.sha256(judge_key.encode()).hexdigest()}"


def judges_by_router(session: Session) -> dict[str, list[JudgeSeen]]:
    """Each router's judges in the order they started finishing verdicts."""
    rows = session.execute(
        select(
            VERDICT.c.router,
            VERDICT.c.judge_key,
            func.min(VERDICT.c.judge_model),
            func.min(VERDICT.c.prompt_hash),
            func.min(VERDICT.c.ts),
            func.min(VERDICT.c.finished_at),
            func.count(),
        )
        .where(VERDICT.c.status == VerdictStatus.DONE, VERDICT.c.finished_at.is_not(None))
        .group_by(VERDICT.c.router, VERDICT.c.judge_key)
    ).all()
    found: dict[str, list[JudgeSeen]] = {}
    for router, *values in rows:
        found.setdefault(router, []).append(JudgeSeen(*values))
    for judges in found.values():
        # Completion order says which judge was configured when, whatever the decisions' ts.
        judges.sort(key=lambda j: (j.first_finished_at, j.judge_key))
    return found


def record_judge_changes(session: Session) -> int:
    """Record an event for every judge key that followed another on its router; returns
    how many are new. Safe to repeat: events are unique per (kind, dedup key)."""
    recorded = 0
    for router, judges in sorted(judges_by_router(session).items()):
        for previous, current in itertools.pairwise(judges):
            recorded += record_event(
                session,
                kind=JUDGE_CHANGED,
                dedup_key=judge_event_key(router, current.judge_key),
                ts=current.first_ts,
                router=router,
                details={
                    "judge_key": current.judge_key,
                    "judge_model": current.judge_model,
                    "prompt_hash": current.prompt_hash,
                    "previous_judge_key": previous.judge_key,
                    "first_judged_at": current.first_finished_at.isoformat(),
                },
            )
    session.commit()
    return recorded
