"""Placeholders in a variant's `command`, `env` and `setup`.

`{name}` takes a value the run knows only once it has a database and a port
(`{database_url}`, `{db_password}`, `{port}`, `{workers}`, …); `${VAR}` takes a value from
poolbench's own environment, so a secret never has to be written in the bench file.
`{database_url:DRIVER}` is the URL in SQLAlchemy's form for that driver
(`{database_url:asyncpg}` → `postgresql+asyncpg://…`), so an async app needs no URL rebuilt
from `{db_user}`, `{db_password}`, …. Expansion is one pass over the text: a value is never
expanded again, whatever it contains.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from poolbench.errors import PoolbenchError

PLACEHOLDERS = (
    "database_url",
    "db_host",
    "db_port",
    "db_user",
    "db_password",
    "db_name",
    "host",
    "port",
    "workers",
    "pool_size",
    "max_overflow",
)
DRIVERS = ("asyncpg", "psycopg", "psycopg2", "pg8000", "psycopg2cffi")  # SQLAlchemy dialects
_TOKEN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\{([a-z_]+)(?::([a-z0-9_]+))?\}")


def env_refs(text: str) -> list[str]:
    """The `${VAR}` names a text uses, in order."""
    return [m.group(1) for m in _TOKEN.finditer(text) if m.group(1)]


def with_driver(url: str, driver: str) -> str:
    """postgresql://… as SQLAlchemy's postgresql+DRIVER://…"""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+{driver}://{rest}" if sep and scheme.startswith("postgres") else url


def check(items: Iterable[tuple[str, str]], environ: Mapping[str, str] | None = None) -> None:
    """Every `{name}` known and every `${VAR}` set, for (where, text) pairs; else one line."""
    environ = os.environ if environ is None else environ
    for where, text in items:
        for match in _TOKEN.finditer(text):
            var, name, driver = match.groups()
            if var and var not in environ:
                raise PoolbenchError(
                    f"{where} uses ${{{var}}}, which is not set in poolbench's environment: "
                    f"export {var}=... before `poolbench run`"
                )
            if name and name not in PLACEHOLDERS:
                raise PoolbenchError(
                    f"{where} uses unknown placeholder {{{name}}}: known are "
                    + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                )
            if driver and (name != "database_url" or driver not in DRIVERS):
                raise PoolbenchError(
                    f"{where} uses {match.group(0)}: a driver form exists for {{database_url}} "
                    "only, one of " + ", ".join(f"{{database_url:{d}}}" for d in DRIVERS)
                )


def expand(text: str, values: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str:
    """`text` with `{name}` from `values` and `${VAR}` from `environ` (one pass)."""
    environ = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        var, name, driver = match.groups()
        if var:
            if var not in environ:
                raise PoolbenchError(f"${{{var}}} is not set in poolbench's environment")
            return environ[var]
        if name not in values:
            return match.group(0)
        return with_driver(values[name], driver) if driver else values[name]

    return _TOKEN.sub(value, text)
