"""`shadoweval demo --reset`: a rerun starts from an empty embedded database, and the reset
never reaches a database the demo did not create."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shadoweval.cli import app
from shadoweval.config import Settings
from shadoweval.demo.run import earlier_run_notice, reset_state

DEMO_STATE = [
    "shadoweval.db",
    "shadoweval.db-wal",
    "shadoweval.db-shm",
    "shadoweval.db-ingest.lock",
    "alerts-received.jsonl",
    "logs/worker.log",
    "logs/dashboard.log",
]


def earlier_run(data_dir: Path) -> None:
    for name in DEMO_STATE:
        path = data_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from an earlier run")
    (data_dir / "notes.txt").write_text("the user's own file")


def test_reset_removes_the_demo_state_and_nothing_else(tmp_path: Path) -> None:
    earlier_run(tmp_path)
    removed = reset_state(Settings(data_dir=tmp_path))
    assert {path.relative_to(tmp_path).as_posix() for path in removed} == {
        *(name for name in DEMO_STATE if not name.startswith("logs/")),
        "logs",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert reset_state(Settings(data_dir=tmp_path)) == []  # a second reset finds nothing


def test_an_explicit_url_to_the_embedded_file_may_be_reset(tmp_path: Path) -> None:
    earlier_run(tmp_path)
    url = f"sqlite:///{tmp_path / 'shadoweval.db'}"
    reset_state(Settings(data_dir=tmp_path, database_url=url))
    assert not (tmp_path / "shadoweval.db").exists()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://shadow:secret@db.internal:5432/shadoweval",
        "sqlite:///{other}/shadoweval.db",
        "sqlite://",
    ],
)
def test_demo_reset_refuses_any_other_database(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, other = tmp_path / "data", tmp_path / "other"
    earlier_run(data_dir)
    monkeypatch.setenv("SHADOWEVAL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("SHADOWEVAL_DATABASE_URL", url.format(other=other))
    result = CliRunner().invoke(app, ["demo", "--reset", "--no-traffic", "--no-dashboard"])
    assert result.exit_code == 2, result.output
    assert "--reset deletes only the demo's embedded SQLite database" in result.output
    assert "secret" not in result.output
    assert (data_dir / "shadoweval.db").exists()
    assert (data_dir / "logs" / "worker.log").exists()


def test_a_rerun_without_reset_says_how_to_start_clean(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path)
    assert earlier_run_notice(embedded, 0) is None
    notice = earlier_run_notice(embedded, 1234)
    assert notice is not None
    assert "1234 decisions" in notice
    assert "shadoweval demo --reset" in notice
    elsewhere = Settings(data_dir=tmp_path, database_url="postgresql://db.internal/shadoweval")
    assert "--reset" not in (earlier_run_notice(elsewhere, 5) or "")


def test_a_rerun_reports_the_earlier_data_and_reset_clears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs of the demo (API only, the server stubbed): the second sees the first one's
    decisions; with --reset it starts from an empty database."""
    from sqlmodel import Session

    from shadoweval.db import create_db_engine
    from shadoweval.demo.run import DemoOptions, run_demo
    from shadoweval.ingest.models import Decision

    monkeypatch.setattr(os, "environ", {**os.environ, "SHADOWEVAL_DATA_DIR": str(tmp_path)})
    monkeypatch.delitem(os.environ, "SHADOWEVAL_DATABASE_URL", raising=False)
    options = DemoOptions(traffic=False, dashboard=False)

    def first_decision(settings: Settings, host: str, port: int) -> None:
        engine = create_db_engine(settings)
        with Session(engine) as session:
            at = datetime(2026, 12, 7, tzinfo=UTC)
            session.add(
                Decision(
                    router="support-router",
                    request_id="r-1",
                    ts=at,
                    received_at=at,
                    tier="cheap",
                    chosen_model="haiku",
                    served_model="haiku",
                    segment={},
                    segment_value="",
                    inclusion_probability=1.0,
                    sampled=False,
                )
            )
            session.commit()
        engine.dispose()

    run_demo(options, serve=first_decision, configure=Settings)
    assert "already holds" not in capsys.readouterr().out
    run_demo(options, serve=lambda *_: None, configure=Settings)
    assert "already holds 1 decisions" in capsys.readouterr().out
    run_demo(replace(options, reset=True), serve=lambda *_: None, configure=Settings)
    out = capsys.readouterr().out
    assert "reset: removed" in out
    assert "already holds" not in out
