"""The Streamlit dashboard (shipped as `shadoweval.dashboard`); it reads the HTTP API only."""
