"""Preparing a fresh database: contrib extensions, bindir, setup commands and their failures."""

from __future__ import annotations

import glob
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from conftest import pid_alive

from poolbench.infra.app_setup import SetupError, create_extensions, extension_problem, run_setup
from poolbench.infra.postgres import Database, embedded_server

pytestmark = pytest.mark.slow

COMMON_CONTRIB = ["citext", "pg_trgm", "hstore", "btree_gist"]
DEBIAN_BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def test_embedded_server_has_the_common_contrib_extensions(pg: Database) -> None:
    """Trusted ones are created by the app's own role, as a migration would."""
    with psycopg.connect(pg.app_url, autocommit=True) as conn:
        for name in COMMON_CONTRIB:
            conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{name}"')
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        conn.execute("DROP EXTENSION " + ", ".join(COMMON_CONTRIB))
    assert {"pg_stat_statements", "vector"} <= available


def test_untrusted_extension_is_created_by_the_superuser(pg: Database) -> None:
    create_extensions(pg, ["pg_stat_statements"], "e")
    with psycopg.connect(pg.admin_url) as conn:  # the app's database, as the superuser
        assert conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone()
        conn.execute("DROP EXTENSION pg_stat_statements")
        conn.commit()


def test_missing_extension_names_it_and_the_fix(pg: Database) -> None:
    with pytest.raises(SetupError) as caught:
        create_extensions(pg, ["uuid-ossp"], "seed")
    assert str(caught.value).startswith(
        "extension uuid-ossp is not available in the embedded PostgreSQL 18"
    )
    assert "set [experiments.seed.postgres] bindir" in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [
        'psycopg.errors.FeatureNotSupported: extension "uuid-ossp" is not available',  # 18
        'ERROR:  could not open extension control file "/usr/share/postgresql/16/extension/'
        'uuid-ossp.control": No such file or directory',  # up to 17
    ],
)
def test_missing_extension_is_recognised_in_a_log(pg: Database, tmp_path: Path, line: str) -> None:
    log = tmp_path / "app.log"
    log.write_text(f"INFO: starting\nTraceback (most recent call last):\n{line}\n")
    problem = extension_problem(log, pg, "e", "svc")
    assert problem and problem.startswith("extension uuid-ossp is not available in")
    remote = replace(pg, provider="url")
    assert "install it on that server" in extension_problem(log, remote, "e", "svc")


def test_untrusted_extension_in_a_log_points_at_the_extensions_setting(
    pg: Database, tmp_path: Path
) -> None:
    log = tmp_path / "setup.log"
    log.write_text('ERROR:  permission denied to create extension "pg_stat_statements"\n')
    problem = extension_problem(log, pg, "e", "svc")
    assert problem and "[variants.svc] extensions = [...]" in problem


@pytest.mark.skipif(not DEBIAN_BINDIRS, reason="no PostgreSQL installation on this machine")
def test_bindir_runs_the_cluster_from_the_machines_binaries() -> None:
    """Debian's PostgreSQL has all of contrib: uuid-ossp and pgcrypto, which the wheel lacks."""
    bindir = Path(DEBIAN_BINDIRS[-1])
    with embedded_server(bindir=bindir) as db:
        assert db.bindir == str(bindir) and db.describe()["bindir"] == str(bindir)
        assert db.server_name.startswith("PostgreSQL ") and str(bindir) in db.server_name
        with psycopg.connect(db.app_url, autocommit=True) as conn:  # trusted: the app's role
            conn.execute('CREATE EXTENSION "uuid-ossp"')
            conn.execute("CREATE EXTENSION pgcrypto")
            assert conn.execute("SELECT uuid_generate_v4() IS NOT NULL").fetchone()[0]


def test_setup_that_overruns_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "print('seeding users', flush=True)\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(SetupError) as caught:
        run_setup(
            [[sys.executable, "-c", "print('ok')"], [sys.executable, "-c", code]],
            cwd=None,
            env={},
            log_path=tmp_path / "setup.log",
            timeout_s=3,
        )
    message = str(caught.value)
    assert "\n" not in message and "setup command 2/2" in message
    assert "did not finish within setup_timeout_s = 3 s" in message
    assert message.endswith("seeding users")
    assert not pid_alive(int(pidfile.read_text()))
    assert "$ " in (tmp_path / "setup.log").read_text().splitlines()[0]


def test_setup_command_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        SetupError, match="setup command 1/1 `no-such-migrate-tool up` cannot start"
    ):
        run_setup(
            [["no-such-migrate-tool", "up"]],
            cwd=None,
            env={},
            log_path=tmp_path / "setup.log",
            timeout_s=5,
        )
