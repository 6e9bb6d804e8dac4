"""When the database cannot keep up, ingest answers 503 with Retry-After instead of queueing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from shadoweval.app import create_app
from shadoweval.config import Settings
from shadoweval.ingest import store as ingest_store
from tests.conftest import Keys, decision, serve


def test_ingest_beyond_its_slots_is_told_to_retry(
    base_settings: Settings, engine: Engine, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = base_settings.model_copy(
        update={"ingest_max_concurrent": 1, "ingest_wait_seconds": 0.2}
    )
    app = create_app(settings, engine)
    entered, release = threading.Event(), threading.Event()
    real = ingest_store.store_prepared

    def slow_ingest(**kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return real(**kwargs)

    monkeypatch.setattr(ingest_store, "store_prepared", slow_ingest)
    first: dict[str, Any] = {}
    with serve(app) as api, api.client(keys.ingest) as client:
        worker = threading.Thread(
            target=lambda: first.update(
                response=api.client(keys.ingest).post("/v1/decisions", json=decision("slow"))
            )
        )
        worker.start()
        assert entered.wait(10)
        second = client.post("/v1/decisions", json=decision("turned-away"))
        release.set()
        worker.join(10)
        metrics = client.get("/metrics").text

    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert second.json()["code"] == "overloaded"
    assert first["response"].status_code == 202
    assert 'shadoweval_decisions_rejected_total{reason="overloaded"} 1.0' in metrics


def test_a_busy_database_is_503_not_500(
    base_settings: Settings, engine: Engine, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(**_kwargs: Any) -> Any:
        raise OperationalError("INSERT …", {}, Exception("database is locked"))

    monkeypatch.setattr(ingest_store, "store_prepared", locked)
    with TestClient(create_app(base_settings, engine)) as client:
        response = client.post(
            "/v1/decisions", json=decision("x"), headers={"Authorization": f"Bearer {keys.ingest}"}
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
