"""Streamlit pieces every page shares: the API handle, the sidebar filters and refresh,
tables without "None", empty states."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import streamlit as st
from shadoweval.dashboard import data
from shadoweval.dashboard import formatting as fmt

NO_VALUE: str = fmt.NO_VALUE  # "—", the one dash every figure uses when it is missing

WINDOWS = {
    "all decision time": None,
    "last 24 hours": timedelta(hours=24),
    "last 7 days": timedelta(days=7),
    "last 30 days": timedelta(days=30),
}
# Auto-refresh intervals offered in the sidebar (seconds); the API answers are cached for
# `dashboard_cache_seconds` (15 s by default), so no choice here reads faster than that.
REFRESH_EVERY = {"15 s": 15, "30 s": 30, "1 min": 60, "5 min": 300}


@dataclass(frozen=True)
class Context:
    api: data.Api
    router: str | None
    since: datetime | None
    window_label: str


def context() -> Context:
    """The API and the sidebar's router and window (kept across pages by their widget keys)."""
    api = data.Api.from_settings()
    routers = data.routers(api)
    with st.sidebar:
        st.caption(f"API: {api.url}")
        keep("router", "window", "auto_refresh", "refresh_every")
        linked("router", "router", routers)
        router = st.selectbox(
            "Router",
            routers,
            key="router",
            index=0 if routers else None,
            placeholder="no routers yet",
        )
        window = st.selectbox("Window (decision ts)", list(WINDOWS), key="window")
        if api.can_operate:
            st.caption("Operate key configured: acknowledge and silence are enabled.")
        refresh_controls()
    delta = WINDOWS[window]
    # The window is decision time (DESIGN.md, Time): it ends at the router's newest decision,
    # so a replayed month shows what the live stream showed; whole minutes, so that reruns
    # within a minute ask the same question (and hit the cache).
    end = latest_decision_ts(api, router) or datetime.now(UTC)
    since = end.replace(second=0, microsecond=0) - delta if delta else None
    # The API's own verdicts say whether they were simulated, whatever this process was told.
    if api.simulated or any(
        v.get("simulated") for v in data.items(api.get("/v1/verdicts", limit=5))
    ):
        simulated_banner()
    return Context(api=api, router=router, since=since, window_label=window)


def refresh_controls() -> None:
    """The sidebar's "Refresh now" (forget the cached answers) and auto-refresh: a timed
    fragment that reruns the whole page every chosen interval while the toggle is on."""
    st.button(
        "Refresh now",
        key="refresh_now",
        on_click=data.clear_cache,  # a callback: runs before the rerun reads anything
        help="Read everything from the API again instead of the answers of the last seconds.",
    )
    # Defaults through Session State: `keep` re-sets these keys on every page.
    st.session_state.setdefault("auto_refresh", True)
    st.session_state.setdefault("refresh_every", "30 s")
    on = st.toggle("Auto-refresh", key="auto_refresh")
    every = st.selectbox("Refresh every", list(REFRESH_EVERY), key="refresh_every", disabled=not on)
    # Each full run gets a number; the fragment reruns the page only when the timer (not the
    # page run that drew it) called it, so the page does not loop.
    st.session_state["_page_run"] = st.session_state.get("_page_run", 0) + 1
    if on:
        st.fragment(_tick, run_every=REFRESH_EVERY[every])()


def _tick() -> None:
    run = st.session_state.get("_page_run")
    if st.session_state.get("_tick_seen") == run:
        st.rerun(scope="app")
    st.session_state["_tick_seen"] = run


def when(value: Any, *, seconds: bool = True) -> str:
    """A timestamp (ISO text or datetime) as "2026-12-07 09:07:12 UTC"; "—" when missing."""
    if value is None or value == "" or (not isinstance(value, str) and pd.isna(value)):
        return NO_VALUE
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return str(stamp.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC"))


def filled(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a reader sees it: timestamps as UTC text, lists joined, and every missing
    value as "—" (Streamlit would print a literal "None")."""
    shown = frame.copy()
    for column in shown.columns:
        values = shown[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            shown[column] = values.map(when)
        elif values.dtype == object:
            shown[column] = values.map(_cell)
        elif values.isna().any():
            shown[column] = values.map(lambda v: NO_VALUE if pd.isna(v) else f"{v:g}")
    return shown


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or NO_VALUE
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT:
        return NO_VALUE
    return value


def table(
    frame: pd.DataFrame,
    *,
    column_config: dict[str, Any] | None = None,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
) -> None:
    """A table that fits the page (its width, columns sized by `column_config`), each column
    in `formats` shown as that function's text (units beside the number), and "—" for
    missing values."""
    shown = frame.copy()
    for column, formatter in (formats or {}).items():
        if column in shown.columns:
            shown[column] = [NO_VALUE if _missing(v) else formatter(v) for v in shown[column]]
    st.dataframe(
        filled(shown), hide_index=True, width="stretch", column_config=column_config or None
    )


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str | list | tuple) and bool(pd.isna(value)))


def latest_decision_ts(api: data.Api, router: str | None) -> datetime | None:
    """Decision time now for `router`: its newest decision's ts (the read `routers` makes,
    so it comes from the cache)."""
    rows = data.items(api.get("/v1/decisions", order="desc", limit=200))
    stamps = [r["ts"] for r in rows if router is None or r.get("router") == router]
    if not stamps:
        return None
    newest: datetime = pd.to_datetime(stamps, utc=True, format="ISO8601").max().to_pydatetime()
    return newest


def keep(*keys: str) -> None:
    """Carry the sidebar's choices over to the next page: Streamlit drops the state of a
    widget drawn by another page (same key, new page, new widget) unless the value is
    re-set through Session State before the widget is drawn."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def linked(key: str, param: str, options: Sequence[str] | None = None) -> None:
    """Open a deep link (an alert's `?router=R&segment=S`) on its values: put the query
    parameter `param` into widget `key` before the widget is drawn.

    Only where the widget has no state yet or the link is new, so the reader's own choice
    afterwards sticks across reruns while the URL still carries the link. `options` are the
    widget's choices; a linked value not among them is reported, not set.
    """
    applied = f"_linked_{key}"
    value = st.query_params.get(param)
    if not value:
        st.session_state.pop(applied, None)  # a later link to the same value applies again
        return
    if key in st.session_state and st.session_state.get(applied) == value:
        return
    st.session_state[applied] = value
    if options is not None and value not in options:
        st.warning(f"The link's {param} {value!r} has no data here; showing another.")
        return
    st.session_state[key] = value


def simulated_banner() -> None:
    st.info(
        "SIMULATED DATA: answers and verdicts come from the demo's simulated provider, "
        "not from real models.",
        icon="🧪",
    )


def empty(message: str) -> None:
    """The page's (or section's) clear empty state."""
    st.info(message, icon="ℹ️")


def unavailable(result: Any, what: str) -> bool:
    """Show why `what` cannot be shown; True when the result is unavailable."""
    if isinstance(result, data.Unavailable):
        st.warning(f"{what}: {result.reason} ({result.path}).")
        return True
    return False
