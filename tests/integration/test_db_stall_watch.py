"""The stall watchdog breaks a silent server, never a busy one that keeps answering.

One psycopg `wait` can cover a whole pipeline (executemany); under load such a call
outlasts the per-statement limit although every statement is answered in time. Breaking
it turned a slow, healthy PostgreSQL into a run of 503s (concurrent resends in CI).
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from shadoweval.config import Settings
from shadoweval.db import create_db_engine
from tests.conftest import POSTGRES_ADMIN_URL, _require_postgres

pytestmark = pytest.mark.postgresql

LIMIT_S = 1.0


def test_a_pipeline_longer_than_the_limit_whose_statements_answer_in_time_survives(
    tmp_path: object,
) -> None:
    _require_postgres()
    url = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=False)
    engine = create_db_engine(
        Settings(data_dir=tmp_path, database_url=url, db_statement_timeout_seconds=LIMIT_S)
    )
    try:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            # 5 × 0.4 s = 2 s in one wait, each statement well inside the 1 s limit.
            cursor.executemany("SELECT pg_sleep(%s)", [(0.4,)] * 5)
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        finally:
            connection.close()
    finally:
        engine.dispose()


def test_a_statement_that_outlasts_the_limit_is_still_stopped(tmp_path: object) -> None:
    _require_postgres()
    url = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=False)
    engine = create_db_engine(
        Settings(data_dir=tmp_path, database_url=url, db_statement_timeout_seconds=LIMIT_S)
    )
    try:
        connection = engine.raw_connection()
        try:
            with pytest.raises(Exception, match=r"statement timeout|canceling statement"):
                connection.cursor().execute("SELECT pg_sleep(3)")
        finally:
            connection.close()
    finally:
        engine.dispose()
