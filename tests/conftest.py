"""Shared fixtures: one real, embedded PostgreSQL for the whole test session."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from poolbench.postgres import Database, embedded_server


@pytest.fixture(scope="session")
def pg() -> Iterator[Database]:
    """A throwaway PostgreSQL 16 on 127.0.0.1 with room for many pools (max_connections=300)."""
    with embedded_server(settings={"max_connections": "300"}) as database:
        yield database


REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `poolbench run --quick` (both variants), shared by the run and report tests."""
    out = tmp_path_factory.mktemp("results")
    proc = poolbench_cli("run", "--quick", "--no-report", "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / "latest").resolve()
