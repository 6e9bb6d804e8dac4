"""Replay a recorded decision log through the ingest API, in `ts` order, at any speed.

Everything downstream is keyed on the decision's `ts` (DESIGN.md, Time), so a log
replayed at 100× gives the same windows, snapshots and alarms as the live stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from shadoweval.exceptions import InvalidRequest


@dataclass
class ReplayResult:
    posted: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    unreadable_lines: list[int] = field(default_factory=list)


def read_log(path: Path) -> list[dict[str, Any]]:
    """Decisions of an NDJSON file sorted by `ts` (lines without ts keep file order, first)."""
    decisions: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidRequest(f"{path}:{number} is not JSON: {error.msg}") from error
            if not isinstance(item, dict):
                raise InvalidRequest(f"{path}:{number} is not a JSON object")
            decisions.append((number, item))
    return [item for _, item in sorted(decisions, key=lambda pair: (_ts_key(pair[1]), pair[0]))]


def _ts_key(item: dict[str, Any]) -> float:
    ts = item.get("ts")
    if not isinstance(ts, str):
        return float("-inf")
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("-inf")


def _batches(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def replay(
    *,
    items: list[dict[str, Any]],
    url: str,
    key: str,
    speed: float | None = None,
    batch_size: int = 500,
    on_batch: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayResult:
    """Post `items` in order; with `speed`, wait (Δts / speed) between batches."""
    result = ReplayResult()
    previous_ts: float | None = None
    with httpx.Client(
        base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for batch in _batches(items, batch_size):
            first_ts = _ts_key(batch[0])
            if speed and previous_ts is not None and first_ts > previous_ts > float("-inf"):
                sleep((first_ts - previous_ts) / speed)
            previous_ts = _ts_key(batch[-1])
            body = "\n".join(json.dumps(item) for item in batch)
            for attempt in range(5):
                response = client.post(
                    "/v1/decisions",
                    content=body,
                    headers={"Content-Type": "application/x-ndjson"},
                )
                if response.status_code not in (429, 503) and response.status_code < 500:
                    break
                sleep(float(response.headers.get("retry-after", 2**attempt)))
            if response.status_code not in (202, 422):
                raise InvalidRequest(
                    f"the API answered {response.status_code}: {response.text[:300]}"
                )
            answer = response.json()
            result.posted += len(batch)
            result.stored += answer["stored"]
            result.duplicates += answer["duplicates"]
            result.invalid += answer["invalid"]
            if on_batch is not None:
                on_batch(len(batch))
    return result
