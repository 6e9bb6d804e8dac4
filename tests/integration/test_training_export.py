"""Training export over seeded verdicts: every format checked by hand; CLI and HTTP agree."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from shadoweval.cli import app
from shadoweval.config import Settings, get_settings
from shadoweval.ingest.models import Decision, DecisionPayload
from shadoweval.judge.models import Outcome, Verdict, VerdictStatus
from shadoweval.pool import export
from shadoweval.shadow.models import RunKind, ShadowRun, WorkStatus
from tests.conftest import Keys, LiveApi

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SINCE = "2026-11-27T00:00:00Z"


def seed_pair(
    session: Session,
    request_id: str,
    *,
    minutes: int,
    direction: str = "forward",
    outcome: Outcome = Outcome.TIE,
    pi: float = 0.5,
    status: VerdictStatus = VerdictStatus.DONE,
    router: str = "r",
    scores: tuple[float, float] = (6.0, 7.0),
) -> None:
    """A decision with its payload, its shadow run and a verdict; costs are made up but fixed."""
    ts = T0 + timedelta(minutes=minutes)
    forward = direction == "forward"
    routed_tier, routed_model = ("cheap", "haiku") if forward else ("strong", "sonnet")
    d = Decision(
        router=router,
        request_id=request_id,
        router_version="v3",
        ts=ts,
        received_at=ts,
        tier=routed_tier,
        chosen_model=routed_model,
        served_model=routed_model,
        segment={"topic": "billing", "language": "en"},
        segment_value="billing",
        inclusion_probability=pi,
        sampled=True,
        router_score=0.3 if forward else 0.8,
        threshold=0.5,
        cost_usd=0.001 if forward else 0.01,
        payload_stored=True,
    )
    session.add(d)
    session.flush()
    assert d.id is not None
    session.add(
        DecisionPayload(
            decision_id=d.id,
            request={
                "messages": [
                    {"role": "user", "content": f"first {request_id}"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "text", "text": f"then {request_id}"}]},
                ],
                "system": "be brief",
            },
            response={"text": f"routed answer {request_id}"},
            stored_at=ts,
        )
    )
    session.add(
        ShadowRun(
            decision_id=d.id,
            kind=RunKind.SHADOW,
            direction=direction,
            routed_tier=routed_tier,
            target_tier="strong" if forward else "cheap",
            target_model="sonnet" if forward else "haiku",
            ts=ts,
            status=WorkStatus.SUCCEEDED,
            next_attempt_at=ts,
            created_at=ts,
            response_text=f"shadow answer {request_id}",
            cost_usd=0.02 if forward else 0.002,
        )
    )
    strong_needed = int(outcome == Outcome.STRONGER_WINS)
    session.add(
        Verdict(
            decision_id=d.id,
            router=router,
            request_id=request_id,
            ts=ts,
            segment_value="billing",
            routed_tier=routed_tier,
            direction=direction,
            inclusion_probability=pi,
            router_score=d.router_score,
            cheaper_tier="cheap",
            stronger_tier="strong",
            cheaper_model="haiku",
            stronger_model="sonnet",
            judge_key="judge#abc",
            judge_model="judge",
            prompt_hash="abc",
            status=status,
            next_attempt_at=ts,
            created_at=ts,
            order_cheaper_first={"winner": "B", "score_a": 6, "score_b": 7},
            order_stronger_first={"winner": "A", "score_a": 7, "score_b": 6},
            outcome=outcome if status == VerdictStatus.DONE else None,
            consistent=outcome != Outcome.INCONSISTENT,
            strong_needed=strong_needed if status == VerdictStatus.DONE else None,
            cheap_acceptable=1 - strong_needed if status == VerdictStatus.DONE else None,
            score_cheaper=scores[0],
            score_stronger=scores[1],
            score_delta=scores[1] - scores[0],
        )
    )


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    with Session(engine) as session:
        seed_pair(session, "a", minutes=0, outcome=Outcome.STRONGER_WINS, pi=0.25)
        seed_pair(session, "b", minutes=1, outcome=Outcome.CHEAPER_WINS, pi=0.5, scores=(8, 5))
        seed_pair(session, "c", minutes=2, direction="reverse", outcome=Outcome.TIE, pi=0.1)
        seed_pair(session, "d", minutes=3, outcome=Outcome.INCONSISTENT, pi=0.5)
        # Not exported: a judge error, another router, and a pair before `since`.
        seed_pair(session, "e", minutes=4, status=VerdictStatus.ERROR)
        seed_pair(session, "f", minutes=5, router="other")
        seed_pair(session, "g", minutes=-60 * 24)
        session.commit()
    return engine


def test_jsonl_carries_every_field(seeded: Engine) -> None:
    pairs = list(
        export.iter_pairs(
            engine=seeded,
            query=export.ExportQuery(router="r", since=datetime.fromisoformat(SINCE)),
            page_size=2,  # several keyset pages
        )
    )

    assert [p["request_id"] for p in pairs] == ["a", "b", "c", "d"]
    a, b, c, _d = pairs
    assert a["weight"] == pytest.approx(4.0)
    assert a["inclusion_probability"] == 0.25
    assert b["weight"] == pytest.approx(2.0)
    assert c["weight"] == pytest.approx(10.0)
    assert a["id"] == "r:a"
    assert a["prompt"] == "then a"  # the last user turn, as RouteLLM's routers read it
    assert a["system"] == "be brief"
    assert len(a["messages"]) == 3
    assert a["segment"] == {"topic": "billing", "language": "en"}
    assert a["router_version"] == "v3"
    assert a["threshold"] == 0.5
    assert a["router_score"] == 0.3
    # Forward: the routed (cheap) answer is the cheaper one; the shadow is the stronger.
    assert (a["cheaper_answer"], a["stronger_answer"]) == ("routed answer a", "shadow answer a")
    assert (a["cost_cheaper_usd"], a["cost_stronger_usd"]) == (0.001, 0.02)
    # Reverse: the routed answer came from the strong tier.
    assert (c["cheaper_answer"], c["stronger_answer"]) == ("shadow answer c", "routed answer c")
    assert (c["cost_cheaper_usd"], c["cost_stronger_usd"]) == (0.002, 0.01)
    assert [p["strong_needed"] for p in pairs] == [1, 0, 0, 0]
    assert [p["winner"] for p in pairs] == ["model_b", "model_a", "tie", "tie"]
    assert a["judge"]["order_cheaper_first"]["winner"] == "B"
    assert a["judge"]["order_stronger_first"]["winner"] == "A"
    assert (b["score_cheaper"], b["score_stronger"]) == (8, 5)


def rows_of(text: str, export_format: str) -> list[Any]:
    if export_format == "notdiamond":
        return list(csv.reader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines()]


def test_routellm_battle_columns_follow_the_labels(seeded: Engine) -> None:
    text = "".join(
        export.export_lines(
            engine=seeded,
            query=export.ExportQuery(router="r", since=datetime.fromisoformat(SINCE)),
            export_format=export.ExportFormat.ROUTELLM,
            provider_for=lambda model: "anthropic",
        )
    )
    rows = rows_of(text, "routellm")

    assert [(r["id"], r["winner_model_a"], r["winner_model_b"], r["winner_tie"]) for r in rows] == [
        ("r:a", 0, 1, 0),
        ("r:b", 1, 0, 0),
        ("r:c", 0, 0, 1),
        ("r:d", 0, 0, 1),
    ]
    first = rows[0]
    assert (first["model_a"], first["model_b"]) == ("haiku", "sonnet")
    assert (first["response_a"], first["response_b"]) == ("routed answer a", "shadow answer a")
    assert json.loads(first["prompt"]) == ["first a", "then a"]
    assert first["weight"] == pytest.approx(4.0)


def test_notdiamond_csv_has_a_response_and_score_column_per_model(seeded: Engine) -> None:
    text = "".join(
        export.export_lines(
            engine=seeded,
            query=export.ExportQuery(router="r", since=datetime.fromisoformat(SINCE)),
            export_format=export.ExportFormat.NOTDIAMOND,
            provider_for=lambda model: "anthropic",
        )
    )
    header, *rows = rows_of(text, "notdiamond")

    assert header == [
        "prompt",
        "anthropic/haiku/response",
        "anthropic/haiku/score",
        "anthropic/sonnet/response",
        "anthropic/sonnet/score",
    ]
    assert rows[1] == ["then b", "routed answer b", "8.0", "shadow answer b", "5.0"]
    assert rows[2] == ["then c", "shadow answer c", "6.0", "routed answer c", "7.0"]
    assert len(rows) == 4


@pytest.fixture
def cli_on_shared_db(base_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    assert base_settings.database_url is not None
    monkeypatch.setenv("SHADOWEVAL_DATABASE_URL", base_settings.database_url)
    monkeypatch.setenv("SHADOWEVAL_DATA_DIR", str(base_settings.data_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("export_format", ["jsonl", "routellm", "notdiamond"])
def test_cli_and_http_exports_agree(
    seeded: Engine,
    cli_on_shared_db: None,
    live_api: LiveApi,
    keys: Keys,
    tmp_path: Path,
    export_format: str,
) -> None:
    output = tmp_path / f"export.{export_format}"
    result = CliRunner().invoke(
        app,
        [
            "export-training",
            "--router",
            "r",
            "--since",
            SINCE,
            "--format",
            export_format,
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "exported 4 pairs" in result.stderr

    with live_api.client(keys.read) as client:
        response = client.get(
            "/v1/exports/training",
            params={"router": "r", "since": SINCE, "format": export_format},
        )
    assert response.status_code == 200
    expected_type = "text/csv" if export_format == "notdiamond" else "application/x-ndjson"
    assert response.headers["content-type"].startswith(expected_type)
    assert rows_of(response.text, export_format) == rows_of(
        output.read_text(encoding="utf-8"), export_format
    )
    assert len(rows_of(response.text, export_format)) == 4 + (export_format == "notdiamond")


def test_cli_refuses_a_time_without_offset_and_an_unknown_format(cli_on_shared_db: None) -> None:
    runner = CliRunner()
    naive = runner.invoke(app, ["export-training", "--router", "r", "--since", "2026-11-27"])
    unknown = runner.invoke(app, ["export-training", "--router", "r", "--format", "parquet"])
    assert naive.exit_code == 2
    assert "--since" in naive.stderr
    assert unknown.exit_code == 2
    assert "parquet" in unknown.stderr


def test_http_export_rejects_an_unknown_format(live_api: LiveApi, keys: Keys) -> None:
    with live_api.client(keys.read) as client:
        response = client.get("/v1/exports/training", params={"router": "r", "format": "xml"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "format"]
