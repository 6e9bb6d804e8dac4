"""Judge calls are charged from their own tokens (cache writes included) at the prices they
must be charged at: a gate run's recorded prices, whatever the worker's table says; and
migration 0021 marks orders stored before cache writes were recorded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import MetaData, Table, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.db import alembic_config, create_db_engine
from shadoweval.gate import service as gate_service
from shadoweval.gate.models import GateCreate, GateItem, GateItemStatus
from shadoweval.judge.models import OrderResult
from shadoweval.judge.pricing import order_cost_usd
from shadoweval.providers.pricing import ModelPrice
from shadoweval.testing.fake_provider import FakeProviderServer, running_fake_provider
from tests.conftest import make_empty_database_url
from tests.integration.pipeline.conftest import CHEAP, pipeline_settings
from tests.integration.test_gate import CANDIDATE, ROUTER, seed_decisions, worker_passes

# An Anthropic judge: the fake reports a cache write the first time it sees its system prompt.
JUDGE = "claude-sonnet-4-5"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderServer]:
    with running_fake_provider() as server:
        yield server


def test_gate_judge_calls_are_charged_at_the_run_prices_with_cache_writes(
    engine: Engine, base_settings: Settings, fake: FakeProviderServer
) -> None:
    fake.reset()
    settings = pipeline_settings(
        base_settings,
        fake,
        judge_model=JUDGE,
        sampling_rate_by_tier={"cheap": 0.0, "strong": 0.0},
        sampling_default_rate=0.0,
    )
    seed_decisions(engine, settings, per_segment=2)
    with Session(engine, expire_on_commit=False) as session:
        run = gate_service.create_gate(
            session=session,
            settings=settings,
            spec=GateCreate(
                router=ROUTER, candidate=CANDIDATE, replace=CHEAP, sample=6, max_drop=0.5
            ),
            knows_model=lambda model: True,
        )
    assert run.id is not None
    assert run.judge is not None
    recorded = ModelPrice(**run.judge["prices"][JUDGE])
    # The worker's table charges the judge $1 a token of every kind.
    dear = {"input": 1e6, "output": 1e6, "cache_read": 1e6, "cache_write": 1e6}
    worker_passes(engine, settings.model_copy(update={"pricing_overrides": {JUDGE: dear}}), run.id)

    with Session(engine) as session:
        items = list(session.scalars(select(GateItem).where(GateItem.gate_run_id == run.id)))
    assert [item.status for item in items] == [GateItemStatus.DONE] * 6
    orders = [
        OrderResult.model_validate(order)
        for item in items
        for order in (item.order_candidate_first, item.order_replaced_first)
    ]
    writes = sum(order.cache_write_tokens or 0 for order in orders)
    assert writes > 0  # the judge's system prompt was written to the cache, and recorded
    for item in items:
        expected = 0.0
        for stored in (item.order_candidate_first, item.order_replaced_first):
            order = OrderResult.model_validate(stored)
            assert order.cache_write_tokens is not None
            expected += recorded.cost_usd(
                order.input_tokens,
                order.output_tokens,
                order.cache_read_tokens,
                order.cache_write_tokens,
            )
            assert order.cost_usd == pytest.approx(
                recorded.cost_usd(
                    order.input_tokens,
                    order.output_tokens,
                    order.cache_read_tokens,
                    order.cache_write_tokens,
                )
            )
        assert item.judge_cost_usd == pytest.approx(expected)
        assert 0 < item.judge_cost_usd < 1.0  # the worker's table would charge dollars


def test_an_order_without_recorded_cache_writes_keeps_its_charged_cost() -> None:
    price = ModelPrice(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    tokens = {"input_tokens": 1000, "output_tokens": 200, "cache_read_tokens": 0}
    legacy = OrderResult(**tokens, cache_write_tokens=None, cost_usd=0.123)
    assert order_cost_usd(legacy, price) == 0.123
    recorded = OrderResult(**tokens, cache_write_tokens=4000, cost_usd=0.123)
    assert order_cost_usd(recorded, price) == pytest.approx((3000 + 3000 + 15000) / 1e6)
    assert order_cost_usd(recorded, price, batch=True) == pytest.approx(21000 / 2e6)


def _row(table: Table, **values: Any) -> dict[str, Any]:
    """`values`, and a placeholder for every other NOT NULL column without a default."""
    row = dict(values)
    for column in table.columns:
        if column.name in row or column.nullable or column.server_default is not None:
            continue
        if column.primary_key:
            continue
        python_type = column.type.python_type
        if python_type is bool:
            row[column.name] = False
        elif python_type in (int, float):
            row[column.name] = 0
        elif python_type is datetime:
            row[column.name] = datetime(2026, 11, 27, 12, tzinfo=UTC)
        else:
            row[column.name] = "x"
    return row


def test_migration_0021_marks_orders_stored_before_it(
    backend: str, tmp_path: Path, postgres_database_factory: object
) -> None:
    url = make_empty_database_url(backend, tmp_path, postgres_database_factory)
    engine = create_db_engine(Settings(data_dir=tmp_path, database_url=url))
    config = alembic_config(url)
    command.upgrade(config, "0020_review_label_queue")
    tables = MetaData()
    tables.reflect(engine, only=["decision", "verdict"])
    decision, verdict = tables.tables["decision"], tables.tables["verdict"]
    old_order = {"winner": "A", "input_tokens": 10, "cache_read_tokens": 0, "cost_usd": 0.5}
    with engine.begin() as connection:
        decision_id = connection.execute(
            insert(decision).values(_row(decision, request_id="r", router="r"))
        ).inserted_primary_key[0]
        connection.execute(
            insert(verdict).values(
                _row(
                    verdict,
                    decision_id=decision_id,
                    order_cheaper_first=old_order,
                    order_stronger_first=None,
                )
            )
        )
    orders = select(verdict.c.order_cheaper_first, verdict.c.order_stronger_first)

    command.upgrade(config, "0021_judge_order_cache_tokens")
    with engine.connect() as connection:
        marked, untouched = connection.execute(orders).one()
    assert marked == {**old_order, "cache_write_tokens": None}
    assert untouched is None
    assert OrderResult.model_validate(marked).cache_write_tokens is None

    command.downgrade(config, "0020_review_label_queue")
    with engine.connect() as connection:
        assert connection.execute(orders).one()[0] == old_order
    engine.dispose()
