"""The real dashboard (`shadoweval dashboard`, i.e. `streamlit run`) in headless Chromium.

Each page is loaded against the live, seeded API; the test waits until Streamlit
has finished running the page's script, fails on any exception box shown, and
saves a screenshot per page under the test's tmp dir (or under
$DASHBOARD_SCREENSHOTS_DIR when set). Chromium is Debian's `chromium`, which `.ci/run`
installs before pytest starts; without it the test skips and says why (pytest never
installs software). The browser is driven over the DevTools protocol, no extra package.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from websockets.sync.client import ClientConnection, connect

from shadoweval.config import Settings
from shadoweval.events.models import EventKind
from shadoweval.events.service import record_event
from tests.conftest import Keys, LiveApi, free_port
from tests.integration.test_dashboard_pages import CHEAP, _alert, _seed

PAGES = {
    "": "Is routing paying off?",
    "quality": "Where is quality lost?",
    "calibration": "Is the router still calibrated?",
    "thresholds": "What threshold should I run?",
    "drift": "Has the input changed?",
    "judge": "What did the judge see?",
    "alerts": "What is firing?",
}


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip(
            "headless Chromium is not installed: `.ci/run` installs Debian's `chromium` "
            "(as root, where apt-get exists); elsewhere install it to run this test"
        )
    return found


class Browser:
    """One headless Chromium tab over the DevTools protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == message_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = _chromium()
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                if any(t["type"] == "page" for t in targets):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
            tab = Browser(socket)
            tab.call("Page.enable")
            tab.call(
                "Emulation.setDeviceMetricsOverride",
                width=1400,
                height=2200,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield tab
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def dashboard_url(live_api: LiveApi, keys: Keys, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "SHADOWEVAL_DASHBOARD_API_URL": live_api.url,
        "SHADOWEVAL_DASHBOARD_READ_KEY": keys.read,
        # The test seeds between two passes over the pages: no cached (empty) answers.
        "SHADOWEVAL_DASHBOARD_CACHE_SECONDS": "0",
        "HOME": str(tmp_path),  # Streamlit writes its machine id and config under $HOME
    }
    log = (tmp_path / "dashboard.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "shadoweval", "dashboard", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


_PAGE_STATE = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const heading = document.querySelector('h1');
  return {
    state: app ? app.getAttribute('data-test-script-state') : null,
    title: heading ? heading.innerText : null,
    exceptions: [...document.querySelectorAll('[data-testid="stException"]')]
      .map(e => e.innerText),
    deploy: document.querySelector('[data-testid="stAppDeployButton"]') !== null,
  };
})()"""


def _load(browser: Browser, url: str, title: str) -> dict[str, Any]:
    browser.call("Page.navigate", url=url)
    deadline = time.monotonic() + 90
    state: dict[str, Any] = {}
    settled = 0
    while time.monotonic() < deadline:
        state = browser.evaluate(_PAGE_STATE) or {}
        # Finished running and showing this page's heading, twice in a row (a rerun may follow).
        done = state.get("state") == "notRunning" and title in (state.get("title") or "")
        settled = settled + 1 if done else 0
        if settled >= 2 or state.get("exceptions"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"{url} did not finish rendering: {state}")


def _alert_and_model_change(engine: Engine) -> None:
    """A firing alert and a model change, so the alerts page's timeline is in the shots."""
    with Session(engine) as session:
        fired = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
        session.add(_alert(pending_since_ts=fired - timedelta(minutes=3), fired_ts=fired))
        session.commit()
        record_event(
            session,
            kind=EventKind.MODEL_CHANGE,
            dedup_key="support-router|cheap|claude-haiku-4-6",
            ts=fired + timedelta(minutes=5),
            router="support-router",
            details={"tier": "cheap", "model": "claude-haiku-4-6", "previous_models": [CHEAP]},
        )
        session.commit()


def test_every_page_renders_in_chromium_without_an_exception(
    browser: Browser,
    dashboard_url: str,
    engine: Engine,
    base_settings: Settings,
    tmp_path: Path,
) -> None:
    screenshots = Path(os.environ.get("DASHBOARD_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    screenshots.mkdir(parents=True, exist_ok=True)
    saved: list[str] = []
    for seeded in (False, True):
        if seeded:
            _seed(engine, base_settings)
            _alert_and_model_change(engine)
        for path, title in PAGES.items():
            state = _load(browser, f"{dashboard_url}/{path}", title)
            assert not state["exceptions"], (path, state["exceptions"])
            assert not state["deploy"], "Streamlit's Deploy toolbar is shown"
            shot = browser.call("Page.captureScreenshot", format="png")
            name = f"{'seeded' if seeded else 'empty'}-{path or 'routing'}.png"
            (screenshots / name).write_bytes(base64.b64decode(shot["data"]))
            saved.append(name)
    assert len(set(saved)) == 2 * len(PAGES)
    assert all((screenshots / name).stat().st_size > 10_000 for name in saved)
    print(f"screenshots: {screenshots}")
