"""Shared fixtures: one real, embedded PostgreSQL for the whole test session."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql

from poolbench.infra.postgres import Database, embedded_server


@pytest.fixture(scope="session")
def pg() -> Iterator[Database]:
    """A throwaway PostgreSQL 16 on 127.0.0.1 with room for many pools (max_connections=300)."""
    with embedded_server(settings={"max_connections": "300"}) as database:
        yield database


REPO = Path(__file__).resolve().parents[1]


def with_db(url: str, dbname: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + dbname


def maintenance(pg: Database) -> psycopg.Connection:
    """An admin connection outside the target database (it is a client backend, not counted)."""
    return psycopg.connect(with_db(pg.admin_url, "postgres"), autocommit=True)


@contextlib.contextmanager
def fresh_database(pg: Database, prefix: str = "collector") -> Iterator[str]:
    """A new database owned by the app role, dropped afterwards: counts in it are exact."""
    dbname = f"{prefix}_{secrets.token_hex(4)}"
    with maintenance(pg) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(pg.app_user)
            )
        )
    try:
        yield dbname
    finally:
        with maintenance(pg) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))


def pid_alive(pid: int) -> bool:
    """A zombie left for an init that does not reap (PID 1 here) is as dead as a missing process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def poolbench_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `poolbench` command from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "poolbench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


# The files that take longest under `make test` (wall seconds summed over their tests, on the
# slower 2-core machine), longest first.
LONGEST_FIRST = (
    "test_pgbouncer",
    "test_run",
    "test_faults",
    "test_faults_stalls",
    "test_collector",
    "test_report",
    "test_ui",
    "test_faults_load",
    "test_quick_run",
    "test_watchdog",
    "test_teardown_faults",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then those with end-to-end runs: under
    `pytest -n N --dist loadfile` (make test) each file goes to one worker in this order, so a
    long file does not start last and keep one worker busy while the others idle."""
    rank = {stem: i for i, stem in enumerate(LONGEST_FIRST)}
    heavy = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: (rank.get(item.path.stem, len(rank)), item.path not in heavy))
