"""The `shadoweval` command line: db, keys, and the API's refusal on an unmigrated database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shadoweval.cli import app
from shadoweval.config import get_settings
from shadoweval.db import head_revision
from tests.conftest import make_empty_database_url

runner = CliRunner()


@pytest.fixture
def cli_env(
    backend: str, tmp_path: Path, postgres_database_factory: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    url = make_empty_database_url(backend, tmp_path, postgres_database_factory)
    monkeypatch.setenv("SHADOWEVAL_DATABASE_URL", url)
    monkeypatch.setenv("SHADOWEVAL_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_commands_refuse_an_unmigrated_database(cli_env: None) -> None:
    for command in (["api", "--port", "0"], ["keys", "list"]):
        code, _, err = run(*command)
        assert code == 1
        assert "run `shadoweval db upgrade`" in err


def test_db_upgrade_then_key_lifecycle(cli_env: None) -> None:
    assert run("db", "upgrade")[0] == 0
    code, out, _ = run("db", "current")
    assert code == 0
    assert f"current: {head_revision()}" in out

    code, out, err = run("keys", "create", "--scope", "ingest", "--scope", "read", "--name", "ci")
    assert code == 0
    key = out.strip()
    prefix = "_".join(key.split("_")[:2])
    assert prefix in err

    code, out, _ = run("keys", "list", "--json")
    listed = json.loads(out)
    assert [(k["prefix"], k["scopes"], k["name"]) for k in listed] == [
        (prefix, ["ingest", "read"], "ci")
    ]
    assert key not in out

    code, out, _ = run("keys", "rotate", prefix)
    assert code == 0
    new_prefix = "_".join(out.strip().split("_")[:2])
    assert run("keys", "revoke", new_prefix)[0] == 0
    _, out, _ = run("keys", "list", "--json")
    assert json.loads(out) == []
    _, out, _ = run("keys", "list", "--all", "--json")
    assert {k["prefix"] for k in json.loads(out)} == {prefix, new_prefix}


def test_bad_scope_and_unknown_prefix_are_clear_errors(cli_env: None) -> None:
    run("db", "upgrade")
    code, _, err = run("keys", "create", "--scope", "root")
    assert code == 2
    assert "ingest, read, operate, admin" in err
    code, _, err = run("keys", "revoke", "sek_nothere")
    assert code == 1
    assert "no API key with prefix sek_nothere" in err


def test_a_misspelt_setting_is_warned_about_at_start(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHADOWEVAL_DAILY_SHADOW_BUDGET_UDS", "5")
    code, _, err = run("db", "upgrade")
    assert code == 0
    assert (
        "SHADOWEVAL_DAILY_SHADOW_BUDGET_UDS is not a shadoweval setting and is ignored; "
        "did you mean SHADOWEVAL_DAILY_SHADOW_BUDGET_USD?" in err
    )
