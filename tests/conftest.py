"""Shared fixtures: one real, embedded PostgreSQL for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poolbench.postgres import Database, embedded_server


@pytest.fixture(scope="session")
def pg() -> Iterator[Database]:
    """A throwaway PostgreSQL 16 on 127.0.0.1 with room for many pools (max_connections=300)."""
    with embedded_server(settings={"max_connections": "300"}) as database:
        yield database
