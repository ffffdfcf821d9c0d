"""`poolbench clean`: what a run killed hard left behind is found, undone and reported.

These tests build an abandoned run by hand around real processes (a process group with a
grandchild, as uvicorn's master and workers are), so each part of the cleaning is checked on
its own: the owner is gone, a reused pid is left alone, a live owner's run is not touched.
End-to-end hard kills of `poolbench run` are in tests/test_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import pid_alive, poolbench_cli

from poolbench.infra import ledger, undo
from poolbench.infra.process_group import die_with_parent
from poolbench.results.run_folder import load_run, owner
from poolbench.run.clean import abandoned_runs, clean_run

GROUP = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
)


def _dead_owner() -> dict:
    """The owner record of a process that has ended (as a SIGKILLed poolbench has)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    me = owner()
    record = {**me, "pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}
    proc.wait()
    return record


def _abandoned_run(root: Path, run_owner: dict, items: list[dict]) -> Path:
    run_dir = root / "20261129-000000-e"
    (run_dir / "e" / "v-1").mkdir(parents=True)
    entry = {"experiment": "e", "variant": "v", "repeat": 1, "dir": "e/v-1", "status": "running"}
    (run_dir / "e" / "v-1" / "variant.json").write_text(json.dumps(entry))
    (run_dir / "e" / "v-1" / "app.log").write_text("DATABASE_URL=postgresql://a:Leak/PW@h/db\n")
    meta = {
        "schema": 1,
        "run_id": run_dir.name,
        "status": "running",
        "error": None,
        "owner": run_owner,
        "experiments": [{"name": "e", "variants": [entry]}],
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    with (run_dir / ledger.LEDGER_FILE).open("w") as handle:
        for item in items:
            handle.write(json.dumps(item) + "\n")
    return run_dir


def _group_leader() -> tuple[subprocess.Popen, int]:
    """A process in a session of its own with a child: returns it and the child's pid."""
    leader = subprocess.Popen([sys.executable, "-c", GROUP], start_new_session=True)
    deadline = time.monotonic() + 10
    while not psutil.Process(leader.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return leader, psutil.Process(leader.pid).children()[0].pid


def _process_item(proc: subprocess.Popen, create_time: float | None = None) -> dict:
    return {
        "kind": "process",
        "id": f"process/{proc.pid}",
        "pid": proc.pid,
        "pgid": proc.pid,
        "create_time": create_time or psutil.Process(proc.pid).create_time(),
        "what": "app v",
        "stop_signal": int(signal.SIGTERM),
    }


def test_clean_stops_the_group_removes_the_data_dir_and_marks_the_run(tmp_path: Path) -> None:
    leader, grandchild = _group_leader()
    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"poolbench-pg-test-{os.getpid()}"
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    run_dir = _abandoned_run(
        tmp_path,
        _dead_owner(),
        [
            _process_item(leader),
            {"kind": "data_dir", "id": f"data_dir/{data_dir}", "path": str(data_dir)},
        ],
    )
    try:
        assert abandoned_runs(tmp_path) == [run_dir]
        proc = poolbench_cli("clean", str(tmp_path), timeout=60)
        leader.wait(timeout=10)
        assert proc.returncode == 0, proc.stderr
        assert f"stopped app v (pid {leader.pid}, 2 processes)" in proc.stdout
        assert f"removed {data_dir}" in proc.stdout
        assert not pid_alive(grandchild)
        assert not data_dir.exists()
        run = load_run(run_dir)
        assert run.meta["status"] == "abandoned"
        assert "ended without finishing" in run.meta["error"]
        assert run.variants[0].meta["status"] == "abandoned"
        assert "Leak/PW" not in (run_dir / "e" / "v-1" / "app.log").read_text()
        assert ledger.leftovers(run_dir / ledger.LEDGER_FILE) == []
        assert abandoned_runs(tmp_path) == []  # done once: the next clean finds nothing
    finally:
        for pid in (leader.pid, grandchild):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        leader.wait()


def test_a_reused_pid_and_a_live_owner_are_left_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        # the ledger's process has the bystander's pid but started an hour earlier: not ours
        reused = _process_item(bystander, psutil.Process(bystander.pid).create_time() - 3600)
        run_dir = _abandoned_run(tmp_path / "a", _dead_owner(), [reused])
        clean_run(run_dir)
        assert pid_alive(bystander.pid)
        # a run whose owner is alive (this test) is running, not abandoned
        live = _abandoned_run(tmp_path / "b", owner(), [_process_item(bystander)])
        assert abandoned_runs(tmp_path / "b") == []
        assert json.loads((live / "run.json").read_text())["status"] == "running"
        # an owner on another host cannot be judged from here
        elsewhere = {**_dead_owner(), "hostname": "another-host"}
        _abandoned_run(tmp_path / "c", elsewhere, [])
        assert abandoned_runs(tmp_path / "c") == []
    finally:
        bystander.kill()
        bystander.wait()


def test_a_database_left_on_a_server_needs_its_url_and_is_listed_until_then(
    tmp_path: Path,
) -> None:
    item = {
        "kind": "database",
        "id": "database/127.0.0.1:5432/poolbench_0000dead",
        "host": "127.0.0.1",
        "port": 5432,
        "user": "postgres",
        "dbname": "poolbench_0000dead",
        "role": "poolbench_app_0000dead",
    }
    run_dir = _abandoned_run(tmp_path, _dead_owner(), [item])
    first = clean_run(run_dir)
    assert first.done == []
    assert first.left == [
        "database poolbench_0000dead and role poolbench_app_0000dead on 127.0.0.1:5432 "
        "(run `poolbench clean --database-url postgresql://postgres@127.0.0.1:5432/postgres`)"
    ]
    assert abandoned_runs(tmp_path) == [run_dir]  # still something to undo
    other = clean_run(run_dir, "postgresql://postgres:S3cret@127.0.0.1:5433/postgres")
    assert "is another server" in other.left[0] and "S3cret" not in other.left[0]


def test_children_die_with_their_parent_even_by_sigkill(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a parent killed with SIGKILL takes its spawned child with it."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from poolbench.infra.process_group import spawn\n"
        "child = spawn([sys.executable, '-c', 'import time; time.sleep(60)'], what='child')\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert pid_alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_death_hook_exists_on_linux() -> None:
    assert die_with_parent(signal.SIGTERM) is not None


def test_an_ended_run_with_leftovers_is_cleaned_and_keeps_its_status(tmp_path: Path) -> None:
    """A run that ended `partial` (Ctrl-C twice) but never released its data directory.
    Before: `poolbench clean` said "nothing to clean" and the directory stayed."""
    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"poolbench-pg-ended-{os.getpid()}"
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    item = {"kind": "data_dir", "id": f"data_dir/{data_dir}", "path": str(data_dir)}
    run_dir = _abandoned_run(tmp_path, _dead_owner(), [item])
    meta = json.loads((run_dir / "run.json").read_text())
    meta["status"], meta["error"] = "partial", "interrupted (Ctrl-C or SIGTERM)"
    (run_dir / "run.json").write_text(json.dumps(meta))
    proc = poolbench_cli("clean", str(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{run_dir}: partial: removed {data_dir}" in proc.stdout
    assert not data_dir.exists()
    assert load_run(run_dir).meta["status"] == "partial"
    assert abandoned_runs(tmp_path) == []


def test_what_a_run_did_not_release_is_undone_when_its_ledger_closes(tmp_path: Path) -> None:
    """A teardown cut short (a second Ctrl-C outside protected code) left a process and a
    data directory unreleased; the end of the ledger's block undoes them, and says so."""
    from poolbench.infra.process_group import spawn

    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"poolbench-pg-settle-{os.getpid()}"
    with undo.recording(tmp_path):
        child = spawn([sys.executable, "-c", "import time; time.sleep(120)"], what="app v")
        data_dir.mkdir()
        ledger.started("data_dir", str(data_dir), path=str(data_dir))
    assert child.wait(timeout=15) is not None
    assert not data_dir.exists()
    assert ledger.leftovers(tmp_path / ledger.LEDGER_FILE) == []
