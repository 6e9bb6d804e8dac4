"""The dashboard's only way to the data: the shadoweval HTTP API, with a read (and operate) key.

A route that does not exist on this server (404 on the route itself, e.g. an
older API) or an error is reported as `Unavailable` so a page can show why it is
empty instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from shadoweval.config import Settings


@dataclass(frozen=True)
class Unavailable:
    """Why a figure could not be read: shown on the page in place of the figure."""

    path: str
    reason: str


Result = Any  # the decoded JSON, or Unavailable


@dataclass
class Api:
    url: str
    read_key: str | None
    operate_key: str | None = None
    simulated: bool = False
    timeout_s: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Api:
        settings = settings or Settings()
        return cls(
            url=settings.dashboard_api_url.rstrip("/"),
            read_key=settings.dashboard_read_key,
            operate_key=settings.dashboard_operate_key,
            simulated=settings.use_simulated_provider,
        )

    @property
    def can_operate(self) -> bool:
        return bool(self.operate_key)

    def _client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s)

    def get(self, path: str, **params: Any) -> Result:
        clean = {k: _param(v) for k, v in params.items() if v is not None and v != ""}
        try:
            with self._client(self.read_key) as client:
                response = client.get(path, params=clean)
        except httpx.HTTPError as error:
            return Unavailable(path, f"the API at {self.url} is unreachable ({error})")
        return _decode(path, response)

    def get_text(self, path: str) -> str | Unavailable:
        try:
            with self._client(self.read_key) as client:
                response = client.get(path)
        except httpx.HTTPError as error:
            return Unavailable(path, f"the API at {self.url} is unreachable ({error})")
        if response.status_code != 200:
            return Unavailable(path, f"HTTP {response.status_code}")
        return response.text

    def post(self, path: str, body: dict[str, Any]) -> Result:
        """An operate-scope call (acknowledge, silence)."""
        if not self.operate_key:
            return Unavailable(path, "no operate key configured (SHADOWEVAL_DASHBOARD_OPERATE_KEY)")
        try:
            with self._client(self.operate_key) as client:
                response = client.post(path, json=body)
        except httpx.HTTPError as error:
            return Unavailable(path, f"the API at {self.url} is unreachable ({error})")
        return _decode(path, response)

    def list_all(self, path: str, *, max_items: int, page_size: int = 500, **params: Any) -> Result:
        """Follow `next_cursor` pages until `max_items` (lists are {items, next_cursor})."""
        items: list[Any] = []
        cursor: str | None = None
        while len(items) < max_items:
            page = self.get(path, cursor=cursor, limit=min(page_size, max_items), **params)
            if isinstance(page, Unavailable):
                return items if items else page
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items[:max_items]


def _param(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _decode(path: str, response: httpx.Response) -> Result:
    if response.status_code == 404:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = None
        # FastAPI's own 404 for an unknown route says "Not Found"; ours name the missing row.
        if detail == "Not Found":
            return Unavailable(path, "this API version does not serve this yet")
        return Unavailable(path, f"not found: {detail}")
    if response.status_code in (401, 403):
        return Unavailable(
            path, f"the API refused the dashboard's key (HTTP {response.status_code})"
        )
    if response.status_code >= 400:
        return Unavailable(path, f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def items(result: Result) -> list[Any]:
    """The rows of a list answer ({items: [...]} or a bare list); [] when unavailable."""
    if isinstance(result, Unavailable) or result is None:
        return []
    if isinstance(result, dict):
        return list(result.get("items", []))
    return list(result)


def routers(api: Api) -> list[str]:
    """Routers seen in segments, sampling strata or recent decisions, sorted."""
    names: set[str] = set()
    for row in items(api.get("/v1/segments")):
        names.add(row["router"])
    for row in items(api.get("/v1/sampling")):
        if row.get("router"):
            names.add(row["router"])
    for row in items(api.get("/v1/decisions", order="desc", limit=200)):
        names.add(row["router"])
    return sorted(names)
