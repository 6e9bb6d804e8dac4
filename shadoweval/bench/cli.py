"""`shadoweval bench …`: the benchmarks (not run in CI). Each command imports its bench
module only when run, so `shadoweval --help` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from shadoweval.cli_common import HELP, JsonFigures, echo_figures, fail

bench_app = typer.Typer(help="Benchmarks (not run in CI).", **HELP)


@bench_app.command("shadow")
def bench_shadow(
    runs: Annotated[
        str, typer.Option(help="Comma-separated run counts, each in a fresh process.")
    ] = "1000,5000",
    in_flight: Annotated[int, typer.Option(help="Provider calls in flight.")] = 64,
    latency_ms: Annotated[float, typer.Option(help="Fake provider latency per call.")] = 300,
    database_url: Annotated[str | None, typer.Option(help="Default: a fresh SQLite file.")] = None,
    as_json: JsonFigures = False,
    mode: Annotated[
        str, typer.Option(help="realtime, or batch: realtime then batch mode, cost ratio.")
    ] = "realtime",
    batch_delay_ms: Annotated[
        float, typer.Option(help="Batch mode: the fake ends each batch this long after creation.")
    ] = 1000,
) -> None:
    """Shadow runs with their two judge calls each against a fake provider with fixed latency."""
    from shadoweval.bench.shadow import format_batch_report, run_bench

    if mode not in ("realtime", "batch"):
        raise fail("--mode must be realtime or batch", 2)
    figures = run_bench(
        sizes=[int(n) for n in runs.split(",")],
        in_flight=in_flight,
        latency_ms=latency_ms,
        database_url=database_url,
        mode=mode,
        batch_delay_ms=batch_delay_ms,
    )
    if mode == "batch":
        echo_figures("\n".join(format_batch_report(figures)), figures, as_json)
        return
    ceiling = figures["ceiling_calls_per_second"]
    typer.echo(f"ceiling: {in_flight} in flight / {latency_ms:.0f} ms = {ceiling} calls/s")
    for row in figures["results"]:
        typer.echo(
            f"{row['runs']:>6} runs  {row['calls']:>6} calls  {row['seconds']:>7.1f} s  "
            f"{row['calls_per_second']:>6.1f} calls/s  "
            f"{100 * row['ratio_to_ceiling']:5.1f} % of ceiling  "
            f"peak RSS {row['peak_rss_mb']:.0f} MB ({row['database']})"
        )
    if as_json:
        typer.echo(json.dumps(figures))


@bench_app.command("detect")
def bench_detect(
    repetitions: Annotated[int, typer.Option(help="Seeded repetitions.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    changed_share: Annotated[
        float, typer.Option(help="Traffic share of the degrading segment.")
    ] = 0.05,
    change_day: Annotated[
        int,
        typer.Option(
            min=1,
            help="Day of the 30 on which the rise starts: the pre-change labels the "
            "detector has to estimate the baseline from.",
        ),
    ] = 10,
    as_json: JsonFigures = False,
) -> None:
    """Uniform sampling + daily tests against the planner + sequential detection, simulated."""
    from shadoweval.bench.detect import format_detect_report, run_detect_bench

    figures = run_detect_bench(
        repetitions=repetitions, seed=seed, changed_share=changed_share, change_day=change_day
    )
    echo_figures(format_detect_report(figures), figures, as_json)


@bench_app.command("scenario")
def bench_scenario(
    seeds: Annotated[int, typer.Option(min=1, help="Seeded runs (in-process).")] = 20,
    days: Annotated[float, typer.Option(min=0.25, help="Days of decisions per run.")] = 3.0,
    decisions_per_day: Annotated[
        float, typer.Option(min=24, help="Mean decisions a day.")
    ] = 20_000,
    budget_usd: Annotated[float, typer.Option(min=0, help="Daily shadow budget, USD.")] = 20.0,
    http: Annotated[
        bool, typer.Option("--http", help="Also run the first seed over HTTP + replay.")
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL server; each run gets its own database.")
    ] = None,
    first_seed: Annotated[int, typer.Option(help="Seed of the first run.")] = 0,
    jobs: Annotated[
        int, typer.Option(min=1, help="Seeds run side by side, each in a process of its own.")
    ] = 1,
    as_json: JsonFigures = False,
) -> None:
    """The issue-13 scenario (a 5 % segment's harm rises, the cheap model is swapped) through
    the real pipeline per seed: detection delay, false alarms, model events, calibration
    alerts, spend against budget and interval coverage, beside their targets."""
    from shadoweval.bench.scenario import format_scenario_report, run_scenario_bench

    def progress(message: str) -> None:
        typer.echo(message, err=True)

    figures = run_scenario_bench(
        seeds=seeds,
        first_seed=first_seed,
        days=days,
        decisions_per_day=decisions_per_day,
        budget_usd=budget_usd,
        http=http,
        database_url=database_url,
        progress=progress,
        jobs=jobs,
    )
    echo_figures(format_scenario_report(figures), figures, as_json)


@bench_app.command("ingest")
def bench_ingest(
    decisions: Annotated[int, typer.Option(help="Decisions posted in batches of 500.")] = 50_000,
    single_posts: Annotated[int, typer.Option(help="Single posts for the latency test.")] = 2_000,
    rate: Annotated[float, typer.Option(help="Offered rate of single posts, per second.")] = 200,
    connections: Annotated[int, typer.Option(help="Concurrent batch connections.")] = 4,
    api_processes: Annotated[
        int, typer.Option(help="API replicas (processes) for the main run; default: one per core.")
    ] = 0,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL server; default SQLite.")
    ] = None,
    as_json: JsonFigures = False,
) -> None:
    """Ingest throughput over HTTP beside the in-process path and a raw executemany."""
    import os

    from shadoweval.bench.ingest import run_ingest_bench

    figures = run_ingest_bench(
        decisions=decisions,
        single_posts=single_posts,
        rate=rate,
        connections=connections,
        api_processes=api_processes or os.cpu_count() or 1,
        database_url=database_url,
    )
    echo_figures(
        f"{figures['database']}: batched {figures['batched_decisions_per_second']}/s over HTTP "
        f"with {figures['api_processes']} API processes "
        f"({figures['batched_one_process_decisions_per_second']}/s with one), "
        f"{figures['in_process_decisions_per_second']}/s in-process "
        f"({figures['in_process_cpu_us_per_decision']} µs CPU per decision; "
        f"ratio {figures['http_over_in_process']}), raw executemany "
        f"{figures['raw_executemany_rows_per_second']} rows/s; single posts at {rate:.0f}/s: "
        f"p50 {figures['single_post_p50_ms']} ms, p99 {figures['single_post_p99_ms']} ms",
        figures,
        as_json,
    )


@bench_app.command("analytics")
def bench_analytics(
    decisions: Annotated[int, typer.Option(help="Decisions in the log.")] = 1_000_000,
    verdicts: Annotated[int, typer.Option(help="Finished verdicts.")] = 50_000,
    database_url: Annotated[str | None, typer.Option(help="Default: a fresh SQLite file.")] = None,
    as_json: JsonFigures = False,
) -> None:
    """Aggregate decisions and verdicts into every per-segment figure and the calibration,
    beside a pandas groupby of the same numbers, and check they agree."""
    from shadoweval.bench.analytics import run_analytics_bench

    figures = run_analytics_bench(decisions=decisions, verdicts=verdicts, database_url=database_url)
    echo_figures(
        f"{figures['database']}: {figures['decisions']} decisions, {figures['verdicts']} verdicts "
        f"-> {figures['segments']} segment rows in {figures['shadoweval_seconds']:.2f} s "
        f"(pandas read + groupby: {figures['pandas_seconds']:.2f} s); agree: {figures['agree']}",
        figures,
        as_json,
    )


@bench_app.command("pages")
def bench_pages(
    decisions: Annotated[int, typer.Option(help="Decisions in the log.")] = 1_000_000,
    verdicts: Annotated[int, typer.Option(help="Finished verdicts.")] = 50_000,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="A PostgreSQL server (a fresh database is made and dropped). "
            "Default: a fresh SQLite file."
        ),
    ] = None,
    reuse_database: Annotated[
        Path | None,
        typer.Option(
            help="A directory keeping the loaded database between runs (the SQLite file "
            "there, or a PostgreSQL database named after it): loaded once for a size and "
            "seed, then reused, not dropped."
        ),
    ] = None,
    as_json: JsonFigures = False,
) -> None:
    """Render every dashboard page (Streamlit AppTest) against an API over that many
    decisions: seconds cold and warm per page, and the API calls behind each."""
    from shadoweval.bench.pages import format_pages_report, run_pages_bench

    figures = run_pages_bench(
        decisions=decisions,
        verdicts=verdicts,
        database_url=database_url,
        reuse_database=reuse_database,
    )
    echo_figures(format_pages_report(figures), figures, as_json)


@bench_app.command("sessions")
def bench_sessions(
    decisions: Annotated[int, typer.Option(help="Decisions of the per-turn router.")] = 1_000_000,
    database_url: Annotated[
        str | None, typer.Option(help="A PostgreSQL server (a fresh database is made and dropped).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated traffic.")] = 0,
    as_json: JsonFigures = False,
) -> None:
    """A generated week of chat sessions routed per turn and per session: gross savings,
    the prompt-cache cost of switching, net savings, and how long /v1/sessions takes."""
    from shadoweval.bench.sessions import format_sessions_report, run_sessions_bench

    figures = run_sessions_bench(decisions=decisions, database_url=database_url, seed=seed)
    echo_figures(format_sessions_report(figures), figures, as_json)


@bench_app.command("estimates")
def bench_estimates(
    repetitions: Annotated[int, typer.Option(min=1, help="Coverage repetitions.")] = 500,
    lead_repetitions: Annotated[int, typer.Option(min=1, help="Lead-time streams.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    harm_rate: Annotated[float, typer.Option(help="True harm probability.")] = 0.2,
    as_json: JsonFigures = False,
) -> None:
    """Judge-only, human-only and PPI coverage and width against a biased judge, and how
    many hours sooner expected harm flags a score shift than the labelled estimate."""
    from shadoweval.bench.estimates import format_estimates_report, run_estimates_bench

    figures = run_estimates_bench(
        repetitions=repetitions, lead_repetitions=lead_repetitions, seed=seed, harm_rate=harm_rate
    )
    echo_figures(format_estimates_report(figures), figures, as_json)


@bench_app.command("thresholds")
def bench_thresholds(
    seeds: Annotated[int, typer.Option(min=1, help="Seeded runs.")] = 50,
    first_seed: Annotated[int, typer.Option(help="Seed of the first run.")] = 0,
    days: Annotated[int, typer.Option(min=1, help="Decision days per run.")] = 7,
    labels_per_day: Annotated[float, typer.Option(min=10, help="Labels a day.")] = 900.0,
    harm_budget: Annotated[float, typer.Option(help="ε, share of all traffic.")] = 0.05,
    delta: Annotated[float, typer.Option(help="δ, the risk level.")] = 0.1,
    as_json: JsonFigures = False,
) -> None:
    """The threshold advisor on a seeded numpy simulation of the labelled sample (one
    miscalibrated segment): violation rate against δ and the share of the oracle's savings."""
    from shadoweval.bench.thresholds import format_thresholds_report, run_thresholds_bench

    figures = run_thresholds_bench(
        seeds=seeds,
        first_seed=first_seed,
        days=days,
        labels_per_day=labels_per_day,
        harm_budget=harm_budget,
        risk=delta,
    )
    echo_figures(format_thresholds_report(figures), figures, as_json)


@bench_app.command("scale")
def bench_scale(
    database_url: Annotated[
        str, typer.Option(help="A PostgreSQL server (a fresh database is made and dropped).")
    ],
    decisions: Annotated[
        int, typer.Option(min=2, help="Decisions bulk-loaded over 30 days, in two steps.")
    ] = 20_000_000,
    ingest_decisions: Annotated[
        int, typer.Option(min=500, help="Decisions per batched ingest, each round, each database.")
    ] = 10_000,
    single_posts: Annotated[int, typer.Option(min=2, help="Single posts per checkpoint.")] = 300,
    read_repeats: Annotated[int, typer.Option(min=1, help="Calls per read route.")] = 10,
    background_rate: Annotated[
        float, typer.Option(min=0, help="Decisions/s posted while posts and reads are timed.")
    ] = 100.0,
    ingest_rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Batched ingests per checkpoint, alternating with an empty database's."
        ),
    ] = 2,
    worker_items: Annotated[
        int, typer.Option(min=0, help="Items per worker-throughput batch (0: not measured).")
    ] = 500,
    worker_rounds: Annotated[
        int, typer.Option(min=1, help="Worker batches per worker count (1, then 2 workers).")
    ] = 2,
    keep_database: Annotated[bool, typer.Option(help="Leave the loaded database.")] = False,
    reuse_database: Annotated[
        str | None,
        typer.Option(
            help="Measure this database on the server (one kept by --keep-database) instead "
            "of creating and loading one; it is not dropped."
        ),
    ] = None,
    drop_day: Annotated[
        bool | None,
        typer.Option(
            help="Drop the oldest decision day and time it (default: on a fresh database "
            "only, since it removes a day of a reused one)."
        ),
    ] = None,
    as_json: JsonFigures = False,
) -> None:
    """The decision log at 0, N/2 and N decisions on PostgreSQL: ingest rate (beside an
    empty database's at the same time), post and read latency, bytes per million
    decisions, one worker's throughput against two's, and dropping one day against
    deleting it."""
    from shadoweval.bench.scale import format_scale_report, run_scale_bench

    figures = run_scale_bench(
        database_url=database_url,
        decisions=decisions,
        ingest_decisions=ingest_decisions,
        single_posts=single_posts,
        ingest_rounds=ingest_rounds,
        read_repeats=read_repeats,
        background_rate=background_rate,
        worker_items=worker_items,
        worker_rounds=worker_rounds,
        keep_database=keep_database,
        reuse_database=reuse_database,
        drop_day=drop_day,
        progress=lambda message: typer.echo(message, err=True),
    )
    echo_figures(format_scale_report(figures), figures, as_json)
