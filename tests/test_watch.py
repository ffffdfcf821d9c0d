"""`poolbench watch` as a real subprocess against a real PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, poolbench_cli

from poolbench.infra.postgres import Database, free_port
from poolbench.results.samples import read_samples

pytestmark = pytest.mark.slow


def _watch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "poolbench", "watch", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_watch_samples_for_the_duration_and_exits_zero(pg: Database, tmp_path: Path) -> None:
    proc = _watch("--database-url", pg.admin_url, "--duration", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    frame = read_samples(tmp_path / "samples.csv")
    assert (frame.metric == "connections_total").sum() >= 10  # 10 Hz for 2 s
    assert {"max_connections", "slots_left", "processes", "cpu_percent"} <= set(frame.metric)
    assert not (tmp_path / "samples.csv.part").exists()
    assert "samples.csv" in proc.stdout and "Traceback" not in proc.stderr
    assert pg.admin_password not in proc.stdout + proc.stderr


def test_watch_is_a_poolbench_subcommand(pg: Database, tmp_path: Path) -> None:
    proc = poolbench_cli(
        "watch",
        "--database-url",
        pg.admin_url,
        "--duration",
        "1",
        "--out",
        str(tmp_path),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (read_samples(tmp_path).metric == "connections_total").sum() >= 5


@pytest.mark.parametrize(
    "url, expected",
    [
        (f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/db", "cannot connect"),
        ("not-a-url", "malformed database URL"),
    ],
    ids=["unreachable", "malformed"],
)
def test_watch_with_a_bad_url_is_a_one_line_error(url: str, expected: str, tmp_path: Path) -> None:
    proc = _watch("--database-url", url, "--duration", "2", "--out", str(tmp_path / "w"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "hunter2" not in proc.stderr
    assert not (tmp_path / "w" / "samples.csv").exists()


def test_watch_role_without_pg_monitor_names_the_grant(pg: Database, tmp_path: Path) -> None:
    proc = _watch("--database-url", pg.app_url, "--duration", "2", "--out", str(tmp_path))
    assert proc.returncode != 0
    assert f"GRANT pg_monitor TO {pg.app_user}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_watch_stops_cleanly_on_a_signal(pg: Database, tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poolbench",
            "watch",
            "--database-url",
            pg.admin_url,
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = tmp_path / "samples.csv.part"
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size > 200):  # rows flushed while running
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "watch never wrote samples"
        time.sleep(0.1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert (read_samples(tmp_path).metric == "connections_total").sum() >= 1
    assert not partial.exists()
