"""Every dashboard page rendered by Streamlit's AppTest against the live API, empty and seeded.

The seeded numbers are worked out by hand below from four decisions judged by the
simulated provider (real pipeline: ingest → shadow run → two-order judge).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit as st
from sqlalchemy.engine import Engine
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from shadoweval.alerts.models import Alert
from shadoweval.config import Settings
from shadoweval.events.models import EventKind
from shadoweval.events.service import record_event
from shadoweval.providers.simulated import sim_tag, simulate_answer_text
from tests.conftest import Keys, LiveApi, decision
from tests.integration.pipeline.conftest import drain, ingest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = [
    "views/routing.py",
    "views/quality.py",
    "views/calibration.py",
    "views/thresholds.py",
    "views/drift.py",
    "views/judge.py",
    "views/alerts.py",
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
def dashboard_env(monkeypatch: pytest.MonkeyPatch, live_api: LiveApi, keys: Keys) -> Iterator[None]:
    monkeypatch.setenv("SHADOWEVAL_DASHBOARD_API_URL", live_api.url)
    monkeypatch.setenv("SHADOWEVAL_DASHBOARD_READ_KEY", keys.read)
    monkeypatch.setenv("SHADOWEVAL_DASHBOARD_OPERATE_KEY", keys.operate)
    monkeypatch.delenv("SHADOWEVAL_USE_SIMULATED_PROVIDER", raising=False)
    # The dashboard's API answers are cached per process; the live API is shared by tests.
    st.cache_data.clear()
    yield
    st.cache_data.clear()


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of every request any httpx client in this process sends (the dashboard's)."""
    calls: list[str] = []
    send = httpx.Client.send

    def counting(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        calls.append(request.url.path)
        return send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", counting)
    return calls


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
    assert pages["views/routing.py"].title[0].value == "Is routing paying off?"
    assert "No decisions yet" in _texts(pages["views/routing.py"])
    assert "No judged pairs yet" in _texts(pages["views/quality.py"])
    assert "No calibration labels yet" in _texts(pages["views/calibration.py"])
    assert "No drift reports yet" in _texts(pages["views/drift.py"])
    assert "No judged pairs" in _texts(pages["views/judge.py"])
    alerts = _texts(pages["views/alerts.py"])
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

    routing = pages["views/routing.py"]
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
    # The break-even banner counts what monitoring the router cost: savings against
    # always-strong, 4 × (0.007 − 0.00325) = $0.0150, less the shadow and judge spend.
    banner = " ".join(m.value for m in [*routing.success, *routing.error, *routing.warning])
    assert "net of monitoring" in banner.lower()
    assert "savings against always-strong $0.0150" in banner
    assert "− monitoring $" in banner
    # Tables name units, not API fields; shares are percentages ("53.6 %", never 0.536).
    headers = [str(c) for frame in routing.dataframe for c in frame.value.columns]
    assert "savings rate (%)" in headers
    assert not [h for h in headers if "_" in h], headers
    assert "53.6 %" in _cells(routing)
    # Tier mix as bars spanning their bucket, and the strong share with its interval.
    specs = [str(c.proto) for c in routing.get("vega_lite_chart")]
    assert any("bucket end" in spec for spec in specs)
    assert any("strong share (%)" in spec for spec in specs)

    quality = _texts(pages["views/quality.py"])
    # One harmful pair of three cheap-routed ones, π = 1.
    assert "**billing** — harm rate 33.3 % (95 % CI" in quality
    assert "n = 3)" in quality
    assert "watching: no rise seen in 3 labels" in quality
    # The segment's chart, in %, draws the detector's baseline (1 harm in 3 labels); no harm
    # rate over the next 50 labels could fire against 3 labels, and the page says so.
    (harm_chart,) = [str(c.proto) for c in pages["views/quality.py"].get("vega_lite_chart")]
    assert "harm rate (% of judged pairs, 95 % CI)" in harm_chart
    assert "baseline 33.3 % (3 labels)" in harm_chart
    assert "No alarm line yet: even 50 harmful labels in a row would not fire" in quality

    calibration = pages["views/calibration.py"]
    figures = {m.label: m.value for m in calibration.metric}
    # Four labels (three forward, one reverse): scores 0.4, 0.1, 0.2, 0.8 against 1, 0, 0, 0:
    # Brier = (0.36 + 0.01 + 0.04 + 0.64) / 4 = 0.2625.
    assert figures["Labels (n)"] == "4"
    assert figures["Brier score"] == "0.2625"
    # The headline names the window it covers.
    assert "Window shown: all decision time. Over its 4 labels" in _texts(calibration)
    assert not {"None", "nan", ""} & set(_cells(calibration))

    judge = _texts(pages["views/judge.py"])
    assert "4 pairs judged, 0 errors" in judge
    assert "swap consistency 100.0 % (95 % CI" in judge
    expanders = [e.label for e in pages["views/judge.py"].expander]
    assert len(expanders) == 4
    assert all(label.startswith("SIMULATED · billing") for label in expanders)
    assert "SIMULATED · billing · d1 · stronger wins · strong needed" in expanders
    assert not any("None" in label for label in expanders)
    # Swap consistency and position-A preference over decision time; segments as a dropdown.
    judge_charts = [str(c.proto) for c in pages["views/judge.py"].get("vega_lite_chart")]
    assert any("swap consistency (%)" in spec for spec in judge_charts)
    assert any("no position bias (50 %)" in spec for spec in judge_charts)
    assert pages["views/judge.py"].selectbox(key="judge_segment").options == ["any", "billing"]
    # The hidden quality tags (of the request and of each answer) are never shown.
    assert "shadoweval-sim" not in judge
    answers = [t.value for t in pages["views/judge.py"].text]
    assert answers
    assert not [a for a in answers if "shadoweval-sim" in a]
    # Filtering by outcome keeps the one pair the stronger answer won.
    judge_page = pages["views/judge.py"]
    judge_page.selectbox(key="judge_outcome").set_value("stronger_wins").run()
    assert [e.label.split(" · ")[2] for e in judge_page.expander] == ["d1"]

    alerts = _texts(pages["views/alerts.py"])
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
    page.switch_page("views/alerts.py").run()
    assert not page.exception
    assert page.expander[0].label == f"#{alert.id} · critical · [alert] harm rate up in billing"
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
    page.switch_page("views/quality.py").run()

    assert not page.exception
    assert page.title[0].value == "Where is quality lost?"
    assert page.selectbox(key="router").options == ["other-router", "support-router"]
    assert page.selectbox(key="router").value == "support-router"
    assert sorted(page.selectbox(key="quality_segment").options) == ["billing", "shipping"]
    assert page.selectbox(key="quality_segment").value == "shipping"
    # The reader's own choice afterwards sticks, though the URL still carries the link.
    page.selectbox(key="quality_segment").set_value("billing").run()
    assert page.selectbox(key="quality_segment").value == "billing"
    page.selectbox(key="router").set_value("other-router").run()
    assert page.selectbox(key="router").value == "other-router"
    # The sidebar's router is carried over to the next page.
    page.switch_page("views/routing.py").run()
    assert page.selectbox(key="router").value == "other-router"


@pytest.mark.usefixtures("dashboard_env")
def test_the_quality_page_opens_on_the_riskiest_segment(
    engine: Engine, base_settings: Settings
) -> None:
    # legal: both cheap-routed pairs harmful; billing (sorted first by name): one in three.
    legal = []
    for request_id in ("l1", "l2"):
        row = _seeded(request_id, "cheap", 0.3, cheap_q=0.2, strong_q=0.9)
        row["segment"] = {"topic": "legal", "language": "en"}
        legal.append(row)
    _seed(engine, base_settings, legal)
    page = AppTest.from_file(str(APP), default_timeout=90)
    page.run()
    page.switch_page("views/quality.py").run()
    assert not page.exception
    chosen = page.selectbox(key="quality_segment")
    assert chosen.options[0] == "legal"
    assert chosen.value == "legal"
    harm_lines = [m.value for m in page.markdown if "— harm rate" in m.value]
    assert harm_lines[0].startswith("**legal** — harm rate 100.0 %")


@pytest.mark.usefixtures("dashboard_env")
def test_calibration_says_which_window_it_shows_when_a_model_change_empties_the_default(
    engine: Engine, base_settings: Settings, session: Session
) -> None:
    _seed(engine, base_settings)
    # A model change after every label: the API's default window (since the change) is empty.
    record_event(
        session,
        kind=EventKind.MODEL_CHANGE,
        dedup_key="support-router|cheap|claude-haiku-4-6",
        ts=datetime.now(UTC),
        router="support-router",
        details={"tier": "cheap", "model": "claude-haiku-4-6", "previous_models": [CHEAP]},
    )
    session.commit()
    page = AppTest.from_file(str(APP), default_timeout=90)
    page.run()
    page.switch_page("views/calibration.py").run()
    assert not page.exception
    text = _texts(page)
    assert "No labels since the router's latest model change" in text
    assert "No calibration labels yet" not in text
    assert {m.label: m.value for m in page.metric}["Labels (n)"] == "4"
    assert "Window shown: all decision time (decision time 2026-11-27" in text


@pytest.mark.usefixtures("dashboard_env")
def test_a_link_to_a_router_without_data_says_so(engine: Engine, base_settings: Settings) -> None:
    _seed(engine, base_settings)
    page = AppTest.from_file(str(APP), default_timeout=90)
    page.query_params["router"] = "gone-router"
    page.switch_page("views/quality.py").run()

    assert not page.exception
    assert page.selectbox(key="router").value == "support-router"
    assert "The link's router 'gone-router' has no data here" in _texts(page)


def _alert(**fields: Any) -> Alert:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "rule": "quality_drop",
        "kind": "quality_drop",
        "state": "firing",
        "level": "alert",
        "severity": "critical",
        "router": "support-router",
        "segment": "legal",
        "title": "[alert] harm rate up in legal",
        "summary": "legal: harm 10 % → 24 % since 09:07 (95 % CI 17–32 %), 48 labels",
        "numbers": {"harm_rate": 0.24, "labels": 48},
        "started_at": now,
        "updated_at": now,
        **fields,
    }
    key = f"{values['rule']}|{values['router']}|{values['segment']}"
    return Alert(dedup_key=key, open_key=key if values["state"] != "resolved" else None, **values)


def _cells(app: AppTest) -> list[str]:
    return [str(v) for frame in app.dataframe for v in frame.value.to_numpy().ravel()]


@pytest.mark.usefixtures("dashboard_env")
def test_the_alerts_page_leads_with_what_fires_and_draws_a_timeline_without_none(
    session: Session,
) -> None:
    fired = datetime(2026, 3, 2, 9, 7, tzinfo=UTC)
    detail = "change-point statistic G/h 1.04 (alarm at 1), 48 labels since the change"
    session.add(
        _alert(
            pending_since_ts=fired - timedelta(minutes=4),
            fired_ts=fired,
            summary="legal: harm 10 % → 24 % since 09:07 (95 % CI 17–32 %), 48 labels\n" + detail,
        )
    )
    session.add(
        _alert(
            rule="calibration_drift",
            kind="calibration_drift",
            segment=None,  # a router-wide alert: no segment, never acknowledged or silenced
            severity="warning",
            state="resolved",
            title="calibration drifted",
            summary="support-router: Brier 0.12 → 0.19 since 08:30, 300 labels",
            fired_ts=fired - timedelta(hours=1),
            resolved_ts=fired - timedelta(minutes=30),
        )
    )
    session.commit()
    record_event(
        session,
        kind=EventKind.MODEL_CHANGE,
        dedup_key="support-router|cheap|claude-haiku-4-6",
        ts=fired + timedelta(minutes=2),
        router="support-router",
        details={"tier": "cheap", "model": "claude-haiku-4-6", "previous_models": [CHEAP]},
    )
    session.commit()

    page = AppTest.from_file(str(APP), default_timeout=90)
    page.run()
    page.switch_page("views/alerts.py").run()
    assert not page.exception

    # The first thing on the page: which segment, what changed, since when (decision time).
    headline = page.error[0].value
    assert headline.startswith("1 alert firing.")
    assert "**legal** — legal: harm 10 % → 24 % since 09:07" in headline
    assert "(since 2026-03-02 09:03 UTC)" in headline
    # The timeline: both alerts as bars over decision time, the model change as a labelled rule.
    charts = page.get("vega_lite_chart")
    assert len(charts) == 1
    chart = str(charts[0].proto)
    assert "model change: claude-haiku-4-6" in chart
    assert "quality_drop (support-router" in chart
    assert "calibration_drift (support-router)" in chart
    # Every table: no literal "None", no empty cells; model lists joined, not a list repr.
    page.radio(key="alert_state").set_value("all").run()
    cells = _cells(page)
    assert cells
    assert not {"None", "nan", "NaT", ""} & set(cells)
    assert "—" in cells  # the router-wide alert's segment and the unacknowledged alerts
    assert "2026-03-02 09:09:00 UTC" in cells  # the model change, in decision time
    # The table shows the summary's one-line sentence; the statistician's detail is on expand.
    assert "legal: harm 10 % → 24 % since 09:07 (95 % CI 17–32 %), 48 labels" in cells
    assert not [c for c in cells if detail in c]
    assert detail in [t.value for t in page.text]
    assert any("claude-haiku-4-5 → **claude-haiku-4-6**" in m.value for m in page.markdown)
    assert not any("['" in m.value for m in page.markdown)


@pytest.mark.usefixtures("dashboard_env")
def test_a_rerun_within_the_cache_time_asks_the_api_nothing(
    engine: Engine, base_settings: Settings, api_calls: list[str]
) -> None:
    _seed(engine, base_settings)
    page = AppTest.from_file(str(APP), default_timeout=90)
    page.run()
    page.switch_page("views/routing.py").run()
    assert not page.exception
    first = len(api_calls)
    assert first > 0
    started = time.perf_counter()
    page.run()
    warm = time.perf_counter() - started
    assert not page.exception
    assert api_calls[first:] == []  # every answer came from the cache
    print(f"routing page, warm rerun: {warm:.2f} s")
    # Another page reuses what the first read (routers, decisions): it asks only for its own.
    page.switch_page("views/alerts.py").run()
    assert "/v1/segments" not in api_calls[first:]
    # "Refresh now" forgets the answers: the next run reads the API again.
    before = len(api_calls)
    page.button(key="refresh_now").click().run()
    assert "/v1/segments" in api_calls[before:]
    # The sidebar offers auto-refresh, on by default.
    assert page.toggle(key="auto_refresh").value is True


@pytest.mark.usefixtures("dashboard_env")
def test_windows_end_at_the_routers_newest_decision_not_the_wall_clock(
    engine: Engine, base_settings: Settings
) -> None:
    # The seeded decisions are stamped 2026-11-27, days before the wall clock: a replayed
    # history. "Last 24 hours" is the 24 decision hours before the newest decision.
    _seed(engine, base_settings)
    app = AppTest.from_file(str(APP), default_timeout=90)
    app.run()
    app.switch_page("views/routing.py").run()
    app.selectbox(key="window").select("last 24 hours").run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="window").value == "last 24 hours"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics.get("Realized cost per request (USD)") == "$0.00325", _texts(app)
