"""Settings: defaults that run the demo, environment overrides, URL normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shadoweval.config import Settings, unknown_environment_variables


def test_default_is_sqlite_under_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHADOWEVAL_DATABASE_URL", raising=False)
    monkeypatch.delenv("SHADOWEVAL_DATA_DIR", raising=False)
    assert Settings().resolved_database_url == "sqlite:///.shadoweval/shadoweval.db"


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_normalisation(given: str, resolved: str) -> None:
    assert Settings(database_url=given).resolved_database_url == resolved


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHADOWEVAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHADOWEVAL_STORE_PAYLOADS", "all")
    monkeypatch.setenv("SHADOWEVAL_SAMPLING_RATE_BY_TIER", '{"cheap": 0.5}')
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.store_payloads == "all"
    assert settings.sampling_rate_by_tier == {"cheap": 0.5}


def test_invalid_settings_say_which(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOWEVAL_SAMPLING_RATE_BY_TIER", '{"cheap": 1.5}')
    with pytest.raises(ValidationError, match="cheap"):
        Settings()
    monkeypatch.delenv("SHADOWEVAL_SAMPLING_RATE_BY_TIER")
    monkeypatch.setenv("SHADOWEVAL_STORE_PAYLOADS", "sometimes")
    with pytest.raises(ValidationError, match="store_payloads"):
        Settings()


@pytest.mark.parametrize(("env", "expected"), [("0.2", 0.2), ("", None), ("none", None)])
def test_judge_temperature_can_be_left_to_the_model(
    monkeypatch: pytest.MonkeyPatch, env: str, expected: float | None
) -> None:
    monkeypatch.setenv("SHADOWEVAL_JUDGE_TEMPERATURE", env)
    assert Settings().judge_temperature == expected


def test_misspelt_variables_are_named_with_the_closest_setting() -> None:
    environ = {
        "SHADOWEVAL_DATABSE_URL": "postgresql://x",  # misspelt
        "SHADOWEVAL_DATABASE_URL": "postgresql://y",
        "SHADOWEVAL_INGEST_KEY": "k",  # the client's own
        "SHADOWEVAL_ZZZ": "1",
        "PATH": "/bin",
    }
    assert unknown_environment_variables(environ) == [
        ("SHADOWEVAL_DATABSE_URL", "SHADOWEVAL_DATABASE_URL"),
        ("SHADOWEVAL_ZZZ", None),
    ]
