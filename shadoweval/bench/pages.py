"""`shadoweval bench pages`: how long each dashboard page takes to render over N decisions.

Loads `decisions` decisions and `verdicts` finished verdicts with `bench analytics`' bulk
loader (one router, 20 segments, 7 decision days; not timed), builds the window snapshots
as the aggregator keeps them, starts one `shadoweval api` process on that database and
renders every dashboard page in Streamlit's AppTest in this process, against that API
(each page once untimed first, as a running dashboard has its modules imported), then:

- cold: the dashboard's API cache emptied first (a viewer opening the page after the
  cache's TTL, or the first one after a restart);
- warm: the same page again right after (a rerun within the TTL: a widget change, or a
  second viewer).

Per page: seconds cold and warm, and the API calls behind each render with their seconds
(the slowest named); a warm render that still calls the API shows it. Goals (issue 18):
every page ≤ 2 s at 1 M decisions, ≤ 1 s warm at the demo's volume. The machine's load
average is recorded: on a shared machine the figures move with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

PAGES = (
    "views/routing.py",
    "views/quality.py",
    "views/calibration.py",
    "views/thresholds.py",
    "views/drift.py",
    "views/judge.py",
    "views/alerts.py",
)
RENDER_TIMEOUT_SECONDS = 600.0
GOAL_SECONDS = 2.0
BULK_STATEMENT_TIMEOUT_SECONDS = 6 * 3600.0


Call = tuple[str, float, str]  # path, seconds, HTTP status or the error that ended it


@contextmanager
def _recorded_calls() -> Iterator[list[Call]]:
    """Every request an httpx client in this process sends meanwhile."""
    calls: list[Call] = []
    send = httpx.Client.send

    def timed(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        outcome = "?"
        try:
            response = send(self, request, **kwargs)
            outcome = str(response.status_code)
            return response
        except httpx.HTTPError as error:
            outcome = type(error).__name__  # e.g. ReadTimeout: the dashboard gave up
            raise
        finally:
            calls.append((request.url.path, time.perf_counter() - started, outcome))

    httpx.Client.send = timed  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        httpx.Client.send = send  # type: ignore[method-assign]


def _call_summary(calls: list[Call]) -> dict[str, Any]:
    """The calls of one render: count, seconds, the slowest, per path, and the failed ones
    (a page shows those figures as unavailable, and the dashboard does not cache them)."""
    by_path: dict[str, list[float]] = {}
    for path, seconds, _ in calls:
        by_path.setdefault(path, []).append(seconds)
    slowest = max(calls, key=lambda call: call[1], default=None)
    return {
        "api_calls": len(calls),
        "api_seconds": round(sum(call[1] for call in calls), 3),
        "slowest_call": {"path": slowest[0], "seconds": round(slowest[1], 3)} if slowest else None,
        "failed_calls": [
            {"path": path, "seconds": round(seconds, 3), "outcome": outcome}
            for path, seconds, outcome in calls
            if not outcome.startswith("2")
        ],
        "by_path": {
            path: {"calls": len(times), "seconds": round(sum(times), 3)}
            for path, times in sorted(by_path.items(), key=lambda item: -sum(item[1]))
        },
    }


def _render(app_file: Path, page: str) -> dict[str, Any]:
    """One page cold, then warm, with the API calls behind each render."""
    import streamlit as st
    from streamlit import logger as streamlit_logger
    from streamlit.testing.v1 import AppTest

    # AppTest runs without a server: Streamlit warns about it on every run.
    streamlit_logger.set_log_level("error")
    st.cache_data.clear()
    app = AppTest.from_file(str(app_file), default_timeout=RENDER_TIMEOUT_SECONDS)
    app.switch_page(page)
    figures: dict[str, Any] = {"page": page}
    for phase in ("cold", "warm"):
        with _recorded_calls() as calls:
            started = time.perf_counter()
            app.run()
            seconds = time.perf_counter() - started
        figures[f"{phase}_seconds"] = round(seconds, 3)
        figures[phase] = _call_summary(calls)
    figures["errors"] = [str(e.value)[:300] for e in app.exception]
    return figures


def _load(
    database_url: str, data_dir: Path, decisions: int, verdicts: int, seed: int, *, bulk: bool
) -> str:
    """Migrate, bulk-load (unless `bulk` is false: a reused database), rebuild the
    snapshots; the dashboard's read key."""
    from shadoweval.analytics import snapshots
    from shadoweval.auth import service as auth_service
    from shadoweval.auth.models import Scope
    from shadoweval.bench import analytics
    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, session_scope, upgrade_database

    settings = Settings(database_url=database_url, data_dir=data_dir)
    upgrade_database(settings)
    # The bulk load and the rebuild are one statement each: no API statement limit on them.
    engine = create_db_engine(settings, statement_timeout_seconds=BULK_STATEMENT_TIMEOUT_SECONDS)
    try:
        if bulk:
            analytics._load(engine, decisions, verdicts, seed)
        snapshots.rebuild_traffic_snapshots(engine)
        while snapshots.aggregate_finished_verdicts(engine, limit=100_000):
            pass
        with session_scope(engine) as session:
            return auth_service.create_key(session=session, scopes=[Scope.READ]).key
    finally:
        engine.dispose()


def _reused_database(
    directory: Path, database_url: str | None, decisions: int, verdicts: int, seed: int
) -> tuple[str, Path, bool]:
    """The database kept in `directory` by an earlier run (URL, data dir, whether it holds
    this run's load): a SQLite file there, or on a PostgreSQL server a database named after
    the directory. A different size or seed, or no marker, means it is loaded again."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from shadoweval.config import Settings

    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "pages-load.json"
    wanted = {"decisions": decisions, "verdicts": verdicts, "seed": seed, "server": database_url}
    loaded = marker.exists() and json.loads(marker.read_text()) == wanted
    if not loaded:
        marker.unlink(missing_ok=True)
    if database_url is None:
        path = directory / "bench.db"
        if not loaded:
            path.unlink(missing_ok=True)
        return f"sqlite:///{path}", directory, loaded
    url = Settings(database_url=database_url).resolved_database_url
    database = (
        "shadoweval_bench_pages_"
        + hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:10]
    )
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
        )
        if not loaded or not exists:
            loaded = False
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    engine.dispose()
    return (
        make_url(url).set(database=database).render_as_string(hide_password=False),
        directory,
        loaded,
    )


def run_pages_bench(
    *,
    decisions: int = 1_000_000,
    verdicts: int = 50_000,
    database_url: str | None = None,
    seed: int = 0,
    pages: tuple[str, ...] = PAGES,
    reuse_database: Path | None = None,
) -> dict[str, Any]:
    """Figures of every page in `pages` over a fresh database of that size (SQLite by
    default; on a PostgreSQL server, a database made and dropped). With `reuse_database`
    (a directory), the database loaded there by an earlier run of the same size is kept
    and used again (migrated, snapshots rebuilt, not reloaded), and kept after this run."""
    import shadoweval.dashboard
    from shadoweval.bench.ingest import _ApiReplicas, _drop_databases, _fresh_database

    app_file = Path(shadoweval.dashboard.__file__).with_name("app.py")
    if reuse_database is None:
        url, data_dir = _fresh_database(database_url, "pages")
        loaded = False
    else:
        url, data_dir, loaded = _reused_database(
            reuse_database, database_url, decisions, verdicts, seed
        )
    names = ("SHADOWEVAL_DASHBOARD_API_URL", "SHADOWEVAL_DASHBOARD_READ_KEY")
    saved = {name: os.environ.get(name) for name in names}
    try:
        started = time.perf_counter()
        read_key = _load(url, data_dir, decisions, verdicts, seed, bulk=not loaded)
        load_seconds = time.perf_counter() - started
        if reuse_database is not None and not loaded:
            (reuse_database / "pages-load.json").write_text(
                json.dumps(
                    {
                        "decisions": decisions,
                        "verdicts": verdicts,
                        "seed": seed,
                        "server": database_url,
                    }
                )
            )
        with _ApiReplicas(url, data_dir, 1) as (api_url,):
            os.environ["SHADOWEVAL_DASHBOARD_API_URL"] = api_url
            os.environ["SHADOWEVAL_DASHBOARD_READ_KEY"] = read_key
            # Untimed, once: a dashboard process imports pandas, Altair and the pages once,
            # not per viewer; "cold" is about the API cache, not the interpreter.
            for page in pages:
                _render(app_file, page)
            rendered = [_render(app_file, page) for page in pages]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if reuse_database is None:
            if database_url is not None:
                _drop_databases(database_url, [url])
            shutil.rmtree(data_dir, ignore_errors=True)
    slowest = max(rendered, key=lambda page: page["cold_seconds"])
    return {
        "benchmark": "pages",
        "database": "postgresql" if database_url else "sqlite",
        "decisions": decisions,
        "verdicts": verdicts,
        "load_seconds_not_timed": round(load_seconds, 1),
        "database_reused": loaded,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pages": rendered,
        "slowest_cold_page": slowest["page"],
        "pages_over_goal_cold": [p["page"] for p in rendered if p["cold_seconds"] > GOAL_SECONDS],
        "goal_seconds": GOAL_SECONDS,
    }


def format_pages_report(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['database']}: {figures['decisions']} decisions, {figures['verdicts']} "
        f"verdicts (loaded in {figures['load_seconds_not_timed']} s, not timed); "
        f"load average {figures['load_average']} at {figures['measured_at']}",
        f"{'page':<22} {'cold s':>7} {'warm s':>7} {'calls':>6} {'API s':>6}  slowest call",
    ]
    for page in figures["pages"]:
        cold = page["cold"]
        slowest = cold["slowest_call"]
        named = f"{slowest['path']} {slowest['seconds']:.2f} s" if slowest else "-"
        lines.append(
            f"{page['page']:<22} {page['cold_seconds']:>7.2f} {page['warm_seconds']:>7.2f} "
            f"{cold['api_calls']:>6} {cold['api_seconds']:>6.2f}  {named}"
            + (f"  ERRORS: {page['errors']}" if page["errors"] else "")
            + "".join(
                f"  FAILED {f['path']} ({f['outcome']} after {f['seconds']:.1f} s)"
                for f in cold["failed_calls"]
            )
            + (f"  (warm: {page['warm']['api_calls']} calls)" if page["warm"]["api_calls"] else "")
        )
    over = figures["pages_over_goal_cold"]
    lines.append(f"over {figures['goal_seconds']} s cold: {', '.join(over) if over else 'none'}")
    return "\n".join(lines)
