"""Preparing a fresh database for a variant: its extensions, then its setup commands.

A third-party service expects its schema to exist before it starts (Alembic migrations, a
first user). A variant's `setup` commands run once per fresh database, in order, in the
variant's directory and environment, each in a session of its own so that a timeout, a
failure or Ctrl-C stops everything it started. Their output goes to `setup.log` (secrets
masked). A failure is one line naming the command, with the log's last lines; a
`CREATE EXTENSION` of an extension the server does not have is one line naming the
extension and the fix, whether it failed in setup.log or in the app's own log.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from poolbench.config.kinds import Provider
from poolbench.errors import PoolbenchError, first_line
from poolbench.infra.masked_log import MaskedLog, log_tail
from poolbench.infra.postgres import Database, connect
from poolbench.infra.process_group import stop_group
from poolbench.redact import mask_text

SETUP_LOG = "setup.log"
TAIL_LINES = 3
TAIL_CHARS = 400
COMMAND_CHARS = 120
# PostgreSQL 18: extension "x" is not available; up to 17: could not open extension control
# file ".../x.control": No such file or directory.
_MISSING_EXTENSION = re.compile(
    r'extension "(?P<a>[^"]+)" is not available'
    r'|could not open extension control file "[^"]*?/(?P<b>[^"/]+)\.control"'
)
_NOT_TRUSTED = re.compile(r'permission denied to create extension "(?P<name>[^"]+)"')


class SetupError(PoolbenchError):
    """A setup command failed, timed out or could not start, or an extension is missing; the
    message is one line. The variant's configuration is at fault, not the run: it ends the run
    as bad input."""

    ends_run = True


def extension_problem(log: Path, db: Database, experiment: str, variant: str) -> str | None:
    """A one-line diagnosis when `log` shows a CREATE EXTENSION that cannot work here."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    missing = _MISSING_EXTENSION.search(text)
    if missing:
        name = missing.group("a") or missing.group("b")
        return f"extension {name} is not available in {db.server_name}; " + _fix(db, experiment)
    untrusted = _NOT_TRUSTED.search(text)
    if untrusted:
        return (
            f"extension {untrusted.group('name')} needs a superuser to create it and the app's "
            f"role is not one; add it to [variants.{variant}] extensions = [...] and poolbench "
            "creates it before the setup commands"
        )
    return None


def _fix(db: Database, experiment: str) -> str:
    if db.provider != Provider.EMBEDDED:
        return (
            "install it on that server (e.g. Debian's postgresql-contrib) "
            "or use another --database-url"
        )
    return (
        f"set [experiments.{experiment}.postgres] bindir to a PostgreSQL installation that has "
        "it (e.g. /usr/lib/postgresql/15/bin, or --pg-bindir) or use --database-url"
    )


def create_extensions(db: Database, names: Sequence[str], experiment: str) -> None:
    """CREATE EXTENSION as the superuser in the app's database (untrusted ones need that)."""
    if not names:
        return
    with connect(db.admin_url) as admin:
        for name in names:
            try:
                admin.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name))
                )
            except psycopg.Error as exc:
                if _MISSING_EXTENSION.search(str(exc)):
                    raise SetupError(
                        f"extension {name} is not available in {db.server_name}; "
                        + _fix(db, experiment)
                    ) from None
                raise SetupError(f"CREATE EXTENSION {name} failed: {first_line(exc)}") from None


def run_setup(
    commands: Sequence[Sequence[str]],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
) -> float:
    """Run each command in order, all within `timeout_s`; return the seconds they took."""
    started = time.monotonic()
    deadline = started + timeout_s
    log_path.write_bytes(b"")
    for index, argv in enumerate(commands, 1):
        what = f"setup command {index}/{len(commands)} `{_shown(argv)}`"
        log = MaskedLog(log_path, mode="ab")
        try:
            log.write_line(f"$ {shlex.join(argv)}")
            proc = _start(argv, cwd, env, log, what)
            try:
                code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            finally:  # also on Ctrl-C: nothing it started outlives it
                stop_group(proc)
        finally:
            log.close()
        where = f"(log: {log_path})"
        if code is None:
            raise SetupError(
                f"{what} did not finish within setup_timeout_s = {timeout_s:g} s {where}: "
                + log_tail(log_path, TAIL_LINES, chars=TAIL_CHARS)
            )
        if code != 0:
            raise SetupError(
                f"{what} exited with code {code} {where}: "
                f"{log_tail(log_path, TAIL_LINES, chars=TAIL_CHARS)}"
            )
    return time.monotonic() - started


def _shown(argv: Sequence[str]) -> str:
    """A command as one short, masked line (an inline script may span many)."""
    text = " ".join(mask_text(shlex.join(argv)).split())
    return text if len(text) <= COMMAND_CHARS else text[: COMMAND_CHARS - 1] + "…"


def _start(
    argv: Sequence[str], cwd: Path | None, env: Mapping[str, str], log: MaskedLog, what: str
) -> subprocess.Popen[bytes]:
    if cwd is not None and not cwd.is_dir():
        raise SetupError(f"{what}: working directory {cwd} not found")
    try:  # its own session, dies with poolbench, noted for `poolbench clean`
        return log.spawn(list(argv), what="setup", cwd=cwd, env=dict(env))
    except OSError as exc:
        raise SetupError(f"{what} cannot start: {exc.strerror or exc}") from None
