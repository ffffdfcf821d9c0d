"""Shared fixtures: one real, embedded PostgreSQL for the whole test session."""

from __future__ import annotations

import contextlib
import functools
import re
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


# The files that take longest under `make test`, longest first (wall seconds summed per file on
# this 2-core machine): started first, they do not start last and keep one worker busy while
# the others idle. Any other file follows, its end-to-end tests first.
LONGEST_FIRST = (
    "test_pgbouncer",
    "test_run",
    "test_ui",
    "test_collector",
    "test_faults",
    "test_faults_stalls",
    "test_faults_load",
    "test_report",
    "test_quick_run",
    "test_teardown_faults",
    "test_watchdog",
    "test_disk_faults",
    "test_locust_plugin",
    "test_damaged_data",
    "test_probe",
    "test_byo",
)
SHARED_FIXTURE = re.compile(r"""scope=["'](module|class|package)["']""")


@functools.cache
def shares_a_fixture(path: str) -> bool:
    """A test file that defines a module (or class) fixture: one real run, one server, read
    by several of its tests."""
    file = REPO / path
    return file.is_file() and bool(SHARED_FIXTURE.search(file.read_text()))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup` (make test): the tests of a file that shares a module fixture go to
    one worker together, so the fixture starts once; every other test goes to whichever
    worker is free, one by one, so that a long file is not left to one worker at the end.

    Our own scheduler, as xdist (3.8) marks its groups by rewriting item._nodeid, which
    pytest 9 no longer reads: with xdist's own loadgroup each worker started the fixture."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if shares_a_fixture(path) else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every other test goes to whichever worker is free, one by one: the longest files'
    first, then the end-to-end tests, the slow ones, the rest, so that a long test does not
    start last and keep one worker busy while the others idle."""
    rank = {stem: i for i, stem in enumerate(LONGEST_FIRST)}
    heavy = {item.path for item in items if item.get_closest_marker("e2e")}
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(
        key=lambda item: (
            rank.get(item.path.stem, len(rank)),
            item.path not in heavy,
            item.path not in slow,
        )
    )
