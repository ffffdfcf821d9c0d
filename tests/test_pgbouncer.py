"""PgBouncer between the app and PostgreSQL: a real PgBouncer, PostgreSQL, uvicorn and Locust.

One `poolbench run` of tests/fixtures/pgbouncer/bench.toml (three variants of the after app
behind a server pool of 3, ~45 s) answers the acceptance questions: PostgreSQL never sees more
than default_pool_size of the app's connections while the app holds more client connections;
clients wait in `SHOW POOLS` when the server pool is smaller than the concurrency; asyncpg's
statement cache through transaction mode fails requests with the server's message, counted;
max_client_conn refuses logins, counted apart from PostgreSQL's 53300.

PgBouncer's parts without a bench run (a missing binary, its settings, a hard kill, the
figures of a synthetic series) are in tests/test_pgbouncer_parts.py: apart, so that make
test's workers run them beside this file's run.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, pid_alive, poolbench_cli

from poolbench.analysis.metrics import BY_NAME
from poolbench.analysis.pgbouncer import POOLER_REFUSAL, read_samples
from poolbench.analysis.run_analysis import analyse
from poolbench.infra.ledger import leftovers

# CI installs PgBouncer (.ci/run): there its absence fails these tests instead of skipping them
pytestmark = pytest.mark.skipif(
    shutil.which("pgbouncer") is None
    and not Path("/usr/sbin/pgbouncer").exists()
    and not os.environ.get("CI"),
    reason="PgBouncer is not installed (apt-get install pgbouncer; .ci/run installs it)",
)

BENCH = REPO / "tests" / "fixtures" / "pgbouncer" / "bench.toml"
SERVER_POOL = 3  # default_pool_size in the fixture
APP_POOL = 10


@dataclass
class Run:
    run_dir: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def bouncer_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("pgbouncer")
    proc = poolbench_cli("run", "--config", str(BENCH), "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Run((out / "latest").resolve(), proc.stdout, proc.stderr)


def _dir(run: Run, variant: str) -> Path:
    return run.run_dir / "pgbouncer-test" / f"{variant}-1"


def _figures(run: Run, variant: str):
    summary = analyse(run.run_dir).summary
    return summary.experiments[0].variant(variant).first


@pytest.mark.e2e
def test_postgres_sees_at_most_default_pool_size_while_the_app_holds_more(bouncer_run: Run) -> None:
    f = _figures(bouncer_run, "behind")
    samples = pd.read_csv(_dir(bouncer_run, "behind") / "samples.csv")
    totals = samples[samples["metric"] == "connections_total"]["value"]
    assert not totals.empty and totals.max() <= SERVER_POOL  # every sample, not just the peak
    assert f.connections.peak == SERVER_POOL  # the load filled the server pool
    assert f.pgbouncer is not None and f.pgbouncer.server_ceiling == SERVER_POOL
    assert f.pgbouncer.peak_clients is not None and f.pgbouncer.peak_clients > SERVER_POOL
    assert f.model is not None and f.model.ceiling == SERVER_POOL
    assert f.model.app_ceiling is not None and f.model.app_ceiling >= APP_POOL


@pytest.mark.e2e
def test_clients_wait_when_the_server_pool_is_smaller_than_the_concurrency(
    bouncer_run: Run,
) -> None:
    frame = read_samples(_dir(bouncer_run, "behind") / "pgbouncer.csv")
    assert len(frame) > 50  # ~10 Hz over ~12 s
    assert frame["cl_waiting"].max() > 0
    assert frame["servers"].max() <= SERVER_POOL
    f = _figures(bouncer_run, "behind").pgbouncer
    assert f.peak_waiting is not None and f.peak_waiting > 0
    assert f.wait_p95_ms is not None and f.wait_p95_ms > 0
    assert f.prepared_statement_errors == 0 and f.pooler_refusals == 0
    figures = _figures(bouncer_run, "behind")
    assert figures.traffic.failures == 0
    assert BY_NAME["pooler_wait_p95_ms"].get(figures) == f.wait_p95_ms  # for thresholds
    assert BY_NAME["client_connections"].get(figures) == f.peak_clients
    assert "pooler clients" in bouncer_run.stdout  # the terminal's summary line
    probes = frame.dropna(subset=["probe_pooler_ms", "probe_direct_ms"])
    assert len(probes) >= 10  # once a second
    assert f.hop_ms is not None and 0 < f.hop_samples <= len(probes)


@pytest.mark.e2e
def test_misconfigured_asyncpg_fails_with_the_servers_message_counted(bouncer_run: Run) -> None:
    f = _figures(bouncer_run, "misconfigured")
    assert f.pgbouncer.prepared_statement_errors > 0
    assert f.traffic.failures > 0
    assert any("prepared statement" in m for m in f.pgbouncer.messages)
    report = (bouncer_run.run_dir / "report.md").read_text()
    assert "requests failed on prepared statements" in report
    assert "prepared statement" in report and "does not exist" in report


@pytest.mark.e2e
def test_max_client_conn_refusals_are_the_poolers_not_postgres(bouncer_run: Run) -> None:
    f = _figures(bouncer_run, "tight")
    log = (_dir(bouncer_run, "tight") / "pgbouncer.log").read_text()
    logged = sum(1 for line in log.splitlines() if POOLER_REFUSAL.search(line))
    assert logged > 0 and f.pgbouncer.pooler_refusals == logged
    assert not f.traffic.refusals  # PostgreSQL's 53300: none, and not these
    assert "refused by the pooler" in (bouncer_run.run_dir / "report.md").read_text()


@pytest.mark.e2e
def test_files_are_kept_masked_and_nothing_is_left_running(bouncer_run: Run) -> None:
    vdir = _dir(bouncer_run, "behind")
    meta = json.loads((vdir / "variant.json").read_text())
    entry = meta["pgbouncer"]
    assert entry["pool_mode"] == "transaction" and entry["default_pool_size"] == SERVER_POOL
    assert entry["sampler"]["rows_written"] > 0 and entry["sampler"]["errors"] == 0
    assert not pid_alive(entry["pid"])
    ini = (vdir / "pgbouncer.ini").read_text()
    assert "listen_addr = 127.0.0.1" in ini and "pool_mode = transaction" in ini
    users = (vdir / "pgbouncer-users.txt").read_text().splitlines()
    assert len(users) == 2 and all(line.endswith('"***"') for line in users)
    assert "LOG" in (vdir / "pgbouncer.log").read_text()
    assert leftovers(bouncer_run.run_dir / "started.jsonl") == []  # process and private dir
    assert not any(Path("/tmp").glob(f"poolbench-pg-pgbouncer-*{entry['pid']}*"))


@pytest.mark.e2e
def test_report_shows_both_sides_and_the_fan_in_chart(bouncer_run: Run) -> None:
    report = (bouncer_run.run_dir / "report.md").read_text().replace("\\_", "_")
    assert "PgBouncer: both sides" in report
    assert "client connections to the pooler, peak" in report
    assert "default_pool_size 4" in report  # demand 3 active (the capped pool) + 25 %
    assert "max_client_conn at least" in report and "capped" in report
    assert "| PgBouncer → PostgreSQL (server connections) | 3 | 3 |" in report  # model by layer
    assert (bouncer_run.run_dir / "charts" / "pgbouncer-test-fan_in.png").stat().st_size > 10_000
