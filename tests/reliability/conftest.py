"""Fixtures reused from the console suite (its settable clock, world and HTTP client)."""

from tests.integration.console.conftest import client, clock, recordings, world  # noqa: F401 - re-exported fixtures
