"""Database package: re-exports the engines of app.db.session, the one place that creates them."""

from __future__ import annotations

from .session import (  # isort: skip -- the re-export list as the fix wrote it
    async_engine,
    AsyncSessionLocal as AsyncSessionFactory,
    SessionLocal as SessionFactory,
    engine as sync_engine,
)

__all__ = ["AsyncSessionFactory", "SessionFactory", "async_engine", "sync_engine"]
