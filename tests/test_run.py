"""`poolbench run` end to end: real PostgreSQL, real uvicorn, real Locust, read back from disk."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, pid_alive, poolbench_cli
from recompute import names_a_refusal

from poolbench.results.run_folder import load_run


@pytest.mark.e2e
def test_locust_workers_started_separately_join_and_every_request_is_recorded(
    tmp_path: Path,
) -> None:
    """`--locust-workers 2`: the master waits, two workers started as other machines would."""
    config = _bench_file(
        tmp_path,
        """
[experiments.spread]
variants = ["after"]
app = {workers = 1, pool_size = 4, max_overflow = 0}
load = {users = 12, spawn_rate = 12, shape = "steady", locust_args = ["--hold-ms", "5"]}
phases = {warmup_s = 0, load_s = 5, idle_s = 0}
""",
    )
    out = tmp_path / "r"
    run_args = ["run", "--config", str(config), "--no-report", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolbench", *run_args, "--locust-workers", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[subprocess.Popen] = []
    try:
        command = _awaited_worker_command(out, proc)
        assert "--worker" in command and "load/plugin.py" in command
        assert "scenarios/locustfile.py" in command
        joined_after = time.time()
        for _ in range(2):  # from another directory, as on another machine
            workers.append(
                subprocess.Popen(
                    shlex.split(command),
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        assert f"on each worker machine run:\n  {command}\n" in stderr  # whole, to copy
        for worker in workers:
            assert worker.wait(timeout=30) == 0  # the master sent them home
    finally:
        for child in [proc, *workers]:
            if child.poll() is None:
                child.kill()
    [variant] = load_run(out / "latest").variants
    load = next(p for p in variant.meta["phases"] if p["name"] == "load")
    assert load["start"] >= joined_after  # the load began when the workers had joined
    assert variant.meta["locust"]["workers"] == 2
    log = variant.requests()
    totals = json.loads((variant.path / "locust.json").read_text())
    assert len(log) == sum(e["num_requests"] for e in totals) > 50
    per_worker = {int(w): int((log.worker == w).sum()) for w in set(log.worker.tolist())}
    assert set(per_worker) == {1, 2} and all(n > 0 for n in per_worker.values())


def _awaited_worker_command(out: Path, proc: subprocess.Popen, timeout: float = 90) -> str:
    """The worker command the run printed, from its events.jsonl."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for path in out.glob("*/*/*/events.jsonl"):
            for line in path.read_text().splitlines():
                event = json.loads(line)
                if event["event"] == "locust_workers_awaited":
                    return event["command"]
        time.sleep(0.3)
    proc.kill()
    pytest.fail("the run never waited for its workers")


def _bench_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(
        '[variants.before]\napp_dir = "apps_before"\n[variants.after]\napp_dir = "apps_after"\n'
        + body
    )
    return path


@pytest.mark.e2e
def test_stock_postgres_refuses_the_five_pool_app_only(tmp_path: Path) -> None:
    """The shipped stock-postgres settings (150 users, pools of 20 + 10, max_connections 100),
    with shorter phases to keep the suite quick, no warm-up, and each read holding its
    connection for 1 s: the five pools' demand then exceeds the 97 free slots from the first
    second however busy the machine is (at 50 ms it took a busy machine over 6 s to get
    there), with fewer requests to serve."""
    config = _bench_file(
        tmp_path,
        """
[experiments.stock]
variants = ["before", "after"]
app = {workers = 1, pool_size = 20, max_overflow = 10}
postgres = {max_connections = 100}
load = {users = 150, spawn_rate = 150, shape = "steady", locust_args = ["--hold-ms", "1000"]}
phases = {warmup_s = 0, load_s = 6, idle_s = 1}
""",
    )
    proc = poolbench_cli(
        "run", "--config", str(config), "--no-report", "--out", str(tmp_path / "r")
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = load_run(tmp_path / "r" / "latest")
    refused = {}
    for variant in run.variants:
        failures = variant.locust["failures"]
        log = (variant.path / "app.log").read_text()
        text = " ".join(failures.get("Error", pd.Series(dtype=str)).astype(str)) + log
        refused[variant.meta["variant"]] = names_a_refusal(text)
    assert refused == {"before": True, "after": False}


@pytest.mark.slow
def test_unknown_experiment_lists_the_valid_names() -> None:
    proc = poolbench_cli("run", "--experiment", "nope")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "poolbench run: error: unknown experiment 'nope': valid experiments are observer-effect, "
        "pgbouncer, seed-claim, soak, stock-postgres"
    )


@pytest.mark.slow
def test_unknown_variant_lists_the_valid_names() -> None:
    proc = poolbench_cli("run", "--variants", "before,sideways")
    assert proc.returncode == 2
    assert (
        "unknown variant 'sideways': valid variants are after, after-minimal, after-pgbouncer, "
        "after-pgbouncer-nullpool, before, before-pgbouncer, before-pgbouncer-misconfigured"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_app_that_fails_to_start_marks_the_run_failed(tmp_path: Path) -> None:
    config = tmp_path / "bench.toml"
    config.write_text(
        f"""
[variants.broken]
command = ["{sys.executable}", "-c", \
"print('cannot import app.settings: boom'); raise SystemExit(3)"]
[experiments.e]
variants = ["broken"]
phases = {{warmup_s = 1, load_s = 1, idle_s = 1}}
"""
    )
    proc = poolbench_cli("run", "--config", str(config), "--out", str(tmp_path / "r"))
    assert proc.returncode != 0
    assert "exited with code 3" in proc.stderr
    assert "cannot import app.settings: boom" in proc.stderr  # the tail of its log
    assert "Traceback" not in proc.stderr
    meta = json.loads((tmp_path / "r" / "latest" / "run.json").read_text())
    assert meta["status"] == "failed"
    assert meta["experiments"][0]["variants"][0]["status"] == "failed"
    # the server's log is kept for a failed variant too
    assert "connection authorized" in (tmp_path / "r/latest/e/broken-1/postgres.log").read_text()


@pytest.mark.e2e
def test_ctrl_c_mid_run_stops_every_child_and_leaves_a_partial_readable_run(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolbench", "run", "--quick", "--no-report", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids = _wait_for_load_phase(out, proc)
    assert all(pid_alive(pid) for pid in pids.values())
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [name for name, pid in pids.items() if pid_alive(pid)]
    run = load_run(out / "latest")
    assert run.meta["status"] == "partial"
    assert run.variants[0].meta["status"] == "partial"
    assert run.variants[0].server_log().sessions  # the log up to the interruption is kept


def _wait_for_load_phase(out: Path, proc: subprocess.Popen, timeout: float = 90) -> dict:
    """The pids of app, Locust and PostgreSQL, once the first variant's load is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for path in out.glob("*/*/*/variant.json"):
            with_pids = json.loads(path.read_text())
            pids = {k: v for k, v in with_pids.get("pids", {}).items() if v}
            if {"app", "load", "postmaster"} <= set(pids):
                time.sleep(2)
                return pids
        time.sleep(0.3)
    proc.kill()
    pytest.fail("the run never reached its load phase")


def test_empty_variant_list_is_refused_before_anything_starts() -> None:
    proc = poolbench_cli("run", "--variants", ",", timeout=30)
    assert proc.returncode == 2
    assert "needs at least one variant name" in proc.stderr


@pytest.mark.slow
def test_locust_worker_options_are_checked_before_anything_starts() -> None:
    proc = poolbench_cli("run", "--locust-workers", "0", timeout=30)
    assert proc.returncode == 2
    assert "--locust-workers: must be a whole number of at least 1, got '0'" in proc.stderr
    proc = poolbench_cli("run", "--locust-workers", "2", "--load-processes", "2", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "poolbench run: error: experiments.seed-claim: load.locust_workers and load.processes "
        "exclude each other (start more workers instead)"
    )
