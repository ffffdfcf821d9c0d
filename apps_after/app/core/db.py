"""Engines for the item catalogue and reports: re-exported from app.db.session."""

from __future__ import annotations

from ..db.session import (  # isort: skip -- the re-export list as the fix wrote it
    async_engine as engine,
    AsyncSessionLocal as AsyncSessionFactory,
    SessionLocal as SessionFactory,
    engine as sync_engine,
)

__all__ = ["AsyncSessionFactory", "SessionFactory", "engine", "sync_engine"]
