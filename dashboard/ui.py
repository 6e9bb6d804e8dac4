"""Streamlit pieces every page shares: the API handle, the sidebar filters, empty states."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st
from shadoweval.dashboard import data

WINDOWS = {
    "all decision time": None,
    "last 24 hours": timedelta(hours=24),
    "last 7 days": timedelta(days=7),
    "last 30 days": timedelta(days=30),
}


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
        keep("router", "window")
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
    delta = WINDOWS[window]
    since = datetime.now(UTC) - delta if delta is not None else None
    # The API's own verdicts say whether they were simulated, whatever this process was told.
    if api.simulated or any(
        v.get("simulated") for v in data.items(api.get("/v1/verdicts", limit=5))
    ):
        simulated_banner()
    return Context(api=api, router=router, since=since, window_label=window)


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
