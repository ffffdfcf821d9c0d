"""Registry of the long-lived engines, reported by GET /debug/pools."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

_engines: dict[str, Engine | AsyncEngine] = {}


def register(engine: Engine | AsyncEngine, name: str) -> None:
    """Record an engine under its application_name, right after it is created."""
    _engines[name] = engine


def describe() -> list[dict[str, Any]]:
    """One entry per engine: what its pool holds now (this worker process only)."""
    report = []
    for name, engine in _engines.items():
        is_async = isinstance(engine, AsyncEngine)
        pool: Any = engine.sync_engine.pool if is_async else engine.pool
        report.append(
            {
                "name": name,
                "kind": "async" if is_async else "sync",
                "pool_class": type(pool).__name__,
                # NullPool (DB_NULLPOOL=1) keeps nothing: it has no sizes to report
                "size": pool.size() if hasattr(pool, "size") else 0,
                "checked_in": pool.checkedin() if hasattr(pool, "checkedin") else 0,  # open, idle
                "checked_out": pool.checkedout() if hasattr(pool, "checkedout") else 0,  # in use
                # SQLAlchemy counts overflow from -size; report connections beyond size.
                "overflow": max(0, pool.overflow()) if hasattr(pool, "overflow") else 0,
                "max_overflow": getattr(pool, "_max_overflow", None),
            }
        )
    return report


async def dispose_all() -> None:
    """Close every pooled connection (at shutdown)."""
    for engine in _engines.values():
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
        else:
            engine.dispose()
