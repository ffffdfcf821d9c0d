"""Settings from the environment, and the tag every engine puts on its connections."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


@dataclass(frozen=True)
class Settings:
    database_url: str  # plain postgresql://user:password@host:port/dbname
    pool_size: int
    max_overflow: int
    pool_timeout: float  # seconds
    variant: str  # label that prefixes every application_name
    # DB_PREPARED_STATEMENTS=off: no named prepared statement outlives its transaction, as a
    # transaction-mode pooler (PgBouncer < 1.21) needs: SQLAlchemy's asyncpg statement cache
    # off with unique statement names, asyncpg's own cache off, psycopg never preparing.
    prepared_statements: bool = True
    null_pool: bool = False  # DB_NULLPOOL=1: no app-side pool (a pooler in front does it)

    @property
    def async_url(self) -> str:
        url = _with_driver(self.database_url, "postgresql+asyncpg")
        if self.prepared_statements:
            return url
        return (
            make_url(url)
            .update_query_dict({"prepared_statement_cache_size": "0"})
            .render_as_string(hide_password=False)
        )

    @property
    def sync_url(self) -> str:
        return _with_driver(self.database_url, "postgresql+psycopg")


def _with_driver(url: str, drivername: str) -> str:
    return make_url(url).set(drivername=drivername).render_as_string(hide_password=False)


def load_settings() -> Settings:
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        raise RuntimeError(
            "DATABASE_URL is not set: expected postgresql://user:password@host:port/dbname"
        )
    if make_url(url).get_backend_name() not in {"postgresql", "postgres"}:
        raise RuntimeError("DATABASE_URL must be a postgresql:// URL")
    return Settings(
        database_url=url,
        pool_size=_number("DB_POOL_SIZE", "5", int),
        max_overflow=_number("DB_MAX_OVERFLOW", "10", int),
        pool_timeout=_number("DB_POOL_TIMEOUT", "30", float),
        variant=os.environ.get("APP_VARIANT", "app"),
        prepared_statements=_switch("DB_PREPARED_STATEMENTS", "on"),
        null_pool=_switch("DB_NULLPOOL", "0"),
    )


def _switch(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip().lower()
    if value not in {"1", "on", "true", "0", "off", "false"}:
        raise RuntimeError(f"{name} must be on/off (1/0), got {value!r}")
    return value in {"1", "on", "true"}


def _number(name: str, default: str, kind: type[int] | type[float]) -> Any:
    value = os.environ.get(name, default)
    try:
        return kind(value)
    except ValueError:
        raise RuntimeError(f"{name} must be {kind.__name__}, got {value!r}") from None


settings = load_settings()


def application_name(module: str, *, sync: bool = False) -> str:
    """`<APP_VARIANT>:<module>[:sync]`, how pg_stat_activity attributes a connection."""
    return f"{settings.variant}:{module}" + (":sync" if sync else "")


def pool_options() -> dict[str, Any]:
    """The engine's pool: sizes from the environment, or NullPool (DB_NULLPOOL=1)."""
    if settings.null_pool:
        return {"poolclass": NullPool}
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
    }


def async_connect_args(module: str) -> dict[str, Any]:
    # asyncpg ignores application_name in the URL: it must go in server_settings.
    args: dict[str, Any] = {"server_settings": {"application_name": application_name(module)}}
    if not settings.prepared_statements:
        args["statement_cache_size"] = 0
        args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
    return args


def sync_connect_args(module: str) -> dict[str, Any]:
    args: dict[str, Any] = {"application_name": application_name(module, sync=True)}
    if not settings.prepared_statements:
        args["prepare_threshold"] = None
    return args
