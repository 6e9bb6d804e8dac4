"""Every dashboard page rendered by Streamlit's AppTest against the live API, empty and seeded.

The seeded numbers are worked out by hand below from four decisions judged by the
simulated provider (real pipeline: ingest → shadow run → two-order judge).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from shadoweval.alerts.models import Alert
from shadoweval.config import Settings
from shadoweval.providers.simulated import sim_tag, simulate_answer_text
from tests.conftest import Keys, LiveApi, decision
from tests.integration.pipeline.conftest import drain, ingest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = [
    "pages/routing.py",
    "pages/quality.py",
    "pages/calibration.py",
    "pages/drift.py",
    "pages/judge.py",
    "pages/alerts.py",
]
CHEAP, STRONG = "claude-haiku-4-5", "claude-sonnet-4-5"


def _seeded(
    request_id: str, tier: str, score: float, cheap_q: float, strong_q: float
) -> dict[str, Any]:
    model = CHEAP if tier == "cheap" else STRONG
    content = f"question {request_id}\n" + sim_tag(qualities={CHEAP: cheap_q, STRONG: strong_q})
    messages = [{"role": "user", "content": content}]
    return decision(
        request_id,
        tier=tier,
        chosen_model=model,
        router_score=score,
        candidates=[
            {"model": CHEAP, "tier": "cheap", "provider": "anthropic"},
            {"model": STRONG, "tier": "strong", "provider": "anthropic"},
        ],
        request={"messages": messages},
        response={"text": simulate_answer_text(model, messages), "finish_reason": "stop"},
        usage={"input_tokens": 1000, "output_tokens": 200},
        cost_usd=0.001 if tier == "cheap" else 0.01,
        segment={"topic": "billing", "language": "en"},
    )


def _seed(engine: Engine, base_settings: Settings, extra: Sequence[dict[str, Any]] = ()) -> None:
    settings = base_settings.model_copy(
        update={
            "use_simulated_provider": True,
            "sampling_rate_by_tier": {"cheap": 1.0, "strong": 1.0},
            "daily_shadow_budget_usd": 1000.0,
        }
    )
    ingest(
        engine,
        settings,
        [
            # The strong answer is far better: strong_needed = 1 (harm).
            _seeded("d1", "cheap", 0.4, cheap_q=0.3, strong_q=0.9),
            # The cheap answer is better: acceptable.
            _seeded("d2", "cheap", 0.1, cheap_q=0.8, strong_q=0.7),
            _seeded("d3", "cheap", 0.2, cheap_q=0.8, strong_q=0.7),
            # Strong-routed, reverse shadow on cheap: cheap acceptable (missed savings).
            _seeded("d4", "strong", 0.8, cheap_q=0.8, strong_q=0.7),
            *extra,
        ],
    )
    drain(engine, settings)


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, live_api: LiveApi, keys: Keys) -> None:
    monkeypatch.setenv("SHADOWEVAL_DASHBOARD_API_URL", live_api.url)
    monkeypatch.setenv("SHADOWEVAL_DASHBOARD_READ_KEY", keys.read)
    monkeypatch.setenv("SHADOWEVAL_DASHBOARD_OPERATE_KEY", keys.operate)
    monkeypatch.delenv("SHADOWEVAL_USE_SIMULATED_PROVIDER", raising=False)


def _render_all() -> dict[str, AppTest]:
    app = AppTest.from_file(str(APP), default_timeout=90)
    app.run()
    rendered = {}
    for page in PAGES:
        page_app = AppTest.from_file(str(APP), default_timeout=90)
        page_app.run()
        page_app.switch_page(page).run()
        assert not page_app.exception, (page, [e.value for e in page_app.exception])
        rendered[page] = page_app
    return rendered


def _texts(app: AppTest) -> str:
    parts = [m.value for m in app.markdown] + [i.value for i in app.info]
    parts += [w.value for w in app.warning] + [c.value for c in app.caption]
    parts += [s.value for s in app.success] + [e.value for e in app.error]
    parts += [f"{m.label}={m.value}" for m in app.metric]
    return "\n".join(str(p) for p in parts)


@pytest.mark.usefixtures("dashboard_env")
def test_every_page_has_a_clear_empty_state() -> None:
    pages = _render_all()
    assert pages["pages/routing.py"].title[0].value == "Is routing paying off?"
    assert "No decisions yet" in _texts(pages["pages/routing.py"])
    assert "No judged pairs yet" in _texts(pages["pages/quality.py"])
    assert "No calibration labels yet" in _texts(pages["pages/calibration.py"])
    assert "No drift reports yet" in _texts(pages["pages/drift.py"])
    assert "No judged pairs" in _texts(pages["pages/judge.py"])
    alerts = _texts(pages["pages/alerts.py"])
    assert "No events yet" in alerts
    assert "No gate runs yet" in alerts or "does not serve this yet" in alerts
    # Nothing claims to be simulated when the data is not.
    assert not any("SIMULATED" in _texts(p) for p in pages.values())


@pytest.mark.usefixtures("dashboard_env")
def test_pages_show_the_seeded_numbers_with_units_and_intervals(
    engine: Engine, base_settings: Settings
) -> None:
    _seed(engine, base_settings)
    pages = _render_all()

    routing = pages["pages/routing.py"]
    metrics = {m.label: m.value for m in routing.metric}
    # Realized: (3 × 0.001 + 0.01) / 4 = 0.00325 USD per request.
    assert metrics["Realized cost per request (USD)"] == "$0.00325"
    # Always strong: cheap rows repriced at claude-sonnet-4-5 ($3 in / $15 out per Mtok):
    # 1000 × 3e-6 + 200 × 15e-6 = 0.006; (3 × 0.006 + 0.01) / 4 = 0.007 USD per request.
    assert metrics["Always-strong baseline per request (USD)"] == "$0.00700"
    # 1 − 0.00325 / 0.007 = 53.6 %.
    assert metrics["Savings rate vs always strong"] == "53.6 %"
    text = _texts(routing)
    assert "1 of 4" in text  # strong share: one strong-routed decision of four
    assert "95 % CI" in text

    quality = _texts(pages["pages/quality.py"])
    # One harmful pair of three cheap-routed ones, π = 1.
    assert "**billing** — harm rate 33.3 % (95 % CI" in quality
    assert "n = 3)" in quality
    assert "watching: no rise seen in 3 labels" in quality

    calibration = pages["pages/calibration.py"]
    figures = {m.label: m.value for m in calibration.metric}
    # Four labels (three forward, one reverse): scores 0.4, 0.1, 0.2, 0.8 against 1, 0, 0, 0:
    # Brier = (0.36 + 0.01 + 0.04 + 0.64) / 4 = 0.2625.
    assert figures["Labels (n)"] == "4"
    assert figures["Brier score"] == "0.2625"

    judge = _texts(pages["pages/judge.py"])
    assert "4 pairs judged, 0 errors" in judge
    assert "swap consistency 100.0 % (95 % CI" in judge
    expanders = [e.label for e in pages["pages/judge.py"].expander]
    assert len(expanders) == 4
    assert all(label.startswith("SIMULATED · billing") for label in expanders)
    # The hidden quality tag is never shown.
    assert "shadoweval-sim" not in judge
    # Filtering by outcome keeps the one pair the stronger answer won.
    judge_page = pages["pages/judge.py"]
    judge_page.selectbox(key="judge_outcome").set_value("stronger_wins").run()
    assert [e.label.split(" · ")[2] for e in judge_page.expander] == ["d1"]

    alerts = _texts(pages["pages/alerts.py"])
    assert "No events yet" in alerts
    # Simulated verdicts label every page.
    assert all("SIMULATED DATA" in _texts(p) for p in pages.values())


@pytest.mark.usefixtures("dashboard_env")
def test_an_operator_acknowledges_a_firing_alert_from_the_dashboard(
    session: Session, live_api: LiveApi, keys: Keys
) -> None:
    now = datetime.now(UTC)
    alert = Alert(
        rule="quality_drop",
        kind="quality_drop",
        dedup_key="quality_drop|support-router|billing",
        open_key="quality_drop|support-router|billing",
        state="firing",
        level="alert",
        severity="critical",
        router="support-router",
        segment="billing",
        title="[alert] harm rate up in billing",
        summary="harm rate 31 % (95 % CI 22–41 %) against a 10 % baseline",
        numbers={"harm_rate": 0.31, "ci_low": 0.22, "ci_high": 0.41, "labels": 90},
        started_at=now,
        updated_at=now,
    )
    session.add(alert)
    session.commit()
    page = AppTest.from_file(str(APP), default_timeout=90)
    page.run()
    page.switch_page("pages/alerts.py").run()
    assert not page.exception
    assert page.expander[0].label == (f"#{alert.id} [critical] [alert] harm rate up in billing")
    page.button(key=f"ack_{alert.id}").click().run()
    assert "Acknowledged." in [s.value for s in page.success]
    with live_api.client(keys.read) as client:
        shown = client.get(f"/v1/alerts/{alert.id}").json()
    assert shown["acknowledged_at"] is not None
    assert shown["acknowledged_by"]

    page.number_input(key=f"silence_min_{alert.id}").set_value(90).run()
    page.button(key=f"silence_{alert.id}").click().run()
    assert "Silenced for 90 minutes." in [s.value for s in page.success]
    with live_api.client(keys.read) as client:
        silenced = client.get(f"/v1/alerts/{alert.id}").json()
    until = datetime.fromisoformat(silenced["silenced_until"].replace("Z", "+00:00"))
    assert 80 * 60 < (until - now).total_seconds() < 100 * 60


@pytest.mark.usefixtures("dashboard_env")
def test_an_alerts_deep_link_opens_on_its_router_and_segment(
    engine: Engine, base_settings: Settings
) -> None:
    # A second router (sorted first) and a second segment, so the defaults differ from the link.
    shipping = _seeded("d5", "cheap", 0.3, cheap_q=0.8, strong_q=0.7)
    shipping["segment"] = {"topic": "shipping", "language": "en"}
    other = {**_seeded("o1", "cheap", 0.3, cheap_q=0.8, strong_q=0.7), "router": "other-router"}
    _seed(engine, base_settings, [shipping, other])
    # A fresh session opening alerts.service.dashboard_link's URL: /quality?router=R&segment=S.
    page = AppTest.from_file(str(APP), default_timeout=90)
    page.query_params["router"] = "support-router"
    page.query_params["segment"] = "shipping"
    page.switch_page("pages/quality.py").run()

    assert not page.exception
    assert page.title[0].value == "Where is quality lost?"
    assert page.selectbox(key="router").options == ["other-router", "support-router"]
    assert page.selectbox(key="router").value == "support-router"
    assert page.selectbox(key="quality_segment").options == ["billing", "shipping"]
    assert page.selectbox(key="quality_segment").value == "shipping"
    # The reader's own choice afterwards sticks, though the URL still carries the link.
    page.selectbox(key="quality_segment").set_value("billing").run()
    assert page.selectbox(key="quality_segment").value == "billing"
    page.selectbox(key="router").set_value("other-router").run()
    assert page.selectbox(key="router").value == "other-router"
    # The sidebar's router is carried over to the next page.
    page.switch_page("pages/routing.py").run()
    assert page.selectbox(key="router").value == "other-router"


@pytest.mark.usefixtures("dashboard_env")
def test_a_link_to_a_router_without_data_says_so(engine: Engine, base_settings: Settings) -> None:
    _seed(engine, base_settings)
    page = AppTest.from_file(str(APP), default_timeout=90)
    page.query_params["router"] = "gone-router"
    page.switch_page("pages/quality.py").run()

    assert not page.exception
    assert page.selectbox(key="router").value == "support-router"
    assert "The link's router 'gone-router' has no data here" in _texts(page)
