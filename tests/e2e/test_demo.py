"""The README's first command: `shadoweval demo` from an empty directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import decision, free_port


def test_demo_serves_the_api_with_a_fresh_ingest_key(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SHADOWEVAL_DATA_DIR": str(tmp_path / "state"),
    }
    env.pop("SHADOWEVAL_DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "shadoweval", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Application startup complete" in line:
                break
        text = "".join(output)
        assert f"http://127.0.0.1:{port}" in text, text
        ingest_key = re.search(r"ingest key:\s+(\S+)", text)
        read_key = re.search(r"read key:\s+(\S+)", text)
        assert ingest_key, text
        assert read_key, text

        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {ingest_key.group(1)}"}
        posted = httpx.post(f"{url}/v1/decisions", json=decision("demo-1"), headers=headers)
        assert posted.status_code == 202, posted.text
        listed = httpx.get(
            f"{url}/v1/decisions", headers={"Authorization": f"Bearer {read_key.group(1)}"}
        )
        assert [d["request_id"] for d in listed.json()["items"]] == ["demo-1"]
        # The embedded default: a SQLite file under the data directory.
        assert (tmp_path / "state" / "shadoweval.db").exists()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    # Ctrl-C stops cleanly: graceful shutdown, the conventional exit status, no traceback.
    log = "".join(output) + (rest or "")
    assert process.returncode in (0, 130), log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
