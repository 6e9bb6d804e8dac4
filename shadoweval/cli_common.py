"""What every `shadoweval` command group shares: plain help listing each command's first
sentence, the error exit, and the bench commands' `--json` figures."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from typer.core import TyperGroup


class CommandList(TyperGroup):
    """Lists every command with its first sentence, never cut off with "..." (click's
    default cuts each description at the terminal width)."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [
            (name, command.get_short_help_str(limit=1_000))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# Plain (not Rich) help: typer's Rich help prints a value type beside flags that take
# none (`--once <bool>`, even `--help <bool>`); its plain help prints `--once`.
HELP: dict[str, Any] = {"rich_markup_mode": None, "cls": CommandList, "no_args_is_help": True}

JsonFigures = Annotated[bool, typer.Option("--json", help="Figures as JSON on the last line.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def echo_figures(report: str, figures: Any, as_json: bool) -> None:
    """A bench command's report, then with `--json` its figures as JSON on the last line."""
    typer.echo(report)
    if as_json:
        typer.echo(json.dumps(figures))
