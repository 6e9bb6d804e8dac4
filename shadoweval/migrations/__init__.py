"""Alembic migrations; run them with `shadoweval db upgrade`."""
