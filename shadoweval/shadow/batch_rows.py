"""Batch mode's shared vocabulary: the batch row as a typed value, its tables, and the
lease-guarded reads and writes of `provider_batch` rows every step uses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.engine import Connection, Engine

from shadoweval.judge.models import Verdict
from shadoweval.providers.base import BatchProvider, Provider, as_batch_provider
from shadoweval.runtime import leases
from shadoweval.shadow.models import BatchKind, ProviderBatch, ShadowRun
from shadoweval.sql import table_of

BATCH_TABLE = table_of(ProviderBatch)
RUN_TABLE = table_of(ShadowRun)
VERDICT_TABLE = table_of(Verdict)
ORDER_CODES = {"order_cheaper_first": "c", "order_stronger_first": "s"}
# Batches created this long before their row (clock skew between us and the provider)
# still count when a `submitting` row is reconciled.
RECONCILE_SKEW = timedelta(minutes=10)

ProviderForModel = Callable[[str], Provider]


@dataclass(frozen=True)
class BatchRow:
    """One `provider_batch` row as read at the start of a step. Items stay JSON objects
    (`custom_id`, `item_id`, and for judge items `order` and the judge they were sent to),
    as stored."""

    id: int
    tag: str
    provider: str
    kind: str
    model: str
    state: str
    provider_batch_id: str | None
    provider_status: str | None
    items: tuple[dict[str, Any], ...]
    item_count: int
    attempts: int
    lease_owner: str | None
    created_at: datetime
    rejected_provider_ids: tuple[str, ...]

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> BatchRow:
        return cls(
            id=int(row["id"]),
            tag=str(row["tag"]),
            provider=str(row["provider"]),
            kind=str(row["kind"]),
            model=str(row["model"]),
            state=str(row["state"]),
            provider_batch_id=row["provider_batch_id"],
            provider_status=row["provider_status"],
            items=tuple(row["items"] or ()),
            item_count=int(row["item_count"]),
            attempts=int(row["attempts"]),
            lease_owner=row["lease_owner"],
            created_at=row["created_at"],
            rejected_provider_ids=tuple(row["rejected_provider_ids"] or ()),
        )

    @property
    def submitted_id(self) -> str:
        """The provider's id of a batch past `submitting` (polled, collected, unadopted)."""
        if self.provider_batch_id is None:
            raise ValueError(f"batch {self.tag} ({self.state}) has no provider batch id")
        return self.provider_batch_id


def batch_owner(tag: str) -> str:
    """The lease owner of the items inside the batch `tag`."""
    return f"batch:{tag}"


def item_table(kind: str) -> Table:
    return RUN_TABLE if kind == BatchKind.SHADOW else VERDICT_TABLE


def batch_provider(provider_for_model: ProviderForModel, model: str) -> BatchProvider | None:
    return as_batch_provider(provider_for_model(model))


def claim_batches(
    engine: Engine, *, state: str, owner: str, lease_seconds: float, now: datetime, limit: int
) -> list[int]:
    """Claim due batch rows in `state` whose lease is free or expired (committed)."""
    columns = BATCH_TABLE.c
    return leases.claim_rows(
        engine,
        BATCH_TABLE,
        where=and_(
            columns.state == state,
            columns.next_check_at <= now,
            or_(columns.lease_until.is_(None), columns.lease_until < now),
        ),
        order_by=(columns.next_check_at, columns.id),
        limit=limit,
        values={"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_seconds)},
    )


def load_batch(engine: Engine, batch_id: int) -> BatchRow:
    with engine.connect() as connection:
        row = connection.execute(select(BATCH_TABLE).where(BATCH_TABLE.c.id == batch_id)).one()
    return BatchRow.from_mapping(row._mapping)


def update_batch(engine: Engine, batch_id: int, owner: str, values: Mapping[str, Any]) -> bool:
    """Write to a batch row this worker still holds."""
    with engine.begin() as connection:
        return update_batch_in(connection, batch_id, owner, values)


def update_batch_in(
    connection: Connection, batch_id: int, owner: str, values: Mapping[str, Any]
) -> bool:
    result = connection.execute(
        update(BATCH_TABLE)
        .where(BATCH_TABLE.c.id == batch_id, BATCH_TABLE.c.lease_owner == owner)
        .values(**values)
    )
    return bool(result.rowcount == 1)
