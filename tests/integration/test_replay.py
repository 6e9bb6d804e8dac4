"""`shadoweval replay`: a recorded log posted in ts order through the real ingest API."""

from __future__ import annotations

import json
import random
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from shadoweval.cli import app
from shadoweval.ingest.models import Decision
from shadoweval.ingest.replay import read_log, replay
from tests.conftest import Keys, LiveApi, decision


def write_log(path: Path, n: int) -> list[dict[str, object]]:
    items = [
        decision(f"rp-{i:03d}", ts=f"2026-11-27T{i // 60:02d}:{i % 60:02d}:00Z") for i in range(n)
    ]
    shuffled = items[:]
    random.Random(4).shuffle(shuffled)
    path.write_text("\n".join(json.dumps(item) for item in shuffled) + "\n")
    return items


def test_replay_posts_in_ts_order_and_is_idempotent(
    tmp_path: Path, live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    log = tmp_path / "decisions.ndjson"
    write_log(log, 130)
    runner = CliRunner()
    args = ["replay", str(log), "--url", live_api.url, "--key", keys.ingest, "--batch-size", "50"]

    first = runner.invoke(app, args)
    again = runner.invoke(app, args)

    assert first.exit_code == 0, first.output
    assert "stored 130, duplicates 0" in first.stdout
    assert "stored 0, duplicates 130" in again.stdout
    with Session(engine) as session:
        rows = session.scalars(select(Decision).order_by(Decision.id)).all()  # type: ignore[arg-type]
    # Posted in ts order: ids follow ts.
    assert [d.request_id for d in rows] == [f"rp-{i:03d}" for i in range(130)]


def test_replay_speed_scales_the_recorded_gaps(
    tmp_path: Path, live_api: LiveApi, keys: Keys
) -> None:
    log = tmp_path / "decisions.ndjson"
    write_log(log, 120)  # one decision a minute for two hours
    slept: list[float] = []
    result = replay(
        items=read_log(log),
        url=live_api.url,
        key=keys.ingest,
        speed=600.0,
        batch_size=60,
        sleep=slept.append,
    )
    assert result.stored == 120
    # Second batch starts 60 min after the first batch's last decision's minute 59: 1 min → 0.1 s.
    assert slept == [60 / 600.0]


def test_replay_refuses_without_a_key_or_with_a_bad_file(tmp_path: Path, live_api: LiveApi) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"request_id": "x"}\nnot json\n')
    runner = CliRunner()
    no_key = runner.invoke(
        app, ["replay", str(bad), "--url", live_api.url], env={"SHADOWEVAL_KEY": ""}
    )
    assert no_key.exit_code == 2
    unreadable = runner.invoke(app, ["replay", str(bad), "--url", live_api.url, "--key", "k"])
    assert unreadable.exit_code == 1
    assert "bad.ndjson:2 is not JSON" in unreadable.stderr
