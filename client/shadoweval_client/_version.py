"""The client distribution's version (client/pyproject.toml reads it; sent as User-Agent)."""

__version__ = "0.1.0"
