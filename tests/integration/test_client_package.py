"""The client distribution (`pip install ./client`) installs and works alone.

A fresh venv gets the wheel built from client/ and its dependencies from the machine's
package index; in it the client imports without any of the server's dependencies and
posts a decision to the live API, reading SHADOWEVAL_URL / SHADOWEVAL_INGEST_KEY.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.ingest.models import Decision
from tests.conftest import Keys, LiveApi

CLIENT = Path(__file__).resolve().parents[2] / "client"


def run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# The packaging does not depend on the database: one backend is enough.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_client_installs_alone_and_logs_from_its_environment(
    tmp_path: Path, live_api: LiveApi, keys: Keys, engine: Engine
) -> None:
    # Built from a copy, so the build leaves nothing in the checkout.
    source = tmp_path / "client"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    wheels = tmp_path / "wheels"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        wheels,
        source,
    )
    (wheel,) = wheels.glob("shadoweval_client-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # the running pip installs into it: no ensurepip
    python = env_dir / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel)

    script = tmp_path / "probe.py"
    script.write_text(
        "import importlib.util, json\n"
        "server_side = ['shadoweval', 'streamlit', 'evidently', 'fastapi', 'sqlmodel',\n"
        "               'pandas', 'sqlalchemy', 'uvicorn', 'anthropic', 'openai']\n"
        "present = [n for n in server_side if importlib.util.find_spec(n) is not None]\n"
        "from shadoweval_client import DecisionLogger\n"
        "logger = DecisionLogger()  # SHADOWEVAL_URL, SHADOWEVAL_INGEST_KEY\n"
        "logger.log({'request_id': 'from-venv', 'router': 'alone', 'tier': 'cheap',\n"
        "            'chosen_model': 'm', 'router_score': 0.2, 'threshold': 0.5})\n"
        "flushed = logger.flush(timeout=10)\n"
        "logger.close()\n"
        "print(json.dumps({'present': present, 'flushed': flushed,\n"
        "                  'stored': logger.stats().stored}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    out = run(
        python,
        "-I",  # isolated: neither the checkout nor the test venv is on its path
        script,
        env={**clean, "SHADOWEVAL_URL": live_api.url, "SHADOWEVAL_INGEST_KEY": keys.ingest},
    )
    result = json.loads(out)
    assert result == {"present": [], "flushed": True, "stored": 1}

    installed = run(sys.executable, "-m", "pip", "--python", python, "list", "--format=freeze")
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert "shadoweval-client" in names
    assert not names & {"streamlit", "evidently", "fastapi", "sqlmodel", "pandas", "shadoweval"}

    with Session(engine) as session:
        row = session.scalars(select(Decision).where(Decision.request_id == "from-venv")).one()
    assert (row.router, row.chosen_model, row.router_score) == ("alone", "m", 0.2)
