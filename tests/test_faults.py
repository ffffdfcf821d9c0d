"""Faults mid-run, end to end: real poolbench, real PostgreSQL, real uvicorn, real Locust.

- a worker killed, the app's master killed, the postmaster killed: each in one variant of
  one run, which goes on to the next variant; the first is `degraded`, the others `failed`,
  the run `failed` (exit 1), and events.jsonl says what happened when;
- poolbench itself killed with SIGKILL: its children die with it; the next `poolbench run`
  and `poolbench clean` remove the data directory, the private role and database;
- a hostile password on a server whose slots are mostly taken: the password appears in no
  output, the run warns before the load, and the refusals are counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import REPO, pid_alive, poolbench_cli

from poolbench.infra.postgres import embedded_server
from poolbench.results.run_folder import load_run

pytestmark = pytest.mark.e2e

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH = """
[variants.after]
app_dir = "{repo}/apps_after"
[experiments.e]
variants = ["after"]
repeats = {repeats}
app = {{workers = {workers}, pool_size = {pool_size}, max_overflow = {max_overflow}}}
load = {{users = {users}, spawn_rate = {users}, shape = "steady", \
locust_args = ["--hold-ms", "{hold_ms}"]}}
phases = {{warmup_s = 0, load_s = {load_s}, idle_s = 0}}
"""


def _bench(tmp_path: Path, **settings) -> Path:
    values = {
        "repeats": 1,
        "workers": 1,
        "pool_size": 2,
        "max_overflow": 0,
        "users": 8,
        "hold_ms": 5,
        "load_s": 5,
        **settings,
    }
    path = tmp_path / "bench.toml"
    path.write_text(BENCH.format(repo=REPO, **values))
    return path


def _start(config: Path, out: Path, *extra: str, report: bool = False) -> subprocess.Popen:
    args = ["run", "--config", str(config), "--out", str(out), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "poolbench", *args, *([] if report else ["--no-report"])],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _in_load(out: Path, proc: subprocess.Popen, variant_dir: str, timeout: float = 120) -> dict:
    """variant.json of `variant_dir` once its load phase (Locust's test) has run 1.5 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for path in out.glob(f"*/{variant_dir}/variant.json"):
            entry = json.loads(path.read_text())
            if any(p["name"] == "load" for p in entry.get("phases", [])):
                time.sleep(1.5)
                return entry
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{variant_dir} never reached its load phase")


def _gone(pids, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def _events(run_dir: Path, variant_dir: str, kind: str) -> list[dict]:
    lines = (run_dir / variant_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_a_worker_the_master_and_the_postmaster_killed_mid_load(tmp_path: Path) -> None:
    """One run, three repeats of a two-worker app: kill a worker, the master, the postmaster."""
    out = tmp_path / "r"
    # 8 s of load: uvicorn's replacement of the killed worker must start within it (at 5 s
    # it did not, once, on a busy machine)
    proc = _start(_bench(tmp_path, repeats=3, workers=2, load_s=8), out)
    killed = {}
    entry = _in_load(out, proc, "e/after-1")
    workers = psutil.Process(entry["pids"]["app"]).children()
    worker = next(p for p in workers if "resource_tracker" not in " ".join(p.cmdline()))
    killed["worker"] = worker.pid
    os.kill(worker.pid, signal.SIGKILL)
    entry = _in_load(out, proc, "e/after-2")
    killed["master"] = entry["pids"]["app"]
    app_group = [p.pid for p in psutil.Process(killed["master"]).children(recursive=True)]
    os.kill(killed["master"], signal.SIGKILL)
    entry = _in_load(out, proc, "e/after-3")
    killed["postmaster"] = entry["pids"]["postmaster"]
    os.kill(killed["postmaster"], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)

    assert proc.returncode == 1, stderr[-3000:]
    run = load_run(out / "latest")
    statuses = {v.key: v.meta["status"] for v in run.variants}
    assert statuses == {"e/after-1": "degraded", "e/after-2": "failed", "e/after-3": "failed"}
    assert run.meta["status"] == "failed"
    assert run.meta["error"].startswith("2 of 3 variants failed: e/after-2: the app's master")

    [exited] = _events(run.path, "e/after-1", "app_process_exited")
    assert (exited["pid"], exited["role"]) == (killed["worker"], "worker")
    assert exited["exit_status"] in (-9, None)  # known if read before uvicorn reaped it
    assert exited["phase"] == "load" and 1.5 <= exited["t"] < 4
    replaced = [
        e for e in _events(run.path, "e/after-1", "app_process_started") if e["phase"] != "starting"
    ]
    assert [e["role"] for e in replaced] == ["worker"]  # uvicorn started a new one
    assert (
        run.variants[0].meta["error"].startswith(f"an app worker (pid {killed['worker']}) exited")
    )

    [master] = _events(run.path, "e/after-2", "app_process_exited")
    assert (master["role"], master["exit_status"], master["phase"]) == ("master", -9, "load")
    assert (
        run.variants[1]
        .meta["error"]
        .startswith(f"the app's master process (pid {killed['master']}) exited (signal 9) at ")
    )
    assert f"(load phase, t = {master['t']:.1f} s)" in run.variants[1].meta["error"]

    [postgres] = _events(run.path, "e/after-3", "postgres_exited")
    assert (postgres["pid"], postgres["exit_status"]) == (killed["postmaster"], -9)
    assert run.variants[2].meta["error"].startswith("the PostgreSQL server (postmaster pid")
    assert "! e/after: the app's master process" in stderr  # said in the terminal too
    assert "run " + run.meta["run_id"] + ": failed" in stdout
    assert not _gone(app_group)  # the orphaned workers of the killed master are gone too


def _hard_kill(config: Path, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    """Start a run, SIGKILL it mid-load; its entry and its ledger."""
    proc = _start(config, out, *extra)
    entry = _in_load(out, proc, "e/after-1")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    [run_dir] = [p for p in out.iterdir() if not p.is_symlink()]
    ledger = [json.loads(line) for line in (run_dir / "started.jsonl").read_text().splitlines()]
    return entry, ledger


def test_sigkill_of_poolbench_leaves_nothing_after_the_next_run_or_clean(tmp_path: Path) -> None:
    config = _bench(tmp_path)
    # embedded server: the children die with poolbench, the data directory stays
    entry, ledger = _hard_kill(config, tmp_path / "embedded")
    children = [entry["pids"][k] for k in ("app", "load", "postmaster")]
    assert not _gone(children, timeout=10)  # PR_SET_PDEATHSIG
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
    assert not _gone([entry["pids"]["app"], entry["pids"]["load"]], timeout=10)
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


HOSTILE = "Ha#sh?PW"  # libpq takes it unencoded; urllib would cut it at '#'
SQUATTERS = 20


@pytest.fixture(scope="module")
def crowded_run(tmp_path_factory: pytest.TempPathFactory):
    """A --database-url run on a 30-slot server, 20 slots held by another client, with the
    superuser's password set to HOSTILE; the report is written too."""
    tmp = tmp_path_factory.mktemp("crowded")
    with embedded_server(settings={"max_connections": "30"}) as server:
        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE postgres PASSWORD '{HOSTILE}'")
            admin.execute("CREATE ROLE squatter LOGIN PASSWORD 'squat'")
        squat = f"postgresql://squatter:squat@127.0.0.1:{server.port}/postgres"
        held = [psycopg.connect(squat) for _ in range(SQUATTERS)]
        try:
            url = f"postgresql://postgres:{HOSTILE}@127.0.0.1:{server.port}/postgres"
            config = _bench(tmp, pool_size=5, max_overflow=5, users=20, hold_ms=50)
            proc = _start(config, tmp / "r", "--database-url", url, report=True)
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            for conn in held:
                conn.close()
    return proc.returncode, stdout, stderr, tmp / "r"


def test_a_hostile_password_appears_in_no_output(crowded_run) -> None:
    returncode, stdout, stderr, out = crowded_run
    assert returncode == 0, stderr[-3000:]
    written = {p: p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()}
    assert {"run.json", "variant.json", "app.log", "report.md", "report.html"} <= {
        p.name for p in written
    }
    forms = [HOSTILE, "Ha%23sh%3FPW", "Ha#sh", "sh?PW"]
    leaks = [(str(p), f) for p, text in written.items() for f in forms if f in text]
    leaks += [
        (stream, f)
        for stream, text in (("stdout", stdout), ("stderr", stderr))
        for f in forms
        if f in text
    ]
    assert leaks == []
    meta = json.loads((out / "latest" / "run.json").read_text())
    assert (
        ":***@127.0.0.1" in meta["command"] and ":***@127.0.0.1" in meta["config"]["database_url"]
    )


def test_a_crowded_server_is_warned_about_and_its_refusals_counted(crowded_run) -> None:
    _, _, stderr, out = crowded_run
    [variant] = load_run(out / "latest").variants
    preflight = variant.meta["preflight"]
    ceiling = sum(e["pool_size"] + e["max_overflow"] for e in variant.meta["engines"])
    assert preflight["other_clients"] == SQUATTERS
    assert preflight["free_slots"] == 30 - 3 - SQUATTERS - preflight["poolbench_clients"]
    assert preflight["ceiling"] == ceiling > preflight["free_slots"]
    assert preflight["warning"].startswith(f"other clients hold {SQUATTERS} of the server's 30")
    assert f"warning: e/after: {preflight['warning']}" in stderr.replace("\n", " ")
    refusals = variant.refusals
    assert refusals["app_log"] > 0 and refusals["count"] >= refusals["app_log"]


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
    proc = _start(_bench(tmp_path, repeats=3, load_s=12), out, report=True)
    entry = _in_load(out, proc, "e/after-1")
    app_frozen = _freeze(_tree(entry["pids"]["app"]), 4.0)
    entry = _in_load(out, proc, "e/after-2")
    pg_frozen = _freeze(_tree(entry["pids"]["postmaster"]), 6.0)
    entry = _in_load(out, proc, "e/after-3")
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
        [stall] = _events(run.path, key, "stalled")
        assert cause in stall["causes"] and stall["phase"] == "load"
        assert stopped - 1.5 <= stall["ts"] <= stopped + 0.6
        assert resumed - 0.1 <= stall["end"] <= resumed + 3
        error = next(v for v in run.variants if v.key == key).meta["error"]
        assert error.startswith("the variant stalled for ") and "\n" not in error
    assert "postgres_silent" in _events(run.path, "e/after-2", "stalled")[0]["causes"]
    [killed] = _events(run.path, "e/after-3", "locust_exited")
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


LOAD_FAULTS = """
[defaults]
experiments = ["raising", "failing", "allowed"]
[variants.after]
app_dir = "{repo}/apps_after"
[variants.exposed]
command = ["{python}", "-m", "uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "{{port}}"]
cwd = "{repo}/apps_after"
[experiments.raising]
variants = ["exposed", "after"]
app = {{pool_size = 2, max_overflow = 0}}
load = {{users = 4, spawn_rate = 4, shape = "steady", locustfile = "{raising}"}}
phases = {{warmup_s = 0, load_s = 4, idle_s = 0}}
[experiments.failing]
variants = ["after"]
app = {{pool_size = 2, max_overflow = 0}}
load = {{users = 4, spawn_rate = 4, shape = "steady", locustfile = "{failing}"}}
phases = {{warmup_s = 0, load_s = 4, idle_s = 0}}
[variants.exposed-on-purpose]
extends = "exposed"
listen_beyond_loopback = true
[experiments.allowed]
variants = ["exposed-on-purpose"]
app = {{pool_size = 2, max_overflow = 0}}
load = {{users = 4, spawn_rate = 4, shape = "steady"}}
phases = {{warmup_s = 0, load_s = 3, idle_s = 0}}
"""
RAISING = """
from locust import HttpUser, constant, task
class Client(HttpUser):
    wait_time = constant(0.1)
    def on_start(self):
        raise RuntimeError("login refused: no token")
    @task
    def health(self):
        self.client.get("/health")
"""
FAILING = """
from locust import HttpUser, constant, task
class Client(HttpUser):
    wait_time = constant(0.1)
    @task
    def missing(self):
        self.client.get("/no-such-route")
"""


def test_an_exposed_app_users_failing_on_start_and_every_request_failing_fail_their_variant(
    tmp_path: Path,
) -> None:
    """An app on 0.0.0.0 is refused; a load whose users raise in on_start (no requests) and
    one whose every request fails are `failed`, with the first exceptions; the run goes on
    to each next variant and writes its report."""
    (tmp_path / "raising.py").write_text(RAISING)
    (tmp_path / "failing.py").write_text(FAILING)
    config = tmp_path / "bench.toml"
    config.write_text(
        LOAD_FAULTS.format(
            repo=REPO,
            python=sys.executable,
            raising=tmp_path / "raising.py",
            failing=tmp_path / "failing.py",
        )
    )
    proc = _start(config, tmp_path / "r", report=True)
    _, stderr = proc.communicate(timeout=240)

    assert proc.returncode == 1, stderr[-3000:]
    run = load_run(tmp_path / "r" / "latest")
    errors = {v.key: v.meta["error"] for v in run.variants}
    statuses = {v.key: v.meta["status"] for v in run.variants}
    allowed = statuses.pop("allowed/exposed-on-purpose-1")
    assert statuses == {
        "raising/exposed-1": "failed",
        "raising/after-1": "failed",
        "failing/after-1": "failed",
    }
    errors.pop("allowed/exposed-on-purpose-1")
    port = errors["raising/exposed-1"].split("0.0.0.0:")[1].split(",")[0]
    assert errors["raising/exposed-1"].startswith(
        f"the app listens on 0.0.0.0:{port}, beyond loopback"
    )
    assert errors["raising/after-1"].startswith(
        "the load made no requests: login refused: no token (in on_start, raising.py:6) ×"
    )
    assert errors["failing/after-1"].startswith("all ")
    assert "requests failed: GET /no-such-route: " in errors["failing/after-1"]
    assert all("\n" not in e for e in errors.values())
    for key, error in errors.items():
        assert f"! {key.split('-')[0]}: failed: {error}" in stderr
    assert "Traceback" not in stderr
    report = (run.path / "report.md").read_text()
    assert "login refused: no token" in report and "/no-such-route" in report
    # allowed explicitly: recorded and warned about, not refused
    assert allowed == "complete"
    meta = run.variants[-1].meta
    exposed_at = next(end for end in meta["listening"] if end.startswith("0.0.0.0:"))
    assert meta["listening_warning"].startswith(f"the app listens on {exposed_at}, beyond loopback")
    assert f"warning: allowed/exposed-on-purpose: {meta['listening_warning']}" in stderr
    assert (
        f"exposed-on-purpose-1: the app listens on {exposed_at}, beyond loopback: other" in report
    )


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
            proc = _start(config, tmp_path / "r", "--database-url", server.admin_url, report=True)
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
