"""Test doubles that speak real wire protocols (run in-process on a local port)."""

from tests.fakes.provider_server import (
    FakeProviderServer,
    create_fake_provider_app,
    running_fake_provider,
)

__all__ = ["FakeProviderServer", "create_fake_provider_app", "running_fake_provider"]
