"""The operator's `shadoweval` commands over a deployment's data: the release gate, log replay,
training export, threshold advice and re-judging."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from shadoweval.cli_common import JsonFigures, fail
from shadoweval.cli_run import _settings


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
