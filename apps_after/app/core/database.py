"""Database access for the user endpoints: re-exported from app.db.session."""

from __future__ import annotations

from app.db.session import (  # isort: skip -- one re-export list
    async_engine as engine,
    AsyncSessionLocal,
    get_async_db as get_db,
)

__all__ = ["AsyncSessionLocal", "engine", "get_db"]
