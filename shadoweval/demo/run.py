"""`shadoweval demo`: API, worker, dashboard, alert receiver and router traffic in one command.

The API runs in this process (so Ctrl-C is uvicorn's graceful shutdown); the
worker and the dashboard are child processes configured through the same
`SHADOWEVAL_*` environment; the traffic generator, the alert receiver and a
watcher that prints new events and received alerts are threads. Everything
runs on the embedded SQLite file unless SHADOWEVAL_DATABASE_URL says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from shadoweval.config import Settings
from shadoweval.demo import receiver
from shadoweval.demo.traffic import CompressedClock, Scenario, TrafficGenerator, run_traffic

# Demo tuning for the simulated provider, applied only where the user set nothing:
# everything cheap-routed is shadowed and the budget never binds, so labels arrive
# within seconds; the jobs poll often. The statistics and their thresholds keep
# their production defaults: the alarm is the one production would raise.
SIMULATED_DEFAULTS = {
    "SHADOWEVAL_USE_SIMULATED_PROVIDER": "true",
    "SHADOWEVAL_SAMPLING_RATE_BY_TIER": json.dumps({"cheap": 1.0, "strong": 0.3}),
    "SHADOWEVAL_DAILY_SHADOW_BUDGET_USD": "100000",
    "SHADOWEVAL_AGGREGATE_INTERVAL_SECONDS": "3",
    "SHADOWEVAL_ALERT_EVALUATE_INTERVAL_SECONDS": "10",
    # Sampling periods of 5 decision minutes (25 wall seconds at --speed 12), labels of
    # decisions 10 decision minutes old feed the plan: the production rule, on the demo's clock.
    "SHADOWEVAL_SAMPLING_PERIOD_MINUTES": "5",
    "SHADOWEVAL_SAMPLING_CLOSE_LATENESS_SECONDS": "60",
    "SHADOWEVAL_SAMPLING_LABEL_LAG_MINUTES": "10",
    "SHADOWEVAL_SAMPLING_IDLE_CLOSE_SECONDS": "20",
    "SHADOWEVAL_PLANNER_INTERVAL_SECONDS": "3",
    "SHADOWEVAL_ENQUEUE_INTERVAL_SECONDS": "2",
    "SHADOWEVAL_WORKER_POLL_SECONDS": "1",
    "SHADOWEVAL_MODEL_WATCH_INTERVAL_SECONDS": "5",
    "SHADOWEVAL_MODEL_WATCH_SETTLE_SECONDS": "2",
}


@dataclass(frozen=True)
class DemoOptions:
    port: int = 8000
    dashboard_port: int = 8501
    speed: float = 12.0
    rate: float = 4.0
    real: bool = False
    traffic: bool = True
    dashboard: bool = True
    reset: bool = False
    scenario: Scenario = field(default_factory=Scenario)


# What a demo run leaves under the data dir: the embedded database with SQLite's side files
# and the ingest lock (db.py), the alert receiver's log and the children's logs.
DATABASE_FILE = "shadoweval.db"
DATABASE_SIDE_SUFFIXES = ("", "-wal", "-shm", "-journal", "-ingest.lock")
RECEIVED_ALERTS_FILE = "alerts-received.jsonl"
LOGS_DIR = "logs"


def embedded_database(settings: Settings) -> Path | None:
    """The SQLite file under the data dir the settings point at, or None when
    SHADOWEVAL_DATABASE_URL names any other database."""
    embedded = settings.data_dir / DATABASE_FILE
    if settings.database_url is None:
        return embedded
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return embedded if Path(url.database).resolve() == embedded.resolve() else None


def reset_state(settings: Settings) -> list[Path]:
    """Delete what earlier demo runs left under the data dir; the paths removed.

    Refuses (ValueError) unless the database is the embedded SQLite file: a reset must
    never reach a database the demo did not create."""
    database = embedded_database(settings)
    if database is None:
        shown = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        raise ValueError(
            f"--reset deletes only the demo's embedded SQLite database under "
            f"{settings.data_dir}, and SHADOWEVAL_DATABASE_URL points at {shown}; unset it "
            "(or drop that database yourself) to start clean"
        )
    removed: list[Path] = []
    for suffix in DATABASE_SIDE_SUFFIXES:
        path = database.with_name(database.name + suffix)
        if path.is_file():
            path.unlink()
            removed.append(path)
    received = settings.data_dir / RECEIVED_ALERTS_FILE
    if received.is_file():
        received.unlink()
        removed.append(received)
    logs = settings.data_dir / LOGS_DIR
    if logs.is_dir():
        shutil.rmtree(logs)
        removed.append(logs)
    return removed


def earlier_run_notice(settings: Settings, decisions: int) -> str | None:
    """One line when the database already holds decisions: new traffic joins them."""
    if decisions == 0:
        return None
    how = (
        "start clean with `shadoweval demo --reset`"
        if embedded_database(settings) is not None
        else "point SHADOWEVAL_DATABASE_URL at an empty database to start clean"
    )
    return (
        f"[demo] the database already holds {decisions} decisions from earlier runs; "
        f"new traffic joins them ({how})."
    )


def _environment(options: DemoOptions, receiver_url: str | None, secret: str) -> None:
    if options.real:
        if not (
            os.environ.get("SHADOWEVAL_ANTHROPIC_API_KEY")
            or os.environ.get("SHADOWEVAL_OPENAI_API_KEY")
        ):
            raise ValueError(
                "--real needs SHADOWEVAL_ANTHROPIC_API_KEY or SHADOWEVAL_OPENAI_API_KEY "
                "(and spends money); without it the demo uses the simulated provider"
            )
    else:
        for name, value in SIMULATED_DEFAULTS.items():
            os.environ.setdefault(name, value)
    if receiver_url is not None:
        os.environ.setdefault("SHADOWEVAL_ALERT_WEBHOOK_URL", f"{receiver_url}/alerts")
        os.environ.setdefault("SHADOWEVAL_ALERT_WEBHOOK_SECRET", secret)
        os.environ.setdefault("SHADOWEVAL_RETRAIN_WEBHOOK_URL", f"{receiver_url}/retrain")


def free_port(host: str, preferred: int) -> int:
    """`preferred` when it is free, else (or when 0) a free port the OS picks."""
    with socket.socket() as probe:
        try:
            probe.bind((host, preferred))
        except OSError:
            probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _child(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    out = log_path.open("ab")
    try:
        return subprocess.Popen(  # noqa: S603 (our own CLI, fixed arguments)
            [sys.executable, "-m", "shadoweval", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    finally:
        out.close()


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, stop: threading.Event, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.2)
    return False


def _watch(
    url: str,
    read_key: str,
    log_path: Path | None,
    stop: threading.Event,
    say: Callable[[str], None],
) -> None:
    """Print each new event and each alert the receiver logs, as they happen."""
    seen: set[int] = set()
    received = 0
    headers = {"Authorization": f"Bearer {read_key}"}
    while not stop.wait(2.0):
        try:
            events: list[dict[str, Any]] = httpx.get(
                f"{url}/v1/events", headers=headers, timeout=10
            ).json()
        except (httpx.HTTPError, ValueError):
            continue
        for event in sorted(events, key=lambda e: e["id"]):
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            details = event.get("details") or {}
            about = " ".join(
                f"{k}={details[k]}" for k in ("segment", "tier", "model") if k in details
            )
            say(
                f"[demo] event {event['kind']} router={event.get('router')} {about} "
                f"ts={event['ts']}"
            )
        if log_path is not None:
            entries = receiver.read_log(log_path)
            for entry in entries[received:]:
                say(f"[demo] alert received: {receiver.describe(entry)}")
            received = len(entries)


def run_demo(
    options: DemoOptions,
    *,
    serve: Callable[[Settings, str, int], None],
    configure: Callable[[], Settings],
) -> None:
    """Start everything, serve the API in the foreground, stop everything on Ctrl-C."""
    from sqlalchemy import func, select

    from shadoweval.auth import service
    from shadoweval.auth.models import Scope
    from shadoweval.db import create_db_engine, session_scope, upgrade_database
    from shadoweval.ingest.models import Decision
    from shadoweval.sql import table_of

    def say(text: str) -> None:
        print(text, flush=True)

    stop = threading.Event()
    children: list[subprocess.Popen[bytes]] = []
    threads: list[threading.Thread] = []
    secret = secrets.token_hex(16)
    with ExitStack() as stack:
        if options.reset:
            # Settings of the environment as the user set it: the demo's own defaults are
            # applied below and do not touch the data dir or the database URL.
            for path in reset_state(Settings()):
                say(f"[demo] reset: removed {path}")
        data_dir = Path(os.environ.get("SHADOWEVAL_DATA_DIR", ".shadoweval"))
        data_dir.mkdir(parents=True, exist_ok=True)
        receiver_log = data_dir / "alerts-received.jsonl" if options.traffic else None
        receiver_url = (
            stack.enter_context(receiver.run_receiver(secret=secret, log_path=receiver_log))
            if receiver_log is not None
            else None
        )
        _environment(options, receiver_url, secret)
        host = os.environ.get("SHADOWEVAL_API_HOST", "127.0.0.1")
        port = free_port(host, options.port)
        url = f"http://{host}:{port}"
        dashboard_port = free_port(host, options.dashboard_port)
        dashboard_url = f"http://{host}:{dashboard_port}"
        # Data links (the retrain trigger's export) go to the API, page links to the dashboard.
        os.environ.setdefault("SHADOWEVAL_PUBLIC_BASE_URL", url)
        os.environ.setdefault("SHADOWEVAL_DASHBOARD_URL", dashboard_url)
        settings = configure()
        # One line per traffic batch and poll would drown what the demo prints.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if options.traffic:
            logging.getLogger("shadoweval.api").setLevel(logging.WARNING)
        upgrade_database(settings)
        engine = create_db_engine(settings)
        with engine.connect() as connection:
            earlier = connection.execute(
                select(func.count()).select_from(table_of(Decision))
            ).scalar_one()
        notice = earlier_run_notice(settings, int(earlier))
        if notice is not None:
            say(notice)
        with session_scope(engine) as session:
            ingest_key = service.create_key(
                session=session, scopes=[Scope.INGEST], name="demo ingest"
            ).key
            read_key = service.create_key(
                session=session, scopes=[Scope.READ], name="demo read"
            ).key
            operate_key = service.create_key(
                session=session, scopes=[Scope.OPERATE], name="demo operate"
            ).key
        engine.dispose()
        os.environ.update(
            SHADOWEVAL_DASHBOARD_API_URL=url,
            SHADOWEVAL_DASHBOARD_READ_KEY=read_key,
            SHADOWEVAL_DASHBOARD_OPERATE_KEY=operate_key,
        )
        logs = data_dir / "logs"
        logs.mkdir(exist_ok=True)
        scenario = options.scenario
        if options.real and not os.environ.get("SHADOWEVAL_OPENAI_API_KEY"):
            # Only an Anthropic key: play the same router over Claude models.
            scenario = replace(
                scenario,
                cheap_model="claude-3-5-haiku",
                strong_model="claude-sonnet-4-5",
                upgraded_cheap_model="claude-haiku-4-5",
            )
        provider = "REAL providers (this spends money)" if options.real else "SIMULATED provider"
        lines = [
            "",
            f"shadoweval demo ({provider}; "
            f"database: {engine.url.render_as_string(hide_password=True)})",
            f"  API:         {url}   (OpenAPI docs at {url}/docs)",
            f"  ingest key:  {ingest_key}",
            f"  read key:    {read_key}",
            f"  operate key: {operate_key}",
        ]
        if options.dashboard:
            lines.append(f"  dashboard:   {dashboard_url}")
        if options.traffic:
            minutes = 60 * options.speed
            lines += [
                f"  worker log:  {logs / 'worker.log'}",
                f"  alerts received (signed webhook) are logged to {receiver_log}",
                "",
                f"Traffic: router {scenario.router}, {options.rate:g} requests/s, decision time "
                f"{options.speed:g}x faster than the wall clock (1 wall minute = "
                f"{minutes / 60:g} decision minutes).",
                "What to watch for:",
                f"  - after ~{scenario.degrade_after_s / options.speed / 60:.1f} min the "
                f"'{scenario.degrading_segment}' segment degrades: its harm rate climbs on "
                "'Where is quality lost?' and a quality_drop alert fires (printed below);",
                f"  - after ~{scenario.upgrade_after_s / options.speed / 60:.1f} min the cheap "
                f"model changes {scenario.cheap_model} -> {scenario.upgraded_cheap_model}: a "
                "model_change event (and a retrain trigger) appears on 'What is firing?';",
                "  - the other segments stay quiet.",
            ]
        lines += ["", "Ctrl-C stops the demo.", ""]
        say("\n".join(lines))
        try:
            if options.traffic:
                children.append(_child(["worker"], logs / "worker.log"))
            if options.dashboard:
                children.append(
                    _child(["dashboard", "--port", str(dashboard_port)], logs / "dashboard.log")
                )
            if options.traffic:
                clock = CompressedClock(
                    speed=options.speed, horizon_s=scenario.upgrade_after_s + 3600.0
                )
                # The same draws every run (DEMO_SEED), new request ids.
                generator = TrafficGenerator(
                    scenario, run_id=str(int(time.time())), simulated=not options.real
                )

                def traffic() -> None:
                    if _wait_until_up(url, stop):
                        run_traffic(
                            url=url,
                            ingest_key=ingest_key,
                            stop=stop,
                            generator=generator,
                            clock=clock,
                            requests_per_second=options.rate,
                        )

                threads.append(threading.Thread(target=traffic, name="traffic", daemon=True))
                threads.append(
                    threading.Thread(
                        target=_watch,
                        args=(url, read_key, receiver_log, stop, say),
                        name="watch",
                        daemon=True,
                    )
                )
            for thread in threads:
                thread.start()
            serve(settings, host, port)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            for child in children:
                _stop_child(child)
