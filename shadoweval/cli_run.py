"""The `shadoweval` commands that run a process (api, demo, dashboard, worker), and the
settings every command starts from (`_settings`: logging set up, unknown variables named)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from shadoweval.cli_common import fail
from shadoweval.config import Settings, get_settings, unknown_environment_variables


def _settings() -> Settings:
    from shadoweval.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    for name, closest in unknown_environment_variables(os.environ):
        hint = f"; did you mean {closest}?" if closest else ""
        logging.getLogger("shadoweval").warning(
            "environment variable %s is not a shadoweval setting and is ignored%s", name, hint
        )
    return settings


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from shadoweval.app import create_app
    from shadoweval.db import check_database_ready, create_db_engine
    from shadoweval.exceptions import DatabaseNotReady
    from shadoweval.runtime import collector

    engine = create_db_engine(settings)
    try:
        check_database_ready(engine)
    except DatabaseNotReady as error:
        raise fail(error.message) from error
    config = uvicorn.Config(
        create_app(settings, engine),
        host=host,
        port=port,
        log_config=None,  # our own logging, set up in _settings()
        access_log=False,  # the app logs each request with its key prefix
        # In-flight requests get this long to finish on SIGTERM; idle keep-alives do not wait.
        timeout_graceful_shutdown=15,
    )
    collector.tune_for_serving()
    uvicorn.Server(config).run()


def api(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the HTTP API (ingest, read, admin) under uvicorn."""
    settings = _settings()
    _serve(settings, host or settings.api_host, port if port is not None else settings.api_port)


def demo(
    port: Annotated[int, typer.Option(help="API port (a free one if taken).")] = 8000,
    dashboard_port: Annotated[
        int, typer.Option(help="Dashboard port (a free one if taken).")
    ] = 8501,
    speed: Annotated[
        float, typer.Option(help="Decision-time seconds per wall second (the compressed clock).")
    ] = 12.0,
    rate: Annotated[float, typer.Option(help="Routed requests per wall second.")] = 4.0,
    real: Annotated[
        bool,
        typer.Option("--real", help="Use the real providers (needs their keys; spends money)."),
    ] = False,
    traffic: Annotated[
        bool, typer.Option(help="Run the traffic generator, worker and alert receiver.")
    ] = True,
    dashboard: Annotated[bool, typer.Option(help="Start the dashboard.")] = True,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Delete earlier runs' database, received alerts and logs under the data dir "
            "first (embedded SQLite only).",
        ),
    ] = False,
) -> None:
    """The whole system on the embedded SQLite default: API, worker, dashboard, router traffic."""
    from shadoweval.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        port=port,
        dashboard_port=dashboard_port,
        speed=speed,
        rate=rate,
        real=real,
        traffic=traffic,
        dashboard=dashboard,
        reset=reset,
    )
    try:
        run_demo(options, serve=_serve, configure=_settings)
    except ValueError as error:
        raise fail(str(error), code=2) from error


def dashboard(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    api_url: Annotated[str | None, typer.Option(help="API base URL to read.")] = None,
) -> None:
    """Run the Streamlit dashboard; it reads the API with SHADOWEVAL_DASHBOARD_READ_KEY."""
    import os

    from shadoweval.dashboard import __file__ as package_file

    settings = _settings()
    if api_url:
        os.environ["SHADOWEVAL_DASHBOARD_API_URL"] = api_url
    if not settings.dashboard_read_key:
        typer.secho(
            "warning: SHADOWEVAL_DASHBOARD_READ_KEY is not set; the API will refuse reads.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    app_path = Path(package_file).with_name("app.py")
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path),
        "--server.address",
        host or settings.dashboard_host,
        "--server.port",
        str(settings.dashboard_port if port is None else port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # No "Deploy" button or developer menu: the dashboard is an operated service.
        "--client.toolbarMode",
        "minimal",
    ]
    # exec: Streamlit owns the process, so Ctrl-C and SIGTERM reach it directly.
    os.execv(sys.executable, argv)  # noqa: S606


def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run every job once and exit (cron, debugging).")
    ] = False,
) -> None:
    """Run the background worker: shadow runs, the judge, and (as leader) the planning jobs."""
    import asyncio

    from shadoweval.alerts.service import startup_checks as alerts_startup_checks
    from shadoweval.db import check_database_ready, create_db_engine
    from shadoweval.exceptions import DatabaseNotReady, ShadowevalError
    from shadoweval.runtime.worker import build_runtime, run_worker

    settings = _settings()
    # Jobs aggregate more than a request may: their own, longer statement timeout.
    engine = create_db_engine(
        settings, statement_timeout_seconds=settings.db_worker_statement_timeout_seconds
    )
    try:
        check_database_ready(engine)
        alerts_startup_checks(settings)
        runtime, close_providers = build_runtime(settings, engine)
    except (DatabaseNotReady, ShadowevalError) as error:
        raise fail(error.message) from error

    async def main() -> None:
        try:
            await run_worker(runtime, once=once)
        finally:
            await close_providers()

    asyncio.run(main())
