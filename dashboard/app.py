"""The dashboard's entry point (`shadoweval dashboard`): one page per question an ML owner asks."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="shadoweval", page_icon="🛰️", layout="wide")

PAGES = [
    st.Page("views/routing.py", title="Is routing paying off?", default=True),
    st.Page("views/quality.py", title="Where is quality lost?"),
    st.Page("views/calibration.py", title="Is the router still calibrated?"),
    st.Page("views/thresholds.py", title="What threshold should I run?"),
    st.Page("views/drift.py", title="Has the input changed?"),
    st.Page("views/judge.py", title="What did the judge see?"),
    st.Page("views/alerts.py", title="What is firing?"),
]

st.navigation(PAGES).run()
