"""The dashboard's only way to the data: the shadoweval HTTP API, with a read (and operate) key.

A route that does not exist on this server (404 on the route itself, e.g. an
older API) or an error is reported as `Unavailable` so a page can show why it is
empty instead of raising.

Reads share one `httpx.Client` per process and go through one `st.cache_data` wrapper
(`_read`) that keeps each answer for `dashboard_cache_seconds`: a rerun, another page or
another viewer within that time costs the API nothing. Failures are never cached, and an
operate call (acknowledge, silence) or the sidebar's refresh clears the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import streamlit as st

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
    cache_seconds: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Api:
        settings = settings or Settings()
        return cls(
            url=settings.dashboard_api_url.rstrip("/"),
            read_key=settings.dashboard_read_key,
            operate_key=settings.dashboard_operate_key,
            simulated=settings.use_simulated_provider,
            cache_seconds=settings.dashboard_cache_seconds,
        )

    @property
    def can_operate(self) -> bool:
        return bool(self.operate_key)

    def get(self, path: str, **params: Any) -> Result:
        clean = {k: _param(v) for k, v in params.items() if v is not None and v != ""}
        return self._get(path, tuple(sorted(clean.items())), as_text=False)

    def get_text(self, path: str) -> str | Unavailable:
        result: str | Unavailable = self._get(path, (), as_text=True)
        return result

    def _get(self, path: str, params: tuple[tuple[str, Any], ...], *, as_text: bool) -> Any:
        read = _read if self.cache_seconds <= 0 else _cached_read(self.cache_seconds)
        try:
            return read(self.url, self.read_key, path, params, as_text, self.timeout_s)
        except _Uncached as failure:
            return failure.unavailable

    def post(self, path: str, body: dict[str, Any]) -> Result:
        """An operate-scope call (acknowledge, silence)."""
        if not self.operate_key:
            return Unavailable(path, "no operate key configured (SHADOWEVAL_DASHBOARD_OPERATE_KEY)")
        try:
            response = _http_client().post(
                self.url + path, json=body, headers=_auth(self.operate_key), timeout=self.timeout_s
            )
        except httpx.HTTPError as error:
            return Unavailable(path, f"the API at {self.url} is unreachable ({error})")
        clear_cache()  # the next read shows the acknowledgement or silence
        return _decode(path, response)

    def list_all(self, path: str, *, max_items: int, page_size: int = 500, **params: Any) -> Result:
        """Follow `next_cursor` pages until `max_items` (lists are {items, next_cursor}; an
        API that still answers a bare array gives that array)."""
        items: list[Any] = []
        cursor: str | None = None
        while len(items) < max_items:
            page = self.get(path, cursor=cursor, limit=min(page_size, max_items), **params)
            if isinstance(page, Unavailable):
                return items if items else page
            if isinstance(page, list):
                return page[:max_items]
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items[:max_items]

    # The reports and the event log page only when asked (`paged=true`): these read them
    # page by page, as every other list.
    def events(self, **params: Any) -> Result:
        """Events newest first (decision time), up to 2,000."""
        return self.list_all("/v1/events", max_items=2000, page_size=1000, paged=True, **params)

    def segments(self, **params: Any) -> Result:
        """The per-segment report, riskiest first."""
        return self.list_all("/v1/segments", max_items=5000, page_size=500, paged=True, **params)

    def calibration(self, **params: Any) -> Result:
        """The calibration reports, one per judge."""
        return self.list_all("/v1/calibration", max_items=500, page_size=100, paged=True, **params)

    def spend(self, **params: Any) -> Result:
        """Monitoring spend per UTC day of decision ts, oldest first (of a router, a segment)."""
        return self.list_all("/v1/spend", max_items=5000, page_size=500, paged=True, **params)


def _param(value: Any) -> Any:
    # A list is a repeated parameter (`id=1&id=2`); a tuple keeps the cache key hashable.
    if isinstance(value, list | tuple):
        return tuple(_param(v) for v in value)
    return value.isoformat() if isinstance(value, datetime) else value


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@st.cache_resource(show_spinner=False)
def _http_client() -> httpx.Client:
    """One connection pool per dashboard process, shared by every page and viewer."""
    return httpx.Client()


class _Uncached(Exception):
    """Carries an `Unavailable` out of the cached read, so that failures are not cached."""

    def __init__(self, unavailable: Unavailable) -> None:
        super().__init__(unavailable.reason)
        self.unavailable = unavailable


def _read(
    url: str,
    key: str | None,
    path: str,
    params: tuple[tuple[str, Any], ...],
    as_text: bool,
    timeout_s: float,
) -> Any:
    """The one place the dashboard reads the API: decoded JSON (or the text), or raises
    `_Uncached` with why it could not."""
    try:
        response = _http_client().get(
            url + path, params=dict(params), headers=_auth(key), timeout=timeout_s
        )
    except httpx.HTTPError as error:
        raise _Uncached(Unavailable(path, f"the API at {url} is unreachable ({error})")) from None
    if as_text:
        if response.status_code != 200:
            raise _Uncached(Unavailable(path, f"HTTP {response.status_code}"))
        return response.text
    result = _decode(path, response)
    if isinstance(result, Unavailable):
        raise _Uncached(result)
    return result


_CACHED_READS: dict[float, Callable[..., Any]] = {}


def _cached_read(ttl_seconds: float) -> Callable[..., Any]:
    """`_read` behind `st.cache_data` with this TTL (one TTL per process: the setting's)."""
    if ttl_seconds not in _CACHED_READS:
        _CACHED_READS[ttl_seconds] = st.cache_data(
            ttl=ttl_seconds, max_entries=5000, show_spinner=False
        )(_read)
    return _CACHED_READS[ttl_seconds]


def clear_cache() -> None:
    """Forget every cached API answer (the sidebar's refresh, after an operate call)."""
    for read in _CACHED_READS.values():
        read.clear()  # type: ignore[attr-defined]


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
    for row in items(api.segments()):
        names.add(row["router"])
    for row in items(api.get("/v1/sampling")):
        if row.get("router"):
            names.add(row["router"])
    for row in items(api.get("/v1/decisions", order="desc", limit=200)):
        names.add(row["router"])
    return sorted(names)
