"""Ingest: the decision log (v1) — validation, storage, sampling at ingest, the read API."""
