"""Nothing outlives a run: repeated Ctrl-C, a hard-killed ui session, Locust's forked workers,
and a role with exactly the privileges the README asks for on a server someone else runs.

Real runs against the embedded server (and the PostgreSQL 15 service on 127.0.0.1:5432 for
the half-privileged role, created and dropped by the test). What each leaves is read from
the run's own ledger (started.jsonl), so a data directory or process of another run on this
machine is never mistaken for this one's.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import REPO, pid_alive, poolbench_cli

from poolbench.infra import ledger

pytestmark = pytest.mark.e2e

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH = """
[variants.after]
app_dir = "{repo}/apps_after"
[experiments.e]
variants = ["after"]
app = {{workers = 1, pool_size = 2, max_overflow = 0}}
load = {{users = 8, spawn_rate = 8, shape = "steady", locust_args = ["--hold-ms", "5"]}}
phases = {{warmup_s = 0, load_s = {load_s}, idle_s = 1}}
"""


def _bench(tmp_path: Path, load_s: int = 6) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(BENCH.format(repo=REPO, load_s=load_s))
    return path


def _start(*args: str) -> subprocess.Popen:
    """poolbench in a session of its own, as in a terminal (Ctrl-C reaches its group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "poolbench", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _in_load(out: Path, proc: subprocess.Popen, variant: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        for path in out.glob(f"2*/{variant}/variant.json"):
            try:
                entry = json.loads(path.read_text())
            except ValueError:
                continue
            if entry.get("pids", {}).get("load") or any(
                p["name"] == "load" for p in entry["phases"]
            ):
                time.sleep(1.0)
                return entry
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{variant} never reached its load")


def _ledger(out: Path) -> list[dict]:
    [path] = [p for p in out.glob(f"2*/{ledger.LEDGER_FILE}")]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _data_dirs(out: Path) -> list[Path]:
    return [Path(i["path"]) for i in _ledger(out) if i.get("kind") == "data_dir"]


def _processes(out: Path) -> list[int]:
    return [int(i["pid"]) for i in _ledger(out) if i.get("kind") == "process"]


def _gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


@pytest.mark.parametrize("interval", [0.5, 0.05])
def test_ctrl_c_twice_leaves_no_data_directory_and_no_process(
    tmp_path: Path, interval: float
) -> None:
    """Before: exit 130, but the 21 MB poolbench-pg-* directory stayed in the temporary
    folder and `poolbench clean` said "nothing to clean" (4 of 4 times)."""
    out = tmp_path / "r"
    proc = _start("run", "--config", str(_bench(tmp_path, load_s=30)), "--out", str(out))
    _in_load(out, proc, "e/after-1")
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(interval)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    # 130, or killed by the second SIGINT after poolbench had finished (as a shell sees: 130)
    assert proc.returncode in (130, -signal.SIGINT), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    [data_dir] = _data_dirs(out)
    assert not data_dir.exists(), output[-2000:]
    assert _gone(_processes(out), 10) == []
    [run_dir] = out.glob("2*")
    assert ledger.leftovers(run_dir / ledger.LEDGER_FILE) == []  # each release recorded
    cleaned = poolbench_cli("clean", str(out), timeout=60)
    assert cleaned.returncode == 0 and "nothing to clean" in cleaned.stdout, cleaned.stdout


def test_a_ui_session_killed_hard_is_cleaned_up(tmp_path: Path) -> None:
    """Before: its data directory stayed and clean said "abandoned: nothing was left"
    (no started.jsonl for a ui session)."""
    out = tmp_path / "ui"
    proc = _start(
        "ui",
        "--config",
        str(_bench(tmp_path)),
        "--experiment",
        "e",
        "--variant",
        "after",
        "--out",
        str(out),
        "--no-report",
    )
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if line.startswith("Locust web UI: ") or time.monotonic() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    data_dir, feed_dir = sorted(_data_dirs(out))  # poolbench-pg-*, poolbench-ui-*
    assert data_dir.exists() and feed_dir.exists()  # SIGKILL unwinds nothing: clean's job
    cleaned = poolbench_cli("clean", str(out), timeout=60)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"removed {data_dir}" in cleaned.stdout and f"removed {feed_dir}" in cleaned.stdout
    assert not data_dir.exists() and not feed_dir.exists()
    assert _gone(_processes(out), 10) == []


def test_locust_workers_die_with_a_sigkilled_poolbench(tmp_path: Path) -> None:
    """Before: with --load-processes 2 Locust's workers stayed (parent 1) for 30-60 s."""
    out = tmp_path / "r"
    proc = _start(
        "run",
        "--config",
        str(_bench(tmp_path, load_s=30)),
        "--out",
        str(out),
        "--load-processes",
        "2",
        "--no-report",
    )
    try:
        entry = _in_load(out, proc, "e/after-1")
        master = psutil.Process(entry["pids"]["load"])
        deadline = time.monotonic() + 30
        while len(master.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [p.pid for p in master.children()]
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        left = _gone([master.pid, *workers], 10)
        assert left == [], f"master {master.pid}, workers {workers}: {_describe(left)}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        poolbench_cli("clean", str(out), timeout=60)  # what SIGKILL left, for the next test


def _describe(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found.append(
                f"{pid} ({proc.status()}, parent {proc.ppid()}): {' '.join(proc.cmdline())}"
            )
        except psutil.Error:
            found.append(f"{pid} (gone)")
    return found


@pytest.fixture
def half_privileged_url() -> Iterator[str]:
    """A role with exactly the README's privileges (pg_monitor, CREATEDB, CREATEROLE)."""
    name = f"h27b_half_{secrets.token_hex(3)}"
    try:
        admin = psycopg.connect(SYSTEM_PG, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    with admin:
        admin.execute(f"CREATE ROLE {name} LOGIN CREATEDB CREATEROLE")
        admin.execute(f"GRANT pg_monitor TO {name}")
        try:
            yield f"postgresql://{name}@127.0.0.1:5432/postgres"
        finally:
            left = admin.execute(
                "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.roleid = r.oid "
                "JOIN pg_roles me ON me.oid = m.member WHERE me.rolname = %s "
                "AND r.rolname LIKE 'poolbench_app_%%'",
                (name,),
            ).fetchall()
            for (role,) in left:
                suffix = role.removeprefix("poolbench_app_")
                admin.execute(f"DROP DATABASE IF EXISTS poolbench_{suffix} WITH (FORCE)")
                admin.execute(f"DROP ROLE IF EXISTS {role}")
            admin.execute(f"DROP ROLE {name}")


def _app_roles() -> set[str]:
    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        rows = admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'poolbench_app_%'")
        return {r[0] for r in rows}


def test_a_role_with_the_readme_privileges_runs_and_leaves_nothing(
    tmp_path: Path, half_privileged_url: str
) -> None:
    """Before: InsufficientPrivilege: must be member of role "poolbench_app_…" (a traceback),
    and the role stayed on the server, which `poolbench clean --database-url` did not find."""
    before = _app_roles()
    out = tmp_path / "r"
    proc = poolbench_cli(
        "run",
        "--config",
        str(_bench(tmp_path, load_s=3)),
        "--out",
        str(out),
        "--no-report",
        "--database-url",
        half_privileged_url,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "complete" in proc.stdout
    assert _app_roles() - before == set()


def test_clean_finds_the_role_a_killed_run_left_with_the_readme_privileges(
    tmp_path: Path, half_privileged_url: str
) -> None:
    out = tmp_path / "r"
    before = _app_roles()
    proc = _start(
        "run",
        "--config",
        str(_bench(tmp_path, load_s=30)),
        "--out",
        str(out),
        "--no-report",
        "--database-url",
        half_privileged_url,
    )
    try:
        _in_load(out, proc, "e/after-1")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    left = _app_roles() - before
    cleaned = poolbench_cli("clean", str(out), "--database-url", half_privileged_url, timeout=60)
    assert len(left) == 1
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"role {left.pop()}" in cleaned.stdout
    assert _app_roles() - before == set()


def test_signals_wait_for_a_deferred_block_and_reach_the_handler_before_it() -> None:
    """A nested deferral hands its signal to the enclosing one; an ignored signal stays
    ignored (a ui session quitting ignores a second Ctrl-C)."""
    script = (
        "import os, signal, time\n"
        "from poolbench.infra.process_group import signals_deferred\n"
        "done = []\n"
        "try:\n"
        "    with signals_deferred():\n"
        "        with signals_deferred():\n"
        "            os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2); done.append('inner')\n"
        "        done.append('outer')\n"
        "except KeyboardInterrupt:\n"
        "    done.append('interrupted')\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "with signals_deferred():\n"
        "    os.kill(os.getpid(), signal.SIGINT); time.sleep(0.2)\n"
        "print(','.join(done + ['ignored']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.stdout.strip() == "inner,outer,interrupted,ignored", proc.stderr
