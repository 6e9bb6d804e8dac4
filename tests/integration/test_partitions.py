"""PostgreSQL's decision log in day partitions (migration 0023): the conversion of a populated
database both ways, dedup across partitions, the partition job and retention by partition."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic import command
from shadoweval.jobs import scheduler
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from shadoweval import retention
from shadoweval.config import Settings
from shadoweval.db import alembic_config, create_db_engine, upgrade_database
from shadoweval.ingest import partitions
from shadoweval.ingest import service as ingest_service
from shadoweval.ingest.parsing import ParsedBody
from tests.conftest import decision

pytestmark = pytest.mark.postgresql

BEFORE = "0022_sampling_threshold_band"


@pytest.fixture
def settings(tmp_path: Path, postgres_database_factory: object) -> Settings:
    url = postgres_database_factory()  # type: ignore[operator]
    return Settings(
        data_dir=tmp_path,
        database_url=url,
        plan_refresh_seconds=0,
        sampling_mode="at_ingest",
        store_payloads="all",
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(settings)
    yield engine
    engine.dispose()


def store(engine: Engine, settings: Settings, items: list[dict[str, object]]) -> dict[str, str]:
    """Ingest items; returns each request id's status."""
    with Session(engine) as session:
        outcome = ingest_service.ingest_decisions(
            session=session, settings=settings, parsed=ParsedBody(items=items)
        )
    return {str(r.request_id): r.status for r in outcome.results}


def scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def insert_old_decision(connection: Connection, request_id: str, ts: str) -> int:
    """A decision row as a database before 0023 holds it (no decision_key yet)."""
    return int(
        connection.execute(
            text(
                "INSERT INTO decision (router, request_id, ts, received_at, tier, chosen_model, "
                "served_model, failover, fallback, candidates, score_semantics, segment, "
                "segment_value, features, extra, has_request, has_response, "
                "inclusion_probability, sampled, payload_stored, payload_redacted) VALUES "
                "('support-router', :rid, :ts, :ts, 'cheap', 'm', 'm', false, false, '[]', "
                "'p_strong_needed', '{}', 'all', '{}', '{}', true, true, 1.0, true, true, false) "
                "RETURNING id"
            ),
            {"rid": request_id, "ts": ts},
        ).scalar_one()
    )


def add_shadow_run(connection: Connection, decision_id: int, status: str) -> None:
    connection.execute(
        text(
            "INSERT INTO shadow_run (decision_id, kind, direction, routed_tier, target_tier, "
            "target_model, ts, status, attempts, next_attempt_at, created_at, cost_usd, "
            "simulated) SELECT id, 'shadow', 'forward', 'cheap', 'strong', 'big', ts, :status, "
            "0, now(), now(), 0.01, true FROM decision WHERE id = :id"
        ),
        {"id": decision_id, "status": status},
    )


def counts(engine: Engine) -> dict[str, object]:
    return {
        table: scalar(engine, f"SELECT count(*) FROM {table}")
        for table in ("decision", "decision_payload", "shadow_run", "session_turn")
    }


def test_a_populated_log_converts_both_ways_keeping_ids_and_dedup(
    engine: Engine, settings: Settings
) -> None:
    upgrade_database(settings, BEFORE)
    days = ("2026-10-01T08:00:00Z", "2026-11-20T12:00:00Z", "2026-11-20T23:59:59Z")
    with engine.begin() as connection:
        ids = [insert_old_decision(connection, f"old-{n}", ts) for n, ts in enumerate(days)]
        for decision_id in ids:
            connection.execute(
                text(
                    "INSERT INTO decision_payload (decision_id, request, stored_at) "
                    "VALUES (:id, '{}', now())"
                ),
                {"id": decision_id},
            )
        add_shadow_run(connection, ids[0], "succeeded")
        connection.execute(
            text(
                "INSERT INTO session_turn SELECT id, router, 's', ts, 'all', 'm', 'cheap', "
                "1, 1, 0, 0, false, false FROM decision"
            )
        )
    before = counts(engine)

    upgrade_database(settings)

    assert scalar(engine, "SELECT relkind FROM pg_class WHERE relname = 'decision'") == "p"
    with engine.connect() as connection:
        names = [name for name, _ in partitions.day_partitions(connection)]
    assert {"decision_d20261001", "decision_d20261120"} <= set(names)
    assert counts(engine) == before
    assert rows(engine, "SELECT id FROM decision ORDER BY id") == [(i,) for i in ids]
    assert scalar(engine, "SELECT count(*) FROM decision_d20261120") == 2
    assert rows(engine, "SELECT decision_id FROM decision_key ORDER BY decision_id") == [
        (i,) for i in ids
    ]
    # A resend of a converted decision, with another ts (another partition), is a duplicate;
    # a new decision takes an id past the converted ones.
    statuses = store(
        engine,
        settings,
        [decision("old-0", ts="2026-11-21T00:00:00Z"), decision("new", ts="2026-11-21T00:00:00Z")],
    )
    assert statuses == {"old-0": "duplicate", "new": "stored"}
    new_id = scalar(engine, "SELECT id FROM decision WHERE request_id = 'new'")
    assert isinstance(new_id, int)
    assert new_id > max(ids)

    command.downgrade(alembic_config(settings.resolved_database_url), BEFORE)

    assert scalar(engine, "SELECT relkind FROM pg_class WHERE relname = 'decision'") == "r"
    assert scalar(engine, "SELECT to_regclass('decision_key')") is None
    assert rows(engine, "SELECT id FROM decision ORDER BY id") == [(i,) for i in (*ids, new_id)]
    assert scalar(engine, "SELECT count(*) FROM decision_payload") == 4
    foreign_keys = "SELECT count(*) FROM pg_constraint WHERE confrelid = 'decision'::regclass"
    assert scalar(engine, foreign_keys) == 5
    with pytest.raises(IntegrityError), engine.begin() as connection:
        insert_old_decision(connection, "old-1", "2026-12-01T00:00:00Z")

    upgrade_database(settings)
    assert scalar(engine, "SELECT count(*) FROM decision_key") == 4


def test_days_past_retention_are_dropped_unless_open_work_holds_them(
    engine: Engine, settings: Settings
) -> None:
    upgrade_database(settings)
    with engine.begin() as connection:
        for day in (date(2026, 10, 1), date(2026, 10, 2), date(2026, 11, 20)):
            partitions.create_day(connection, day)
    store(
        engine,
        settings,
        [
            decision("a-1", ts="2026-10-01T10:00:00Z"),
            decision("a-2", ts="2026-10-01T11:00:00Z"),
            decision("b-1", ts="2026-10-02T10:00:00Z"),
            decision("recent", ts="2026-11-20T10:00:00Z"),
        ],
    )
    b_id = int(str(scalar(engine, "SELECT id FROM decision WHERE request_id = 'b-1'")))
    with engine.begin() as connection:
        add_shadow_run(connection, b_id, "queued")
    traffic = scalar(engine, "SELECT sum(decisions) FROM traffic_delta")

    drop = retention.drop_expired_days(engine, retention_days=30, skew_seconds=300)

    # The watermark is 2026-11-20: 10-01 is past 30 days and goes; 10-02 waits for its
    # queued shadow run; the recent day is kept.
    assert drop.dropped == ["decision_d20261001"]
    assert drop.waiting == ["decision_d20261002"]
    assert scalar(engine, "SELECT to_regclass('decision_d20261001')") is None
    assert rows(engine, "SELECT request_id FROM decision ORDER BY request_id") == [
        ("b-1",),
        ("recent",),
    ]
    assert scalar(engine, "SELECT count(*) FROM decision_payload") == 2
    assert scalar(engine, "SELECT count(*) FROM decision_key") == 2
    # Counts survive the raw rows.
    assert scalar(engine, "SELECT sum(decisions) FROM traffic_delta") == traffic
    # Once dropped, a key is free: the resend is stored again (in the default partition).
    assert store(engine, settings, [decision("a-1", ts="2026-10-01T10:00:00Z")]) == {
        "a-1": "stored"
    }
    assert store(engine, settings, [decision("b-1", ts="2026-11-20T10:00:00Z")]) == {
        "b-1": "duplicate"
    }

    with engine.begin() as connection:
        connection.execute(text("UPDATE shadow_run SET status = 'succeeded'"))
    drop = retention.drop_expired_days(engine, retention_days=30, skew_seconds=300)
    assert drop.dropped == ["decision_d20261002"]
    assert drop.default_rows == 1  # the resent a-1, older than retention, row by row
    assert rows(engine, "SELECT request_id FROM decision") == [("recent",)]
    assert scalar(engine, "SELECT count(*) FROM shadow_run") == 1  # its costs survive
    assert rows(engine, "SELECT request_id FROM decision_key") == [("recent",)]


def test_a_drop_behind_a_long_read_waits_for_the_next_pass(
    engine: Engine, settings: Settings
) -> None:
    upgrade_database(settings)
    with engine.begin() as connection:
        partitions.create_day(connection, date(2026, 10, 1))
    store(
        engine,
        settings,
        [decision("old", ts="2026-10-01T10:00:00Z"), decision("new", ts="2026-11-20T10:00:00Z")],
    )
    with engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM decision"))  # holds its lock until commit
        started = time.monotonic()
        drop = retention.drop_expired_days(engine, retention_days=30, skew_seconds=300)
        waited = time.monotonic() - started
        reader.commit()
    assert drop.waiting == ["decision_d20261001"]
    assert waited < 5  # lock_timeout 1 s, not the reader's whole transaction
    assert scalar(engine, "SELECT count(*) FROM decision") == 2
    drop = retention.drop_expired_days(engine, retention_days=30, skew_seconds=300)
    assert drop.dropped == ["decision_d20261001"]


def test_the_partition_job_creates_days_ahead_idempotently(
    engine: Engine, settings: Settings
) -> None:
    upgrade_database(settings)
    created = partitions.create_days_ahead(engine, today=date(2027, 3, 1), days=7)
    assert created == [f"decision_d202703{day:02d}" for day in range(1, 9)]
    assert partitions.create_days_ahead(engine, today=date(2027, 3, 1), days=7) == []
    # A row stamped ahead of the created days sits in the default partition: PostgreSQL
    # refuses that day's partition, and the job creates the others.
    store(engine, settings, [decision("ahead", ts="2027-04-03T10:00:00Z")])
    created = partitions.create_days_ahead(engine, today=date(2027, 4, 1), days=3)
    assert created == ["decision_d20270401", "decision_d20270402", "decision_d20270404"]
    assert scalar(engine, "SELECT count(*) FROM decision_default") == 1
    jobs = {job.name: job for job in scheduler.PERIODIC_JOBS}
    assert jobs["create_partitions"].leader_only
    assert jobs["drop_expired_days"].leader_only


def test_deleting_a_decision_frees_its_key_and_what_went_with_it(
    engine: Engine, settings: Settings
) -> None:
    upgrade_database(settings)
    store(engine, settings, [decision("gone"), decision("kept")])
    with Session(engine) as session:
        deleted = retention.delete_decisions(session=session, request_id="gone", router=None)
    assert (deleted.decisions, deleted.payloads) == (1, 1)
    assert rows(
        engine, "SELECT request_id FROM decision_payload p JOIN decision d ON d.id = p.decision_id"
    ) == [("kept",)]
    assert rows(engine, "SELECT request_id FROM decision_key") == [("kept",)]
    assert store(engine, settings, [decision("gone"), decision("kept")]) == {
        "gone": "stored",
        "kept": "duplicate",
    }


def test_nothing_is_partitioned_on_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'p.db'}")
    upgrade_database(settings)
    engine = create_db_engine(settings)
    try:
        assert partitions.create_days_ahead(engine, today=datetime.now(UTC).date()) == []
        drop = retention.drop_expired_days(engine, retention_days=30, skew_seconds=300)
        assert drop == retention.DayDrop()
    finally:
        engine.dispose()
