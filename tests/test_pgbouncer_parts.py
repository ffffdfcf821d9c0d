"""PgBouncer's parts without a bench run: a missing binary, its settings checked, a run
hard-killed with PgBouncer in it, PgBouncer killed mid-run, the apps' NullPool switch, a
PgBouncer that fails to start, and the pooler figures of a synthetic series. The bench run
of tests/fixtures/pgbouncer/bench.toml and its readers are in tests/test_pgbouncer.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, pid_alive, poolbench_cli

from poolbench.config.bench import load_config
from poolbench.errors import PoolbenchError
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


def test_missing_binary_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    proc = poolbench_cli(
        "run", "--config", str(BENCH), "--experiment", "missing-binary", "--out", str(tmp_path)
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pgbouncer" in lines[0] and "pgbouncer_bin" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # no results folder: nothing was started


def test_no_binary_on_path_names_the_package_and_the_setting(monkeypatch) -> None:
    from poolbench.config.variants import PgBouncerSettings
    from poolbench.infra import pgbouncer

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pgbouncer, "SBIN", ())
    with pytest.raises(PoolbenchError) as error:
        pgbouncer.find_binary(PgBouncerSettings(), "mine")
    assert str(error.value) == (
        "PgBouncer is not installed: install Debian's package `pgbouncer` (apt-get install "
        "pgbouncer), or set pgbouncer_bin in [variants.mine.pgbouncer]"
    )


def test_pgbouncer_settings_are_checked(tmp_path: Path) -> None:
    base = BENCH.read_text()
    for good, bad, words in (
        (
            'pool_mode = "transaction"',
            'pool_mode = "transactions"',
            "pool_mode must be one of session, transaction",
        ),
        (
            "default_pool_size = 3",
            "default_pool_size = 0",
            "default_pool_size must be an integer >= 1",
        ),
        (
            'pool_mode = "transaction"',
            "pool_size_typo = 3",
            "unknown key variants.behind.pgbouncer.pool_size_typo",
        ),
    ):
        path = tmp_path / "bench.toml"
        path.write_text(base.replace(good, bad, 1))
        with pytest.raises(PoolbenchError, match=words):
            load_config(path)
    config = load_config(BENCH)
    tight = config.variants["tight"].pgbouncer
    assert tight.max_client_conn == 6 and tight.default_pool_size == SERVER_POOL  # merged
    assert config.variants["misconfigured"].env["DB_PREPARED_STATEMENTS"] == "on"


HARD_KILLED = """
import json, sys, time
from pathlib import Path
from poolbench.infra import ledger
from poolbench.config.variants import PgBouncerSettings
from poolbench.infra import pgbouncer
from poolbench.infra.postgres import Database
from poolbench.results.run_folder import owner

run_dir, fields = Path(sys.argv[1]), json.loads(sys.argv[2])
(run_dir / "e" / "v-1").mkdir(parents=True)
entry = {"experiment": "e", "variant": "v", "repeat": 1, "dir": "e/v-1", "status": "running"}
meta = {"schema": 1, "run_id": run_dir.name, "status": "running", "error": None,
        "owner": owner(), "experiments": [{"name": "e", "variants": [entry]}]}
(run_dir / "run.json").write_text(json.dumps(meta))
with ledger.recording(run_dir):
    with pgbouncer.running(PgBouncerSettings(), Database(**fields), run_dir / "e" / "v-1") as b:
        print(b.pid, flush=True)
        time.sleep(120)
"""


@pytest.mark.slow  # real PgBouncer and PostgreSQL processes
def test_a_hard_killed_run_leaves_no_pgbouncer_and_clean_removes_its_secrets(
    pg, tmp_path: Path
) -> None:
    fields = {
        k: getattr(pg, k)
        for k in (
            "provider",
            "host",
            "port",
            "dbname",
            "app_user",
            "app_password",
            "admin_user",
            "admin_password",
            "server_version",
        )
    }
    run_dir = tmp_path / "20261206-000000-e"
    proc = subprocess.Popen(
        [sys.executable, "-c", HARD_KILLED, str(run_dir), json.dumps(fields)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        bouncer_pid = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    private = [
        Path(i["path"]) for i in leftovers(run_dir / "started.jsonl") if i["kind"] == "data_dir"
    ]
    assert len(private) == 1 and (private[0] / "users.txt").exists()  # the clear passwords
    deadline = time.monotonic() + 10
    while pid_alive(bouncer_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(bouncer_pid)  # died with its parent (PR_SET_PDEATHSIG)
    cleaned = poolbench_cli("clean", str(tmp_path), timeout=60)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"removed {private[0]}" in cleaned.stdout
    assert not private[0].exists()
    assert leftovers(run_dir / "started.jsonl") == []


@pytest.mark.slow  # real PgBouncer and PostgreSQL processes
def test_pgbouncer_killed_mid_run_fails_the_variant_with_its_time(pg, tmp_path: Path) -> None:
    from poolbench.config.variants import PgBouncerSettings
    from poolbench.infra import pgbouncer
    from poolbench.run.events import RunEvents, VariantRef
    from poolbench.run.watchdog import VariantFault, Watchdog

    with (
        pgbouncer.running(PgBouncerSettings(), pg, tmp_path) as bouncer,
        Watchdog(RunEvents(), VariantRef("e", "v", 1, "1/1", tmp_path)) as dog,
    ):
        dog.watch_pgbouncer(bouncer.pid)
        dog.check()  # alive: nothing to say
        os.kill(bouncer.pid, signal.SIGKILL)
        with pytest.raises(
            VariantFault, match=rf"PgBouncer \(pid {bouncer.pid}\) exited \(signal 9\)"
        ):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                dog.check()
                time.sleep(0.1)
    assert dog.outcome()[0] == "failed"


@pytest.mark.slow  # real PgBouncer and PostgreSQL processes
@pytest.mark.parametrize("snapshot", ["apps_before", "apps_after"])
def test_the_apps_nullpool_switch_keeps_no_connection_between_requests(
    pg, tmp_path: Path, snapshot: str
) -> None:
    """DB_NULLPOOL=1 (with DB_PREPARED_STATEMENTS=off), identical in both snapshots: every
    route works, /debug/pools says NullPool, and nothing stays open after the requests."""
    import httpx
    import psycopg
    from conftest import fresh_database, with_db

    from poolbench.infra.app_server import PoolSettings, VariantSpec, start_variant

    with fresh_database(pg, "nullpool") as dbname:
        spec = VariantSpec(
            name="nullpool",
            app_dir=REPO / snapshot,
            env={"DB_NULLPOOL": "1", "DB_PREPARED_STATEMENTS": "off"},
        )
        with start_variant(
            spec,
            database_url=with_db(pg.app_url, dbname),
            log_path=tmp_path / "app.log",
            pools=PoolSettings(pool_size=5, max_overflow=0),
        ) as app:
            with httpx.Client(base_url=app.base_url, trust_env=False, timeout=10) as client:
                for path in ("/users/1", "/items/2", "/orders/3", "/reports/top-items", "/health"):
                    assert client.get(path).status_code == 200, path
                engines = client.get("/debug/pools").json()["engines"]
            assert engines and {e["pool_class"] for e in engines} == {"NullPool"}
            with psycopg.connect(with_db(pg.admin_url, "postgres")) as admin:
                held = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
                ).fetchone()[0]
            assert held == 0


@pytest.mark.slow  # a real PostgreSQL
def test_a_pgbouncer_that_fails_to_start_is_one_error_with_its_log_and_leaves_nothing(
    pg, tmp_path: Path
) -> None:
    import tempfile

    from poolbench.config.variants import PgBouncerSettings
    from poolbench.infra import pgbouncer

    shared = Path(tempfile.mkdtemp())  # PgBouncer runs unprivileged when we are root
    shared.chmod(0o755)
    fake = shared / "pgbouncer"  # answers --version, then fails as a bad ini would
    fake.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && { echo "PgBouncer 1.18.0"; exit 0; }\n'
        'echo "FATAL cannot load config file"; exit 1\n'
    )
    fake.chmod(0o755)
    out = tmp_path / "v"
    out.mkdir()
    settings = PgBouncerSettings(pgbouncer_bin=str(fake))
    private = set(Path(tempfile.gettempdir()).glob("poolbench-pg-pgbouncer-*"))
    try:
        with pytest.raises(PoolbenchError) as error, pgbouncer.running(settings, pg, out, "v"):
            pytest.fail("started")
    finally:
        shutil.rmtree(shared)
    assert (
        str(error.value)
        == "starting PgBouncer failed: exit status 1: FATAL cannot load config file"
    )
    assert set(Path(tempfile.gettempdir()).glob("poolbench-pg-pgbouncer-*")) == private
    assert (out / "pgbouncer.log").read_text().strip() == "FATAL cannot load config file"


@pytest.mark.skipif(os.geteuid() != 0, reason="PgBouncer runs as another user only under root")
def test_a_binary_the_unprivileged_user_cannot_run_is_one_error(pg, tmp_path: Path) -> None:
    from poolbench.config.variants import PgBouncerSettings
    from poolbench.infra import pgbouncer

    private = tmp_path / "root-only"  # mode 0700 under pytest's root-owned tmp directory
    private.mkdir(mode=0o700)
    binary = private / "pgbouncer"
    binary.symlink_to(pgbouncer.find_binary(PgBouncerSettings()))
    out = tmp_path / "v"
    out.mkdir()
    with (
        pytest.raises(
            PoolbenchError, match=r"^cannot start .*/pgbouncer as pgserver: Permission denied$"
        ),
        pgbouncer.running(PgBouncerSettings(pgbouncer_bin=str(binary)), pg, out, "v"),
    ):
        pytest.fail("started")


def test_pooler_figures_from_a_synthetic_series_with_known_answers(tmp_path: Path) -> None:
    """10 Hz for 10 s: clients 30, servers 5, waiting 0 then 12; maxwait i ms on row i; 50
    transactions/s waiting 2 ms each; probes 3.0 ms through the pooler, 1.0 ms direct."""
    from poolbench.analysis.pgbouncer import pgbouncer_figures
    from poolbench.analysis.typed import Window
    from poolbench.collector.pgbouncer import COLUMNS
    from poolbench.results.record import PgBouncerEntry

    rows = []
    for i in range(100):
        waiting = 0 if i < 50 else 12
        rows.append(
            {
                "ts": 1000 + i / 10,
                "cl_active": 30 - waiting,
                "cl_waiting": waiting,
                "sv_active": 5,
                "sv_idle": 0,
                "sv_used": 0,
                "sv_tested": 0,
                "sv_login": 0,
                "maxwait_s": i / 1000,
                "clients": 30,
                "servers": 5,
                "total_xact_count": 5 * i,
                "total_query_count": 15 * i,
                "total_wait_time_us": 5 * i * 2000,
                "avg_wait_time_us": 2000,
                "query_ms": 1.0,
                "probe_pooler_ms": 3.0 if i % 10 == 0 else None,
                "probe_direct_ms": 1.0 if i % 10 == 0 else None,
            }
        )
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(tmp_path / "pgbouncer.csv", index=False)
    (tmp_path / "app.log").write_text(
        "ERROR:    Exception in ASGI application\n"
        "asyncpg.exceptions.InvalidSQLStatementNameError: prepared statement "
        '"__asyncpg_stmt_7__" does not exist\n'
        "INFO:     127.0.0.1:1 - GET /users 200\n"
    )
    (tmp_path / "pgbouncer.log").write_text(
        "LOG max_client_conn: 6, max expected fd use: 26\n"
        "WARNING C-0x1: (nodb)/(nouser)@127.0.0.1:1 pooler error: no more connections allowed "
        "(max_client_conn)\n"
    )
    meta = {
        "pgbouncer": {
            "version": "1.18.0",
            "pool_mode": "transaction",
            "default_pool_size": 5,
            "reserve_pool_size": 0,
            "max_client_conn": 6,
            "server_ceiling": 5,
        }
    }
    entry = PgBouncerEntry.from_json(meta["pgbouncer"], "variant.json")
    f = pgbouncer_figures(entry, tmp_path, tmp_path / "app.log", Window("full load", 1002, 1008))
    assert f is not None and f.samples == 60  # rows 20..79
    assert (f.peak_clients, f.peak_servers, f.fan_in) == (30, 5, 6.0)
    assert (f.peak_waiting, f.mean_waiting) == (12, 12 * 30 / 60)
    assert f.wait_p95_ms == pytest.approx(np.percentile(np.arange(20, 80), 95))
    assert f.wait_per_xact_ms == pytest.approx(2.0)
    assert f.xact_per_s == pytest.approx(50.0) and f.query_per_s == pytest.approx(150.0)
    assert (f.hop_ms, f.hop_samples) == (2.0, 5)  # probes on rows 0..40: no client waited
    assert f.prepared_statement_errors == 1 and f.pooler_refusals == 1
    assert f.messages == {
        'asyncpg.exceptions.InvalidSQLStatementNameError: prepared statement "__asyncpg_…__" '
        "does not exist": 1
    }
    assert pgbouncer_figures(None, tmp_path, None, None) is None  # a variant without a pooler
