"""The `shadoweval` command line. `shadoweval COMMAND --help` shows a command's options."""

from __future__ import annotations

from typing import Annotated

import typer

from shadoweval import cli_run, cli_tools
from shadoweval.bench.cli import bench_app
from shadoweval.cli_admin import db_app, keys_app
from shadoweval.cli_common import HELP

app = typer.Typer(add_completion=False, help=__doc__, **HELP)
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


# The commands, in the order `shadoweval --help` lists them: the processes (cli_run.py) and
# the operator's tools (cli_tools.py); the db and keys groups are in cli_admin.py.
app.command()(cli_run.api)
app.command(short_help="API, worker, dashboard and traffic on SQLite, in one go.")(cli_run.demo)
app.command()(cli_run.dashboard)
app.command(short_help="Release gate: test that a candidate model is no worse.")(cli_tools.gate)
app.command()(cli_tools.replay)
app.command("export-training")(cli_tools.export_training)
app.command(
    "advise-threshold", short_help="The threshold each segment should run, with a guarantee."
)(cli_tools.advise_threshold)
app.command(short_help="How often the current judge agrees with stored verdicts.")(
    cli_tools.rejudge
)
app.command()(cli_run.worker)


@app.command()
def version() -> None:
    """Print the version."""
    from shadoweval import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
