"""The `shadoweval` command line. `shadoweval COMMAND --help` shows a command's options."""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shadoweval.bench.cli import bench_app
from shadoweval.cli_common import HELP, JsonFigures, fail
from shadoweval.config import Settings, get_settings, unknown_environment_variables

if TYPE_CHECKING:
    from sqlmodel import Session


app = typer.Typer(add_completion=False, help=__doc__, **HELP)
db_app = typer.Typer(help="Database migrations.", **HELP)
keys_app = typer.Typer(help="API keys (stored hashed, listed by prefix).", **HELP)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")


def _print_version(requested: bool) -> None:
    if requested:
        from shadoweval import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # The top-level options; each command does its own work.
    pass


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


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the HTTP API (ingest, read, admin) under uvicorn."""
    settings = _settings()
    _serve(settings, host or settings.api_host, port if port is not None else settings.api_port)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database to the latest schema (or to REVISION)."""
    from shadoweval.db import upgrade_database

    settings = _settings()
    upgrade_database(settings, revision)
    typer.echo(f"database migrated to {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Migrate the database down to REVISION."""
    from alembic import command

    from shadoweval.db import alembic_config

    settings = _settings()
    command.downgrade(alembic_config(settings.resolved_database_url), revision)
    typer.echo(f"database migrated down to {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the revision this code expects."""
    from shadoweval.db import create_db_engine, current_revision, head_revision

    engine = create_db_engine(_settings())
    typer.echo(f"current: {current_revision(engine) or 'none'}  expected: {head_revision()}")


def _key_service_session() -> AbstractContextManager[Session]:
    from shadoweval.db import check_database_ready, create_db_engine, session_scope
    from shadoweval.exceptions import DatabaseNotReady

    engine = create_db_engine(_settings())
    try:
        check_database_ready(engine)
    except DatabaseNotReady as error:
        raise fail(error.message) from error
    return session_scope(engine)


@keys_app.command("create")
def keys_create(
    scope: Annotated[
        list[str], typer.Option("--scope", help="ingest, read, operate or admin; repeatable.")
    ],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after N days.")] = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from shadoweval.auth import service
    from shadoweval.auth.models import Scope

    try:
        scopes = [Scope(s) for s in scope]
    except ValueError as error:
        raise fail(f"{error}; scopes are {', '.join(s.value for s in Scope)}", 2) from error
    with _key_service_session() as session:
        created = service.create_key(
            session=session, scopes=scopes, name=name, expires_in_days=expires_in_days
        )
    typer.echo(created.key)
    typer.echo(f"prefix {created.prefix}, scopes {','.join(created.scopes)}", err=True)


@keys_app.command("list")
def keys_list(
    include_inactive: Annotated[
        bool, typer.Option("--all", help="Include revoked/expired.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List keys by prefix."""
    from shadoweval.auth import service

    with _key_service_session() as session:
        keys = service.list_keys(session=session, include_inactive=include_inactive)
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    typer.echo(f"{'PREFIX':<14} {'SCOPES':<28} {'ACTIVE':<7} {'CREATED':<20} NAME")
    for k in keys:
        created = k.created_at.strftime("%Y-%m-%d %H:%M")
        typer.echo(
            f"{k.prefix:<14} {','.join(k.scopes):<28} {k.active!s:<7} {created:<20} {k.name}"
        )


@keys_app.command("revoke")
def keys_revoke(prefix: str) -> None:
    """Revoke a key at once."""
    from shadoweval.auth import service
    from shadoweval.exceptions import NotFound

    try:
        with _key_service_session() as session:
            service.revoke_key(session=session, prefix=prefix)
    except NotFound as error:
        raise fail(error.message) from error
    typer.echo(f"revoked {prefix}")


@keys_app.command("rotate")
def keys_rotate(
    prefix: str,
    grace_hours: Annotated[float, typer.Option(help="Hours the old key keeps working.")] = 0,
) -> None:
    """Replace a key with a new one of the same scopes; print the new key."""
    from shadoweval.auth import service
    from shadoweval.exceptions import InvalidRequest, NotFound

    try:
        with _key_service_session() as session:
            created = service.rotate_key(session=session, prefix=prefix, grace_hours=grace_hours)
    except (NotFound, InvalidRequest) as error:
        raise fail(error.message) from error
    typer.echo(created.key)
    typer.echo(f"prefix {created.prefix} replaces {prefix}", err=True)


@app.command(short_help="API, worker, dashboard and traffic on SQLite, in one go.")
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


@app.command()
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


@app.command(short_help="Release gate: test that a candidate model is no worse.")
def gate(
    router: Annotated[str, typer.Option(help="Router whose stored requests are replayed.")],
    candidate: Annotated[str, typer.Option(help="The new model.")],
    replace: Annotated[str, typer.Option(help="The model the candidate would replace.")],
    sample: Annotated[int, typer.Option(min=1, help="Stored requests to replay in all.")],
    max_drop: Annotated[
        float, typer.Option(help="Margin: largest acceptable P(replaced wins) - P(candidate wins).")
    ],
    segments: Annotated[
        str | None, typer.Option(help="Comma-separated segment values (default: all).")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="One-sided level (default SHADOWEVAL_GATE_ALPHA).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the stratified sample.")] = 0,
    max_cost_usd: Annotated[
        float | None, typer.Option(help="Spending cap in USD (default: gate_max_cost_usd).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the Markdown report here.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    allow_underpowered: Annotated[
        bool,
        typer.Option(
            "--allow-underpowered",
            help="Run even if the per-segment sample is below the fewest pairs a pass needs.",
        ),
    ] = False,
) -> None:
    """Release gate: replay stored requests on the candidate and the replaced model, judge them
    pairwise, test non-inferiority. Exit 0 pass, 100 fail, 1 error, 2 usage error."""
    from shadoweval.gate.cli import run_gate_command

    code = run_gate_command(
        settings=_settings(),
        router=router,
        candidate=candidate,
        replace=replace,
        sample=sample,
        max_drop=max_drop,
        segments=segments,
        alpha=alpha,
        seed=seed,
        max_cost_usd=max_cost_usd,
        report_path=report,
        junit_path=junit,
        allow_underpowered=allow_underpowered,
    )
    raise typer.Exit(code)


@app.command()
def replay(
    log_file: Annotated[
        Path, typer.Argument(help="NDJSON decision log.", exists=True, dir_okay=False)
    ],
    url: Annotated[
        str, typer.Option(help="API base URL.", envvar="SHADOWEVAL_URL")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None,
        typer.Option(
            help="An API key with the ingest scope. SHADOWEVAL_KEY is read too, deprecated.",
            envvar="SHADOWEVAL_INGEST_KEY",
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Replay speed relative to the recorded ts; omit for as fast as possible."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Decisions per request.")] = 500,
) -> None:
    """Post a recorded decision log through the ingest API in ts order (backfills, offline runs)."""
    from shadoweval.exceptions import InvalidRequest
    from shadoweval.ingest.replay import read_log
    from shadoweval.ingest.replay import replay as run_replay

    if not key and os.environ.get("SHADOWEVAL_KEY"):
        # The name the README used before the client's SHADOWEVAL_INGEST_KEY; kept one release.
        typer.secho(
            "warning: SHADOWEVAL_KEY is deprecated; set SHADOWEVAL_INGEST_KEY instead.",
            fg=typer.colors.YELLOW,
            err=True,
        )
        key = os.environ["SHADOWEVAL_KEY"]
    if not key:
        raise fail("an ingest key is needed: --key or SHADOWEVAL_INGEST_KEY", 2)
    try:
        items = read_log(log_file)
        with typer.progressbar(length=len(items), label="replaying", file=sys.stderr) as bar:
            result = run_replay(
                items=items,
                url=url,
                key=key,
                speed=speed,
                batch_size=batch_size,
                on_batch=bar.update,
            )
    except InvalidRequest as error:
        raise fail(error.message) from error
    typer.echo(
        f"posted {result.posted}: stored {result.stored}, duplicates {result.duplicates}, "
        f"invalid {result.invalid}"
    )


@app.command("export-training")
def export_training(
    router: Annotated[str, typer.Option(help="Router name.")],
    since: Annotated[
        str | None, typer.Option(help="Decision time ts ≥ since (RFC 3339, with offset).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Decision time ts < until (RFC 3339).")] = None,
    export_format: Annotated[
        str, typer.Option("--format", help="jsonl (all fields), routellm or notdiamond (CSV).")
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option(help="File to write; default standard output.", dir_okay=False)
    ] = None,
) -> None:
    """Stream a router's judged pairs as labelled training tuples (as /v1/exports/training)."""
    from shadoweval.db import check_database_ready, create_db_engine
    from shadoweval.exceptions import ShadowevalError
    from shadoweval.pool import export

    try:
        query = export.parse_query(router=router, since=since, until=until)
        chosen = export.parse_format(export_format)
    except ValueError as error:
        raise fail(str(error), 2) from error
    settings = _settings()
    engine = create_db_engine(settings)
    try:
        check_database_ready(engine)
        written = export.write_export(
            engine=engine,
            settings=settings,
            query=query,
            export_format=chosen,
            output=output,
            progress=lambda total: typer.progressbar(
                length=total, label="exporting", file=sys.stderr
            ),
        )
    except ShadowevalError as error:
        raise fail(error.message) from error
    typer.echo(f"exported {written} pairs", err=True)


@app.command(
    "advise-threshold", short_help="The threshold each segment should run, with a guarantee."
)
def advise_threshold(
    router: Annotated[str, typer.Option(help="Router name (score_semantics p_strong_needed).")],
    segment: Annotated[
        str | None, typer.Option(help="One segment value; default every segment and all pooled.")
    ] = None,
    harm_budget: Annotated[
        float, typer.Option(min=0, max=1, help="ε: harm allowed, as a share of all traffic.")
    ] = 0.05,
    delta: Annotated[
        float, typer.Option(min=0, max=1, help="δ: risk that the recommendation exceeds ε.")
    ] = 0.1,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """The threshold each segment should run, with a guarantee and a USD/day forecast (as
    GET /v1/thresholds), over the last decision days up to the router's watermark."""
    from sqlmodel import Session

    from shadoweval.analytics import thresholds as thresholds_service
    from shadoweval.db import check_database_ready, create_db_engine
    from shadoweval.exceptions import ShadowevalError

    if not (0 < harm_budget < 1 and 0 < delta < 1):
        raise fail("--harm-budget and --delta must lie strictly between 0 and 1", 2)
    settings = _settings()
    engine = create_db_engine(settings)
    try:
        check_database_ready(engine)
        with Session(engine) as session:
            report = thresholds_service.advise_thresholds(
                session=session,
                settings=settings,
                router=router,
                segment=segment,
                harm_budget=harm_budget,
                delta=delta,
            )
    except ShadowevalError as error:
        raise fail(error.message) from error
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    typer.echo(thresholds_service.format_report(report))


@app.command(short_help="How often the current judge agrees with stored verdicts.")
def rejudge(
    router: Annotated[str, typer.Option(help="Router whose judged pairs are re-judged.")],
    sample: Annotated[int, typer.Option(min=1, help="Pairs to re-judge, both orders each.")] = 100,
    judge_model: Annotated[
        str | None, typer.Option(help="Judge model to try (default: the configured one).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random sample.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Pairs judged at once.")] = 8,
    as_json: JsonFigures = False,
) -> None:
    """Re-judge a stored sample with the current judge and report how often it agrees with the
    stored verdicts (rate, Cohen's kappa with 95 % CI) before the switch is trusted. Writes
    nothing: stored verdicts stay as they are."""
    import asyncio

    from shadoweval.db import check_database_ready, create_db_engine
    from shadoweval.exceptions import DatabaseNotReady
    from shadoweval.feedback import rejudge as rejudging
    from shadoweval.providers.base import ProviderError
    from shadoweval.providers.registry import build_provider_registry

    settings = _settings()
    if judge_model:
        settings = settings.model_copy(update={"judge_model": judge_model})
    engine = create_db_engine(settings)
    try:
        check_database_ready(engine)
    except DatabaseNotReady as error:
        raise fail(error.message) from error

    async def main() -> rejudging.RejudgeReport:
        registry = build_provider_registry(settings)
        try:
            with typer.progressbar(length=sample, label="re-judging", file=sys.stderr) as bar:
                return await rejudging.rejudge(
                    engine=engine,
                    settings=settings,
                    provider_for_model=registry.for_model,
                    router=router,
                    sample=sample,
                    seed=seed,
                    concurrency=concurrency,
                    on_pair=lambda _: bar.update(1),
                )
        finally:
            await registry.aclose()

    try:
        report = asyncio.run(main())
    except ProviderError as error:
        raise fail(f"judge provider: {error.reason}: {error.message}") from error
    if not report.pairs:
        raise fail(
            f"router {router!r} has no judged pairs with stored answers to re-judge "
            "(pairs the configured judge made itself are left out)"
        )
    for line in rejudging.summary_lines(report):
        typer.echo(line)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))


@app.command()
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


@app.command()
def version() -> None:
    """Print the version."""
    from shadoweval import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
