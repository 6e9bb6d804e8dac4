"""The CLI as a new user reads it: every command listed with its description, flags shown as
flags, `--version`, and the client's environment names for replay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from shadoweval import __version__
from shadoweval.cli import app
from shadoweval.ingest import replay as replay_module
from shadoweval.ingest.replay import ReplayResult

runner = CliRunner()


def command_paths(
    command: Any, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under `command`, by its words on the command line."""
    yield prefix, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from command_paths(sub, (*prefix, name))


ROOT = typer.main.get_command(app)
ALL_COMMANDS = list(command_paths(ROOT))
assert len(ALL_COMMANDS) > 20  # the walk reaches the subcommands


def commands_section(help_text: str) -> dict[str, str]:
    """Command name → description, from the help's Commands section (wrapped lines joined)."""
    rows: dict[str, str] = {}
    last = ""
    for line in help_text.split("Commands:\n", 1)[1].splitlines():
        name, _, description = line.strip().partition("  ")
        if line.startswith("  ") and not line.startswith("   "):
            last = name
            rows[last] = description.strip()
        elif line.strip():
            rows[last] = f"{rows[last]} {line.strip()}"
    return rows


@pytest.mark.parametrize(
    "path",
    [path for path, command in ALL_COMMANDS if isinstance(command, TyperGroup)],
    ids=lambda path: " ".join(path) or "shadoweval",
)
def test_help_lists_every_command_with_a_whole_description(path: tuple[str, ...]) -> None:
    group = dict(ALL_COMMANDS)[path]
    assert isinstance(group, TyperGroup)
    answer = runner.invoke(app, [*path, "--help"], terminal_width=80)
    assert answer.exit_code == 0, answer.output
    listed = commands_section(answer.output)
    assert set(listed) == {name for name, sub in group.commands.items() if not sub.hidden}
    for name, description in listed.items():
        assert description, f"{name} has no description"
        assert not description.endswith("..."), f"{name}: {description!r} is cut off"


@pytest.mark.parametrize(
    "path", [path for path, _ in ALL_COMMANDS], ids=lambda path: " ".join(path) or "shadoweval"
)
def test_no_option_renders_a_value_for_a_flag(path: tuple[str, ...]) -> None:
    answer = runner.invoke(app, [*path, "--help"], terminal_width=100)
    assert answer.exit_code == 0, answer.output
    assert "<bool>" not in answer.output
    assert "--help  " in answer.output or "--help\n" in answer.output


def test_boolean_options_are_flags() -> None:
    worker = runner.invoke(app, ["worker", "--help"]).output
    assert "--once  " in worker
    demo = runner.invoke(app, ["demo", "--help"]).output
    assert "--dashboard / --no-dashboard" in demo


def test_version_option_prints_the_package_version() -> None:
    answer = runner.invoke(app, ["--version"])
    assert answer.exit_code == 0
    assert answer.output.strip() == __version__
    assert runner.invoke(app, ["version"]).output.strip() == __version__


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "decisions.ndjson"
    path.write_text(json.dumps({"request_id": "r-1", "ts": "2026-12-01T00:00:00Z"}) + "\n")
    return path


@pytest.fixture
def replayed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the replay command would post with, without a server."""
    for name in ("SHADOWEVAL_URL", "SHADOWEVAL_INGEST_KEY", "SHADOWEVAL_KEY"):
        monkeypatch.delenv(name, raising=False)
    seen: dict[str, Any] = {}

    def fake_replay(**kwargs: Any) -> ReplayResult:
        seen.update(kwargs)
        return ReplayResult(posted=len(kwargs["items"]), stored=len(kwargs["items"]))

    monkeypatch.setattr(replay_module, "replay", fake_replay)
    return seen


def test_replay_reads_the_clients_environment_names(
    log_file: Path, replayed: dict[str, Any]
) -> None:
    env = {"SHADOWEVAL_URL": "http://api.example:9000", "SHADOWEVAL_INGEST_KEY": "se_new"}
    answer = runner.invoke(app, ["replay", str(log_file)], env=env)
    assert answer.exit_code == 0, answer.output
    assert (replayed["url"], replayed["key"]) == ("http://api.example:9000", "se_new")
    assert "deprecated" not in answer.output


def test_replay_accepts_the_old_key_name_with_a_warning(
    log_file: Path, replayed: dict[str, Any]
) -> None:
    answer = runner.invoke(app, ["replay", str(log_file)], env={"SHADOWEVAL_KEY": "se_old"})
    assert answer.exit_code == 0, answer.output
    assert replayed["key"] == "se_old"
    assert "SHADOWEVAL_KEY is deprecated" in answer.output


def test_replay_without_a_key_names_the_variable(log_file: Path, replayed: dict[str, Any]) -> None:
    answer = runner.invoke(app, ["replay", str(log_file)])
    assert answer.exit_code == 2
    assert "SHADOWEVAL_INGEST_KEY" in answer.output
    assert not replayed
