"""Bring your own app: a third-party service run from its bench file alone
(tests/fixtures/thirdparty).

The service reads POSTGRES_* (not DATABASE_URL) and SECRET_KEY, needs a migration that
creates a contrib extension, runs two uvicorn workers with a sync engine of pool_size 2 +
max_overflow 1 and no application_name, prints its secrets at start-up, and is driven by
a plain locustfile. One real run is shared; one of its workers is killed mid-load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from conftest import REPO, pid_alive

from poolbench.results.events import read_events
from poolbench.results.pool_probe import read_probe
from poolbench.results.run_folder import load_run

FIXTURE = REPO / "tests" / "fixtures" / "thirdparty"
BENCH = FIXTURE / "bench.toml"
SITE = "service.main:36"  # create_engine(...) in tests/fixtures/thirdparty/service/main.py
SECRET_KEY = "fixture-signing-key-5f2b9c"  # what the service must never see written out
KILL_AFTER_S = 3.0  # into the 6 s load: the pools have filled by then


@dataclass
class ByoRun:
    run_dir: Path
    proc: subprocess.CompletedProcess
    killed_pid: int | None
    db_password: str | None  # read from the live app's environment, to grep for it


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FIXTURE_PYTHON": sys.executable,
        "FIXTURE_SECRET_KEY": SECRET_KEY,
        **extra,
    }


def _poolbench(out: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poolbench",
            "run",
            "--config",
            str(BENCH),
            "--out",
            str(out),
            *args,
        ],
        cwd=REPO,
        env=_env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _variant_dir(out: Path) -> Path | None:
    found = sorted(out.glob("*/thirdparty/service-1"))
    return found[0] if found else None


def _workers(master: int) -> list[psutil.Process]:
    """uvicorn's worker processes: the master's children that hold a TCP connection."""
    workers = []
    for child in psutil.Process(master).children():
        try:
            if any(c.raddr for c in child.net_connections(kind="inet")):
                workers.append(child)
        except psutil.Error:
            continue
    return workers


def _kill_one_worker(out: Path, result: dict) -> None:
    """Wait for the load phase, note the app's password, SIGKILL one worker after a while."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        vdir = _variant_dir(out)
        events = read_events(vdir / "events.jsonl") if vdir else []
        if any(e["event"] == "phase_started" and e.get("phase") == "load" for e in events):
            break
        time.sleep(0.2)
    else:
        return
    master = json.loads((vdir / "variant.json").read_text())["pids"]["app"]
    result["db_password"] = psutil.Process(master).environ().get("POSTGRES_PASSWORD")
    time.sleep(KILL_AFTER_S)
    victim = _workers(master)[0]
    result["killed_pid"] = victim.pid
    victim.send_signal(signal.SIGKILL)


@pytest.fixture(scope="session")
def byo_run(tmp_path_factory: pytest.TempPathFactory) -> ByoRun:
    out = tmp_path_factory.mktemp("byo")
    result: dict = {}
    proc = _poolbench(out)
    killer = threading.Thread(target=_kill_one_worker, args=(out, result), daemon=True)
    killer.start()
    stdout, stderr = proc.communicate(timeout=240)
    killer.join(10)
    completed = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode == 0, stderr[-3000:]
    return ByoRun(
        (out / "latest").resolve(), completed, result.get("killed_pid"), result.get("db_password")
    )


def _meta(run: ByoRun) -> dict:
    return json.loads((run.run_dir / "thirdparty" / "service-1" / "variant.json").read_text())


@pytest.mark.e2e
def test_byo_run_completes_from_the_bench_file_alone(byo_run: ByoRun) -> None:
    """Settings from env placeholders, the migration as a setup step, a plain locustfile."""
    vdir = byo_run.run_dir / "thirdparty" / "service-1"
    run_json = json.loads((byo_run.run_dir / "run.json").read_text())
    assert run_json["status"] in ("complete", "degraded"), run_json["error"]  # a worker died
    setup_log = (vdir / "setup.log").read_text()
    assert "CREATE EXTENSION citext" in setup_log and "migrated" in setup_log
    meta = _meta(byo_run)
    assert meta["setup"]["commands"] == [["${FIXTURE_PYTHON}", "migrate.py", "citext"]]
    server_port = urlsplit(meta["database"]["app_url"]).port
    assert meta["env"]["POSTGRES_PORT"] == str(server_port)  # {db_port} expanded
    assert meta["env"]["POSTGRES_PASSWORD"] == "***" and meta["env"]["SECRET_KEY"] == "***"
    locust = json.loads((vdir / "locust.json").read_text())
    assert sum(e["num_requests"] for e in locust) > 0


@pytest.mark.e2e
def test_byo_declared_pools_and_measured_workers_are_recorded(byo_run: ByoRun) -> None:
    meta = _meta(byo_run)
    assert meta["workers"] == 2 and meta["workers_source"] == "variant"
    assert meta["engines"] == [
        {
            "name": "untagged",
            "pool_size": 2,
            "max_overflow": 1,
            "per_process": True,
            "source": "bench file",
        }
    ]
    processes = meta["app_processes"]
    assert processes["max_with_db_connections"] == meta["workers"]
    seen = {p["pid"]: p for p in processes["pids"]}
    killed = seen[byo_run.killed_pid]
    assert killed["db_connections_max"] > 0
    # uvicorn replaced the killed worker: a new child of the same master, seen after it
    assert [
        p
        for p in seen.values()
        if p["ppid"] == killed["ppid"] and p["first_seen"] > killed["last_seen"]
    ]


@pytest.mark.e2e
def test_byo_peak_is_workers_times_pool_and_connections_are_per_process(byo_run: ByoRun) -> None:
    """The load saturates every pool: the peak is workers × (pool_size + max_overflow)."""
    meta = _meta(byo_run)
    ceiling = meta["workers"] * sum(e["pool_size"] + e["max_overflow"] for e in meta["engines"])
    variant = next(v for v in load_run(byo_run.run_dir).variants)
    samples = variant.samples
    total = samples[samples.metric == "connections_total"]
    assert total.value.max() == ceiling
    labels = set(samples[samples.metric == "connections"].application_name)
    worker_pids = {p["pid"] for p in meta["app_processes"]["pids"] if p["db_connections_max"] > 0}
    # The service names no connection: the pool probe names them after the engine's creation
    # site, one name over all workers; which worker held what is in the probe's own files.
    assert SITE in labels
    probe = read_probe(byo_run.run_dir / "thirdparty" / "service-1")
    assert {e.pid for e in probe.engines if e.site == SITE} >= worker_pids
    assert any(not p.ended for p in probe.processes)  # the worker killed mid-load


@pytest.mark.e2e
def test_byo_report_shows_each_engine_by_its_site_with_its_wait(byo_run: ByoRun) -> None:
    """Nothing declared but `pool_size`/`max_overflow` of an `untagged` engine: the probe
    measured the same sizes, the model counts its site-named connections as that engine, and
    the report shows its wait beside the request latency."""
    [variant] = load_run(byo_run.run_dir).variants
    from poolbench.analysis.figures import analyse_variant

    figures = analyse_variant(variant).figures
    engine = figures.probe.engine(SITE)
    assert (engine.pool_class, engine.pool_size, engine.max_overflow) == ("QueuePool", 2, 1)
    assert engine.name_source == "probe" and engine.wait.n > 0 and engine.wait.p95_ms is not None
    assert SITE in figures.model.engines[0].members
    assert not [f for f in figures.model.flags if f.code == "declaration_mismatch"]
    report = (byo_run.run_dir / "report.md").read_text()
    assert f"| service | {SITE} | {SITE} (set by the probe) | QueuePool 2 + 1 × " in report


@pytest.mark.e2e
def test_byo_results_hold_no_secret(byo_run: ByoRun) -> None:
    """The service printed its database URL and SECRET_KEY; no file or output may keep them."""
    assert byo_run.db_password, "the app's password was not read during the run"
    secrets = [SECRET_KEY, byo_run.db_password]
    app_log = (byo_run.run_dir / "thirdparty" / "service-1" / "app.log").read_text()
    assert "service starting: database postgresql+psycopg://poolbench_app:***@" in app_log
    texts = {"stdout": byo_run.proc.stdout, "stderr": byo_run.proc.stderr}
    for path in byo_run.run_dir.rglob("*"):
        if path.is_file() and path.suffix != ".png":
            texts[str(path)] = path.read_text(errors="replace")
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{name} holds a secret"


@pytest.mark.e2e
def test_byo_killed_worker_is_an_event(byo_run: ByoRun) -> None:
    """The watchdog (issue 15) records the worker's exit; the variant is then `degraded`."""
    assert byo_run.killed_pid is not None
    events = read_events(byo_run.run_dir / "thirdparty" / "service-1" / "events.jsonl")
    exits = [e for e in events if e["event"] == "app_process_exited"]
    assert byo_run.killed_pid in {e.get("pid") for e in exits}
    variant = json.loads(
        (byo_run.run_dir / "thirdparty" / "service-1" / "variant.json").read_text()
    )
    assert variant["status"] == "degraded"
    assert f"(pid {byo_run.killed_pid}) exited" in variant["error"]


# --------------------------------------------------------------------------- failures


def _fail(experiment: str, tmp_path: Path, *args: str, **extra: str) -> str:
    proc = _poolbench(tmp_path, "--experiment", experiment, "--no-report", *args, **extra)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == stderr.strip().splitlines()[-1], stderr
    return errors[0]


@pytest.mark.e2e
def test_failing_setup_is_one_line_with_its_log_tail_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "child.pid"
    error = _fail("broken-setup", tmp_path, FIXTURE_PIDFILE=str(pidfile))
    assert "setup command 2/2" in error and "exited with code 1" in error
    assert 'migration 0001_initial failed: relation "tenant" does not exist' in error
    assert "setup.log" in error
    assert not pid_alive(int(pidfile.read_text()))  # the child the migration left behind


@pytest.mark.e2e
def test_missing_extension_names_it_and_the_fix(tmp_path: Path) -> None:
    error = _fail("needs-uuid", tmp_path)
    assert "extension uuid-ossp is not available in the embedded PostgreSQL 18" in error
    assert "[experiments.needs-uuid.postgres] bindir" in error and "--database-url" in error


@pytest.mark.slow
def test_unset_env_variable_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    env = _env()
    del env["FIXTURE_SECRET_KEY"]
    proc = subprocess.run(
        [sys.executable, "-m", "poolbench", "run", "--config", str(BENCH), "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "poolbench run: error: variants.service.env.SECRET_KEY uses ${FIXTURE_SECRET_KEY}, "
        "which is not set in poolbench's environment: export FIXTURE_SECRET_KEY=... before "
        "`poolbench run`"
    )
    assert list(tmp_path.iterdir()) == []  # no results folder for bad input
