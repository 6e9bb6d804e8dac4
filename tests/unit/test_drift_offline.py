"""The drift job phones nowhere: importing and running Evidently opens no outbound connection.

Run in a fresh interpreter, so Evidently is imported there for the first time (import-time
telemetry would be missed in this process, where another test may have imported it), with
DO_NOT_TRACK unset, so the opt-out checked is the one shadoweval sets itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import ipaddress, json, socket

attempts = []

def _record(address):
    host = address[0] if isinstance(address, tuple) else address
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    attempts.append(str(address))

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _record(address)
    return _connect(self, address)

def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _record(address)
    return _connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):  # a DNS lookup is already a message out
    _record(host)
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = getaddrinfo

import numpy as np
from shadoweval.stats import drift

rng = np.random.default_rng(7)
reference = {"score": rng.normal(0, 1, 200), "topic": rng.choice(["a", "b"], 200)}
current = {"score": rng.normal(0.5, 1, 200), "topic": rng.choice(["a", "b"], 200)}
result = drift.feature_drift(reference, current, include_html=True)

import evidently.telemetry  # what Evidently's own services would log with

print(json.dumps({
    "attempts": attempts,
    "columns": sorted(c.column for c in result.columns),
    "html_bytes": len(result.report_html),
    "telemetry_enabled": evidently.telemetry.event_logger.is_enabled(),
}))
"""


def test_running_drift_opens_no_outbound_connection_and_disables_evidently_telemetry() -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DO_NOT_TRACK", "EVIDENTLY_DISABLE_TELEMETRY")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["columns"] == ["score", "topic"]  # the drift code really ran, HTML and all
    assert report["html_bytes"] > 0
    assert report["attempts"] == []
    assert report["telemetry_enabled"] is False
