"""Faults of the load and of the server's slots, end to end (real poolbench, PostgreSQL,
uvicorn, Locust): an app listening beyond loopback, users failing on start, every request
failing; a hostile password on a server whose slots are mostly taken: the password appears
in no output, the run warns before the load, and the refusals are counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import REPO
from faults import bench_file, start_run

from poolbench.infra.postgres import embedded_server
from poolbench.results.run_folder import load_run

pytestmark = pytest.mark.e2e


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
            config = bench_file(tmp, pool_size=5, max_overflow=5, users=20, hold_ms=50)
            proc = start_run(config, tmp / "r", "--database-url", url, report=True)
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
    proc = start_run(config, tmp_path / "r", report=True)
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
