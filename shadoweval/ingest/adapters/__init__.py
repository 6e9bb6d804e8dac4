"""Adapters: pure mappings from the logs other routers emit onto the decision log (v1)."""
