"""The PostgreSQL providers against real servers: embedded, and the machine's own via URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import pid_alive

from poolbench.errors import PoolbenchError
from poolbench.infra.postgres import Database, connect, embedded_server, existing_server
from poolbench.results.names import APPLICATION_NAME

pytestmark = pytest.mark.slow

LOCAL_URL = os.environ.get(
    "POOLBENCH_TEST_LOCAL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _local_server_available() -> bool:
    try:
        with psycopg.connect(LOCAL_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def test_embedded_app_role_is_not_superuser(pg: Database) -> None:
    with psycopg.connect(pg.app_url) as conn:
        user, is_super = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert user == pg.app_user
    assert is_super is False


def test_embedded_applies_settings_and_binds_loopback(pg: Database) -> None:
    assert pg.host == "127.0.0.1"
    assert pg.settings["max_connections"] == "300"
    assert pg.settings["log_connections"] == "on"
    with psycopg.connect(pg.admin_url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def test_monitor_gets_in_when_app_role_has_used_every_ordinary_slot() -> None:
    with embedded_server(settings={"max_connections": "6"}) as db:
        held = [psycopg.connect(db.app_url) for _ in range(3)]  # 6 - 3 reserved
        try:
            # SQLSTATE 53300; psycopg reports start-up failures by message only
            with pytest.raises(psycopg.OperationalError, match="remaining connection slots"):
                psycopg.connect(db.app_url)
            with psycopg.connect(db.admin_url) as admin:
                assert admin.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0] >= 4
        finally:
            for conn in held:
                conn.close()


def test_embedded_server_is_gone_after_the_block() -> None:
    with embedded_server() as db:
        pid = db.postmaster_pid
        assert pid is not None and pid_alive(pid)
        data_root = Path(psutil.Process(pid).cwd()).parent
    assert not pid_alive(pid)
    assert not data_root.exists()


def test_embedded_server_is_gone_after_an_error() -> None:
    with pytest.raises(RuntimeError), embedded_server() as db:
        pid = db.postmaster_pid
        raise RuntimeError("boom")
    assert not pid_alive(pid)


def test_port_already_taken_is_a_one_line_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with (
            pytest.raises(PoolbenchError, match=f"port {port} .* already in use"),
            embedded_server(port=port),
        ):
            pass


def test_interrupted_process_leaves_no_server(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from poolbench.infra.postgres import embedded_server\n"
        "with embedded_server() as db:\n"
        "    print(db.postmaster_pid, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0  # KeyboardInterrupt
    pid = int(proc.stdout.split()[0])
    assert not pid_alive(pid)


@pytest.mark.skipif(not _local_server_available(), reason="no PostgreSQL at " + LOCAL_URL)
def test_existing_server_creates_and_drops_a_private_database() -> None:
    with existing_server(LOCAL_URL) as db:
        assert db.provider == "url"
        assert db.server_log is None and "sampled only" in db.server_log_reason
        with psycopg.connect(db.app_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == db.dbname
    with psycopg.connect(LOCAL_URL) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (db.dbname,))
        assert left.fetchone()[0] == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x@127.0.0.1/db", "malformed database URL"),
        ("postgresql://u@127.0.0.1:notaport/db", "bad port"),
        ("postgresql://u:secret@127.0.0.1:1/db", "cannot connect"),
    ],
)
def test_bad_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(PoolbenchError, match=message) as error, existing_server(url):
        pass
    assert "\n" not in str(error.value)
    assert "secret" not in str(error.value)


@pytest.mark.skipif(not _local_server_available(), reason="no PostgreSQL at " + LOCAL_URL)
def test_role_without_monitoring_rights_is_told_the_fix() -> None:
    with (
        existing_server(LOCAL_URL) as db,  # its app role has no pg_monitor
        pytest.raises(PoolbenchError, match="GRANT pg_monitor"),
        existing_server(db.app_url),
    ):
        pass


def test_a_role_with_the_readme_privileges_owns_its_database_on_the_embedded_server(
    pg: Database,
) -> None:
    """pg_monitor + CREATEDB + CREATEROLE on the embedded server (PostgreSQL 18, where
    CREATEROLE no longer implies membership of the roles it creates). Before: on 15,
    InsufficientPrivilege "must be member of role poolbench_app_…" and the role left."""
    from conftest import maintenance

    name, password = f"half_{os.getpid()}", "half-pw"
    with maintenance(pg) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN CREATEDB CREATEROLE PASSWORD '{password}'")
        admin.execute(f"GRANT pg_monitor TO {name}")
    url = f"postgresql://{name}:{password}@127.0.0.1:{pg.port}/postgres"
    try:
        with existing_server(url) as db:
            with psycopg.connect(db.app_url) as conn:
                conn.execute("CREATE TABLE t (x int)")  # the app role owns the database
                owner = conn.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                    (db.dbname,),
                ).fetchone()[0]
            assert owner == db.app_user
        with maintenance(pg) as admin:
            left = admin.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = %s", (db.app_user,)
            ).fetchone()[0]
            assert left == 0
    finally:
        with maintenance(pg) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def test_poolbenchs_own_connections_are_left_out_of_every_count(pg: Database) -> None:
    """A connection of poolbench's own (databases created and dropped, the app's setup,
    clean) carries the collector's application_name, which the preflight and the collector
    leave out: untagged, one just closed and still exiting counted as an "other client"
    (the crowded-server test saw 21 of its 20 squatters on a busy machine)."""
    with connect(pg.admin_url) as own:
        row = own.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row == (APPLICATION_NAME,)
