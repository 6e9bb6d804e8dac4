"""The demo's local alert receiver: a webhook endpoint that checks signatures and logs each alert.

It stands where an on-call tool would: the outbox delivers the generic webhook
(and the retrain trigger) here over real HTTP. Each delivery becomes one JSON
line in the log file, with whether its HMAC signature verified (and by which scheme),
so the demo can print what arrived and the demo test can assert on it.

It checks the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
`webhook-signature`) when they are present, else the deprecated `X-Shadoweval-*` pair
the outbox still sends for one release.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Shadoweval-Signature"  # deprecated: kept for one release
TIMESTAMP_HEADER = "X-Shadoweval-Timestamp"  # deprecated: kept for one release
STANDARD_SIGNATURE_HEADER = "webhook-signature"


def verify_request(secret: str, headers: Mapping[str, str], body: bytes) -> tuple[bool, str]:
    """(verified, scheme): Standard Webhooks when its signature header is present, else the
    legacy `X-Shadoweval-*` pair. A request with neither fails."""
    from shadoweval.alerts.channels import verify_signature, verify_standard_signature

    lowered = {name.lower(): value for name, value in headers.items()}
    now = time.time()
    if STANDARD_SIGNATURE_HEADER in lowered:
        return verify_standard_signature(secret, lowered, body, now=now), "standard-webhooks"
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    return verify_signature(secret, timestamp, signature, body, now=now), "x-shadoweval"


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        verified, scheme = verify_request(self.server.secret, dict(self.headers.items()), body)
        try:
            payload: Any = json.loads(body or b"null")
        except ValueError:
            payload = body.decode("utf-8", "replace")
        entry = {
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "path": self.path,
            "signature_verified": verified,
            "signature_scheme": scheme,
            "payload": payload,
        }
        self.server.record(entry)
        # A bad signature is refused like a real receiver would, so the outbox sees a failure.
        self.send_response(401 if verified is False else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("receiver: " + format, *args)


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: str, log_path: Path) -> None:
        super().__init__(address, _Handler)
        self.secret = secret
        self.log_path = log_path
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock, self.log_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")


@contextmanager
def run_receiver(
    *, secret: str, log_path: Path, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve the receiver in a thread for the duration of the block; yields its base URL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    server = _ReceiverServer((host, port), secret, log_path)
    thread = threading.Thread(target=server.serve_forever, name="alert-receiver", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def read_log(log_path: Path) -> list[dict[str, Any]]:
    """Every delivery the receiver logged, oldest first."""
    if not log_path.exists():
        return []
    lines = log_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def describe(entry: dict[str, Any]) -> str:
    """One line for the terminal: when, what, and whether the signature held."""
    payload = entry.get("payload")
    title = ""
    if isinstance(payload, dict):
        title = str(payload.get("title") or payload.get("kind") or payload.get("event") or "")
    check = {True: "signature ok", False: "BAD SIGNATURE", None: "signature not checked"}[
        entry.get("signature_verified")
    ]
    return f"{entry.get('received_at')}  {entry.get('path')}  {title}  ({check})"
