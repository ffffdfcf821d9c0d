"""Stalls and a full server mid-run, end to end (real poolbench, PostgreSQL, uvicorn, Locust):
the app frozen, every PostgreSQL process frozen and Locust killed, each in one variant of one
run that goes on; a server whose slots another client holds while a variant starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import REPO
from faults import bench_file, events_of, in_load, start_run

from poolbench.infra.postgres import embedded_server
from poolbench.results.run_folder import load_run

pytestmark = pytest.mark.e2e


def _freeze(pids: list[int], seconds: float) -> tuple[float, float]:
    """SIGSTOP the processes, wait, SIGCONT them: when they stopped and resumed."""
    stopped = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return stopped, time.time()


def _tree(pid: int) -> list[int]:
    return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]


def test_a_frozen_app_a_frozen_postgres_and_a_killed_locust_are_marked_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """One run, three repeats: the app frozen 4 s (SIGSTOP, SIGCONT), every PostgreSQL
    process frozen 6 s, Locust killed with SIGKILL. Each variant `degraded` with its reason in
    one line, a `stalled` event with its span (or Locust's exit), the report written."""
    out = tmp_path / "r"
    proc = start_run(bench_file(tmp_path, repeats=3, load_s=12), out, report=True)
    entry = in_load(out, proc, "e/after-1")
    app_frozen = _freeze(_tree(entry["pids"]["app"]), 4.0)
    entry = in_load(out, proc, "e/after-2")
    pg_frozen = _freeze(_tree(entry["pids"]["postmaster"]), 6.0)
    entry = in_load(out, proc, "e/after-3")
    os.kill(entry["pids"]["load"], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=180)

    assert proc.returncode == 0, stderr[-3000:]  # degraded is not failed
    assert stderr.count("! e/after: the variant stalled for ") == 2  # said in the terminal too
    run = load_run(out / "latest")
    statuses = {v.key: v.meta["status"] for v in run.variants}
    assert statuses == {"e/after-1": "degraded", "e/after-2": "degraded", "e/after-3": "degraded"}
    assert run.meta["status"] == "degraded"
    for key, (stopped, resumed), cause in (
        ("e/after-1", app_frozen, "app_stopped"),
        ("e/after-2", pg_frozen, "postgres_stopped"),
    ):
        [stall] = events_of(run.path, key, "stalled")
        assert cause in stall["causes"] and stall["phase"] == "load"
        assert stopped - 1.5 <= stall["ts"] <= stopped + 0.6
        assert resumed - 0.1 <= stall["end"] <= resumed + 3
        error = next(v for v in run.variants if v.key == key).meta["error"]
        assert error.startswith("the variant stalled for ") and "\n" not in error
    assert "postgres_silent" in events_of(run.path, "e/after-2", "stalled")[0]["causes"]
    [killed] = events_of(run.path, "e/after-3", "locust_exited")
    assert killed["exit_status"] == -9 and killed["early"] is True
    assert (
        run.variants[2]
        .meta["error"]
        .startswith(f"Locust (pid {entry['pids']['load']}) exited before its time (signal 9)")
    )
    assert run.variants[2].meta["locust"]["full_load"][1] <= killed["ts"] + 1  # ends with it
    report = (run.path / "report.md").read_text()
    assert report.count("| stalled |") == 2
    assert "e/after-1: stalled for " in report and "measure the stall, not the app" in report


FULL = """
[variants.after]
app_dir = "{repo}/apps_after"
[variants.later]
extends = "after"
setup = [["{python}", "-c", \
"import os, time\\nwhile not os.path.exists('{flag}'): time.sleep(0.1)"]]
[experiments.e]
variants = ["after", "later"]
app = {{pool_size = 2, max_overflow = 0}}
load = {{users = 4, spawn_rate = 4, shape = "steady", locust_args = ["--hold-ms", "5"]}}
phases = {{warmup_s = 0, load_s = 4, idle_s = 0}}
"""


def _status(out: Path, variant_dir: str) -> str | None:
    for path in out.glob(f"*/{variant_dir}/variant.json"):
        with contextlib.suppress(ValueError):
            return json.loads(path.read_text()).get("status")
    return None


def test_a_full_server_fails_that_variant_in_one_line_and_the_next_one_runs(
    tmp_path: Path,
) -> None:
    """27 of a 30-slot server's connections held by another client while the first variant
    starts: a warning before its app starts, the variant `failed` with the cause in one line;
    the client lets go, the next variant (held back by its setup command until then) runs,
    and the report is written."""
    flag = tmp_path / "released"
    config = tmp_path / "bench.toml"
    config.write_text(FULL.format(repo=REPO, python=sys.executable, flag=flag))
    with embedded_server(settings={"max_connections": "30"}) as server:
        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            admin.execute("CREATE ROLE squatter LOGIN PASSWORD 'squat'")
        squat = f"postgresql://squatter:squat@127.0.0.1:{server.port}/postgres"
        held = [psycopg.connect(squat) for _ in range(27)]
        try:
            proc = start_run(
                config, tmp_path / "r", "--database-url", server.admin_url, report=True
            )
            deadline = time.monotonic() + 120
            while _status(tmp_path / "r", "e/after-1") != "failed":
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.1)
        finally:
            for conn in held:
                conn.close()
            flag.touch()
        _, stderr = proc.communicate(timeout=180)

    assert proc.returncode == 1, stderr[-3000:]
    run = load_run(tmp_path / "r" / "latest")
    assert {v.key: v.meta["status"] for v in run.variants} == {
        "e/after-1": "failed",
        "e/later-1": "complete",
    }
    error = run.variants[0].meta["error"]
    assert "\n" not in error and "remaining connection slots are reserved" in error
    warning = run.variants[0].meta["preflight"]["warning"]
    assert warning.startswith("other clients hold 27 of the server's 30 connection slots: 0 are")
    said = stderr.replace("\n", " ")
    assert said.index(f"warning: e/after: {warning}") < said.index(f"! e/after: failed: {error}")
    assert "Traceback" not in stderr
    assert (run.path / "report.md").is_file()
