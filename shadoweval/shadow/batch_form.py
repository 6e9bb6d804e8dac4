"""Batch mode, step 1: gather held items into a `submitting` batch row, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from shadoweval.config import Settings
from shadoweval.judge.models import VerdictStatus
from shadoweval.shadow.batch_rows import (
    BATCH_TABLE,
    RUN_TABLE,
    VERDICT_TABLE,
    batch_owner,
    item_table,
)
from shadoweval.shadow.batch_values import judge_items, shadow_items
from shadoweval.shadow.models import BATCH_HOLD, BatchKind, BatchState, ShadowMode, WorkStatus
from shadoweval.sql import dialect_of


@dataclass
class HeldGroup:
    kind: str
    model: str
    count: int
    oldest: datetime


def held_groups(engine: Engine, settings: Settings) -> list[HeldGroup]:
    """Items waiting for a batch, per (kind, model)."""
    held_run = (RUN_TABLE.c.status == WorkStatus.QUEUED) & (
        RUN_TABLE.c.next_attempt_at == BATCH_HOLD
    )
    held_verdict = (VERDICT_TABLE.c.status == VerdictStatus.QUEUED) & (
        VERDICT_TABLE.c.next_attempt_at == BATCH_HOLD
    )
    with engine.connect() as connection:
        runs = connection.execute(
            select(RUN_TABLE.c.target_model, func.count(), func.min(RUN_TABLE.c.created_at))
            .where(held_run)
            .group_by(RUN_TABLE.c.target_model)
        ).all()
        verdicts = connection.execute(
            select(func.count(), func.min(VERDICT_TABLE.c.created_at)).where(held_verdict)
        ).one()
    groups = [HeldGroup(BatchKind.SHADOW, str(m), int(n), oldest) for m, n, oldest in runs]
    if verdicts[0]:
        groups.append(
            HeldGroup(BatchKind.JUDGE, settings.judge_model, int(verdicts[0]), verdicts[1])
        )
    return groups


def _held_condition(table: Table, kind: str, model: str) -> Any:
    condition = (table.c.status == WorkStatus.QUEUED) & (table.c.next_attempt_at == BATCH_HOLD)
    if kind == BatchKind.SHADOW:
        condition = condition & (table.c.target_model == model)
    return condition


def release_to_realtime(engine: Engine, kind: str, model: str, now: datetime) -> int:
    """Hand held items to the realtime lanes (their provider has no batch API)."""
    table = item_table(kind)
    values: dict[str, Any] = {"next_attempt_at": now}
    if kind == BatchKind.SHADOW:
        values["mode"] = ShadowMode.REALTIME
    with engine.begin() as connection:
        result = connection.execute(
            update(table).where(_held_condition(table, kind, model)).values(**values)
        )
        return int(result.rowcount)


class _NothingHeld(Exception):
    pass


def form_batch(
    engine: Engine,
    *,
    kind: str,
    provider: str,
    model: str,
    limit: int,
    owner: str,
    lease_seconds: float,
    now: datetime,
) -> int | None:
    """Commit a `submitting` batch row holding up to `limit` held items; its id, or None
    when another worker took them first."""
    tag = f"se-{uuid.uuid4().hex[:20]}"
    table = item_table(kind)
    try:
        with engine.begin() as connection:
            batch_id = connection.execute(
                insert(BATCH_TABLE)
                .values(
                    tag=tag,
                    provider=provider,
                    kind=kind,
                    model=model,
                    state=BatchState.SUBMITTING,
                    items=[],
                    item_count=0,
                    attempts=0,
                    lease_owner=owner,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    next_check_at=now,
                    created_at=now,
                    cost_usd=0.0,
                )
                .returning(BATCH_TABLE.c.id)
            ).scalar_one()
            candidates = (
                select(table.c.id)
                .where(_held_condition(table, kind, model))
                .order_by(table.c.id)
                .limit(limit)
            )
            candidates = dialect_of(connection).claim(candidates)
            values: dict[str, Any] = {
                "status": WorkStatus.RUNNING,
                "lease_owner": batch_owner(tag),
                "lease_until": BATCH_HOLD,
                "attempts": table.c.attempts + 1,
            }
            if kind == BatchKind.SHADOW:
                values["batch_id"] = batch_id
            ids = sorted(
                row[0]
                for row in connection.execute(
                    update(table)
                    .where(table.c.id.in_(candidates.scalar_subquery()))
                    .values(**values)
                    .returning(table.c.id)
                )
            )
            if not ids:
                raise _NothingHeld
            items = _items(connection, kind, tag, ids)
            connection.execute(
                update(BATCH_TABLE)
                .where(BATCH_TABLE.c.id == batch_id)
                .values(items=items, item_count=len(items))
            )
    except _NothingHeld:
        return None
    return int(batch_id)


def _items(connection: Connection, kind: str, tag: str, ids: list[int]) -> list[dict[str, Any]]:
    if kind == BatchKind.SHADOW:
        return shadow_items(tag, ids)
    rows = connection.execute(
        select(
            VERDICT_TABLE.c.id,
            VERDICT_TABLE.c.order_cheaper_first,
            VERDICT_TABLE.c.order_stronger_first,
        ).where(VERDICT_TABLE.c.id.in_(ids))
    )
    return judge_items(tag, [(int(r[0]), r[1], r[2]) for r in rows])
