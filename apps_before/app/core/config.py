"""Settings from the environment, and the tag every engine puts on its connections."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class Settings:
    database_url: str  # plain postgresql://user:password@host:port/dbname
    pool_size: int
    max_overflow: int
    pool_timeout: float  # seconds
    variant: str  # label that prefixes every application_name

    @property
    def async_url(self) -> str:
        return _with_driver(self.database_url, "postgresql+asyncpg")

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
    )


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


def async_connect_args(module: str) -> dict[str, Any]:
    # asyncpg ignores application_name in the URL: it must go in server_settings.
    return {"server_settings": {"application_name": application_name(module)}}


def sync_connect_args(module: str) -> dict[str, Any]:
    return {"application_name": application_name(module, sync=True)}
