"""Faults mid-run, end to end: real poolbench, real PostgreSQL, real uvicorn, real Locust.

- a worker killed, the app's master killed, the postmaster killed: each in one variant of
  one run, which goes on to the next variant; the first is `degraded`, the others `failed`,
  the run `failed` (exit 1), and events.jsonl says what happened when;
- poolbench itself killed with SIGKILL: its children die with it; the next `poolbench run`
  and `poolbench clean` remove the data directory, the private role and database.

Stalls and a full server are in tests/test_faults_stalls.py, faults of the load and a
hostile password in tests/test_faults_load.py: apart, so that make test's workers run them
side by side (the helpers they share are in tests/faults.py).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import poolbench_cli
from faults import SYSTEM_PG, bench_file, events_of, gone, in_load, start_run

from poolbench.results.run_folder import load_run

pytestmark = pytest.mark.e2e


def test_a_worker_the_master_and_the_postmaster_killed_mid_load(tmp_path: Path) -> None:
    """One run, three repeats of a two-worker app: kill a worker, the master, the postmaster."""
    out = tmp_path / "r"
    # 8 s of load: uvicorn's replacement of the killed worker must start within it (at 5 s
    # it did not, once, on a busy machine)
    proc = start_run(bench_file(tmp_path, repeats=3, workers=2, load_s=8), out)
    killed = {}
    entry = in_load(out, proc, "e/after-1")
    workers = psutil.Process(entry["pids"]["app"]).children()
    worker = next(p for p in workers if "resource_tracker" not in " ".join(p.cmdline()))
    killed["worker"] = worker.pid
    os.kill(worker.pid, signal.SIGKILL)
    entry = in_load(out, proc, "e/after-2")
    killed["master"] = entry["pids"]["app"]
    app_group = [p.pid for p in psutil.Process(killed["master"]).children(recursive=True)]
    os.kill(killed["master"], signal.SIGKILL)
    entry = in_load(out, proc, "e/after-3")
    killed["postmaster"] = entry["pids"]["postmaster"]
    os.kill(killed["postmaster"], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)

    assert proc.returncode == 1, stderr[-3000:]
    run = load_run(out / "latest")
    statuses = {v.key: v.meta["status"] for v in run.variants}
    assert statuses == {"e/after-1": "degraded", "e/after-2": "failed", "e/after-3": "failed"}
    assert run.meta["status"] == "failed"
    assert run.meta["error"].startswith("2 of 3 variants failed: e/after-2: the app's master")

    [exited] = events_of(run.path, "e/after-1", "app_process_exited")
    assert (exited["pid"], exited["role"]) == (killed["worker"], "worker")
    assert exited["exit_status"] in (-9, None)  # known if read before uvicorn reaped it
    assert exited["phase"] == "load" and 1.5 <= exited["t"] < 4
    replaced = [
        e
        for e in events_of(run.path, "e/after-1", "app_process_started")
        if e["phase"] != "starting"
    ]
    assert [e["role"] for e in replaced] == ["worker"]  # uvicorn started a new one
    assert (
        run.variants[0].meta["error"].startswith(f"an app worker (pid {killed['worker']}) exited")
    )

    [master] = events_of(run.path, "e/after-2", "app_process_exited")
    assert (master["role"], master["exit_status"], master["phase"]) == ("master", -9, "load")
    assert (
        run.variants[1]
        .meta["error"]
        .startswith(f"the app's master process (pid {killed['master']}) exited (signal 9) at ")
    )
    assert f"(load phase, t = {master['t']:.1f} s)" in run.variants[1].meta["error"]

    [postgres] = events_of(run.path, "e/after-3", "postgres_exited")
    assert (postgres["pid"], postgres["exit_status"]) == (killed["postmaster"], -9)
    assert run.variants[2].meta["error"].startswith("the PostgreSQL server (postmaster pid")
    assert "! e/after: the app's master process" in stderr  # said in the terminal too
    assert "run " + run.meta["run_id"] + ": failed" in stdout
    assert not gone(app_group)  # the orphaned workers of the killed master are gone too


def _hard_kill(config: Path, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    """Start a run, SIGKILL it mid-load; its entry and its ledger."""
    proc = start_run(config, out, *extra)
    entry = in_load(out, proc, "e/after-1")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    [run_dir] = [p for p in out.iterdir() if not p.is_symlink()]
    ledger = [json.loads(line) for line in (run_dir / "started.jsonl").read_text().splitlines()]
    return entry, ledger


def test_sigkill_of_poolbench_leaves_nothing_after_the_next_run_or_clean(tmp_path: Path) -> None:
    config = bench_file(tmp_path)
    # embedded server: the children die with poolbench, the data directory stays
    entry, ledger = _hard_kill(config, tmp_path / "embedded")
    children = [entry["pids"][k] for k in ("app", "load", "postmaster")]
    assert not gone(children, timeout=10)  # PR_SET_PDEATHSIG
    [data_dir] = [Path(i["path"]) for i in ledger if i.get("kind") == "data_dir"]
    assert data_dir.is_dir()
    # the next run cleans it up first (then stops at its own bad URL, writing nothing)
    proc = poolbench_cli(
        "run",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "embedded"),
        "--database-url",
        "postgresql://postgres@127.0.0.1:1/x",
    )
    assert proc.returncode == 2
    assert f"poolbench: cleaned {tmp_path / 'embedded'}" in proc.stderr
    assert f"abandoned: removed {data_dir}" in proc.stderr
    assert not data_dir.exists()
    runs = [p for p in (tmp_path / "embedded").iterdir() if not p.is_symlink()]
    assert len(runs) == 1  # the bad URL made no folder
    assert load_run(runs[0]).meta["status"] == "abandoned"
    assert load_run(runs[0]).variants[0].meta["status"] == "abandoned"

    # a server of the user's: the private role and database stay until clean has its URL
    entry, ledger = _hard_kill(config, tmp_path / "url", "--database-url", SYSTEM_PG)
    assert not gone([entry["pids"]["app"], entry["pids"]["load"]], timeout=10)
    [db] = [i for i in ledger if i.get("kind") == "database"]
    with psycopg.connect(SYSTEM_PG, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db["role"],)).fetchone()
    proc = poolbench_cli("clean", str(tmp_path / "url"), env={**os.environ, "DATABASE_URL": ""})
    assert proc.returncode == 1
    assert f"left: database {db['dbname']} and role {db['role']} on 127.0.0.1:5432" in proc.stdout
    proc = poolbench_cli("clean", str(tmp_path / "url"), "--database-url", SYSTEM_PG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"dropped database {db['dbname']} and role {db['role']}" in proc.stdout
    with psycopg.connect(SYSTEM_PG, autocommit=True) as conn:
        assert not conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s UNION ALL "
            "SELECT 1 FROM pg_database WHERE datname = %s",
            (db["role"], db["dbname"]),
        ).fetchall()
    run_dir = next(p for p in (tmp_path / "url").iterdir() if not p.is_symlink())
    assert load_run(run_dir).meta["status"] == "abandoned"
    assert poolbench_cli("clean", str(tmp_path / "url")).stdout.startswith("nothing to clean")
