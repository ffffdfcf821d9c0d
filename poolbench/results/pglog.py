"""postgres.log read back: every session the server opened, and every refusal.

The collector samples ``pg_stat_activity`` (10 Hz by default), so a burst of connections
that opens and closes between two samples is invisible to it. The embedded server writes
its own account of every connection (``log_connections``, ``log_disconnections``) with a
prefix this module can parse (`LOG_LINE_PREFIX`: millisecond timestamp in UTC, backend pid,
SQLSTATE). From it we rebuild each session and the exact number of open connections at
every connect and disconnect (`poolbench.analysis.timeline`), which then says what the sampler saw
and which spikes it missed.

What the log says, and how it is read (PostgreSQL 13+, checked on 16):

- ``connection received: host=… port=…`` — a new backend (its pid is the session's key).
- ``connection authorized: user=U database=D[ application_name=A][ SSL enabled (…)]`` — the
  session starts counting here. PostgreSQL writes it *before* the backend appears in
  ``pg_stat_activity``, and ``disconnection`` *after* it has left, so the exact count at
  any instant is at least what a sample could see then. A name is shown as the server
  cleans it (non-ASCII as ``\\xNN``) and cut to 63 bytes, as in ``pg_stat_activity``.
- ``disconnection: session time: H:MM:SS.mmm user=…`` — the session ends.
- A ``FATAL`` with no ``disconnection`` after it ended the backend during its start-up
  (disconnections are logged only for sessions that finished starting): not a session.
  With SQLSTATE 53300 (``sorry, too many clients already``, ``remaining connection slots
  are reserved …``, too many connections for a role or database) it is a *refusal*; the
  first kind comes before authorization, so its user and database are unknown. "Remaining
  connection slots are reserved" means the slots an ordinary role may use were taken;
  "too many clients already" means every slot was, the superuser reserve included
  (`refusal_reason`).
- Every ``connection received`` is a backend the postmaster forked (`ServerLog.backends`),
  whether it then authenticated, was refused, or failed otherwise: at exhaustion each
  refused attempt still costs a fork (and, for the reserved-slot kind, an authentication).
- The postmaster's ``server process (PID n) was terminated by signal …`` ends pid n, and
  ``all server processes terminated; reinitializing`` / ``database system is shut down``
  end every session still open (a crash writes no disconnections).

Lines of other processes (checkpointer, autovacuum, the postmaster) are read and ignored;
a message's continuation lines (PostgreSQL starts them with a tab) belong to it; a last
line without its newline (the log cut mid-write) is dropped; lines in another format are
counted in `ServerLog.unparsed_lines`. Timestamps are Unix epoch seconds (ms resolution).
Events at the same millisecond keep the log's order (each message is one append).

An application that changes ``application_name`` after connecting (``SET``) keeps its
start-up name here while ``pg_stat_activity`` shows the new one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from poolbench.errors import PoolbenchError

LOG_LINE_PREFIX = "%m [%p] %e "
# Forced on the embedded server (after any user setting): the parser depends on each.
SERVER_LOG_SETTINGS: dict[str, str] = {
    "log_connections": "on",
    "log_disconnections": "on",
    "log_line_prefix": LOG_LINE_PREFIX,
    "log_timezone": "UTC",
    "lc_messages": "C",  # English messages, whatever the host's locale
    "logging_collector": "off",  # one file, written by appends, never rotated
    "log_destination": "stderr",
}
TOO_MANY_CONNECTIONS = "53300"
NAMEDATALEN_BYTES = 63  # pg_stat_activity.application_name keeps this many bytes

_PREFIX = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?P<tz>UTC|GMT|[+-]\d\d(?:\d\d)?) "
    r"\[(?P<pid>\d+)\] (?P<sqlstate>[0-9A-Z]{5}) (?P<level>[A-Z]+[0-9]?):  (?P<message>.*)$"
)
_RECEIVED = re.compile(r"^connection received: host=(?P<host>\S+)(?: port=(?P<port>\S+))?")
_AUTHORIZED = re.compile(
    r"^connection authorized: user=(?P<user>.*?) database=(?P<database>.*?)"
    r"(?: application_name=(?P<app>.*?))?"
    r"(?: SSL enabled \(protocol=[^,]*, cipher=[^,]*, bits=\d+\))?"
    r"(?: GSS \(authenticated=\w+, encrypted=\w+(?:, delegated_credentials=\w+)?, principal=.*\))?$"
)
_DISCONNECTION = re.compile(
    r"^disconnection: session time: (?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d\.\d+)"
)
_PROCESS_ENDED = re.compile(r"\(PID (?P<pid>\d+)\) (?:was terminated by|exited with)")
_ALL_ENDED = ("all server processes terminated; reinitializing", "database system is shut down")


@dataclass(frozen=True)
class Record:
    """One log message: its prefix and its text (continuation lines joined with newlines)."""

    ts: float
    pid: int
    sqlstate: str
    level: str
    message: str
    line: int  # 1-based line number in the file


@dataclass
class Session:
    """One backend that reached ``connection authorized``.

    `end` says how it ended: ``disconnection`` (logged), ``startup_failed`` (a FATAL during
    start-up, e.g. refused for the reserved slots: never a session), ``killed`` (the
    postmaster reported its death), ``server_stopped`` (every backend went: crash or
    shutdown), ``lost`` (its pid started a new backend with no end seen: `ended_at` is
    then that new backend's start, an upper bound), or None (open at the log's end).
    """

    pid: int
    user: str
    database: str
    application_name: str  # '' when the client sent none
    authorized_at: float
    received_at: float | None = None
    client: str | None = None  # "host:port" from ``connection received``
    ended_at: float | None = None
    end: str | None = None
    session_time_s: float | None = None  # as logged by ``disconnection``
    error: str | None = None  # "SQLSTATE message" of the FATAL that ended it, if any
    authorized_line: int = 0
    ended_line: int | None = None

    @property
    def established(self) -> bool:
        """It became a session (visible in pg_stat_activity), not a failed start-up."""
        return self.end != "startup_failed"


RESERVED, NO_SLOT, ROLE_OR_DATABASE = "reserved", "no_slot", "role_or_database"
REFUSAL_REASONS = {
    RESERVED: "remaining connection slots are reserved (for superusers or roles with "
    "pg_use_reserved_connections): the slots an application role may use were all taken",
    NO_SLOT: "sorry, too many clients already: every slot was taken, the superuser reserve too",
    ROLE_OR_DATABASE: "too many connections for a role or database (CONNECTION LIMIT)",
}


def refusal_reason(message: str) -> str:
    """Which limit a 53300 refusal hit (RESERVED, NO_SLOT or ROLE_OR_DATABASE), by its text."""
    if "remaining connection slots are reserved" in message:
        return RESERVED
    if "too many clients already" in message:
        return NO_SLOT
    return ROLE_OR_DATABASE


@dataclass(frozen=True)
class Refusal:
    """A connection refused with SQLSTATE 53300; user etc. known only if refused after
    authorization (reserved slots, per-role or per-database limits)."""

    ts: float
    pid: int
    message: str
    user: str | None = None
    database: str | None = None
    application_name: str | None = None
    line: int = 0

    @property
    def reason(self) -> str:
        return refusal_reason(self.message)


@dataclass
class Backend:
    """One backend the postmaster started for a client (``connection received``): a fork,
    whether or not it then authenticated, and whether the server then refused it (53300)."""

    pid: int
    started_at: float
    authorized: bool = False
    database: str | None = None  # known once authorized
    application_name: str | None = None
    refused: str | None = None  # refusal_reason() when refused


@dataclass
class ServerLog:
    """What a postgres.log holds about connections."""

    sessions: list[Session] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    backends: list[Backend] = field(default_factory=list)  # every ``connection received``
    start: float | None = None  # first message
    end: float | None = None  # last message
    records: int = 0
    unparsed_lines: int = 0
    cut: bool = False  # the last line had no newline and was dropped


# --------------------------------------------------------------------------- parsing


def _epoch(date: str, tz: str) -> float:
    # _PREFIX admits only "YYYY-MM-DD HH:MM:SS.mmm", which fromisoformat reads as strptime
    # would, in a tenth of the time (a log has a record per connection and disconnection)
    stamp = datetime.fromisoformat(date)
    offset = timedelta(0)
    if tz[0] in "+-":
        sign = -1 if tz[0] == "-" else 1
        offset = sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5] or 0))
    return stamp.replace(tzinfo=timezone(offset)).timestamp()


def records(lines: Iterable[str]) -> Iterable[Record | None]:
    """Messages in log order; None for each line that is neither a message nor a continuation."""
    pending: Record | None = None
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if line.startswith("\t") and pending is not None:
            pending = replace(pending, message=pending.message + "\n" + line[1:])
            continue
        match = _PREFIX.match(line)
        if match is None:
            yield None
            continue
        if pending is not None:
            yield pending
        pending = Record(
            ts=_epoch(match["date"], match["tz"]),
            pid=int(match["pid"]),
            sqlstate=match["sqlstate"],
            level=match["level"],
            message=match["message"],
            line=number,
        )
    if pending is not None:
        yield pending


class _Reader:
    """Folds records into sessions: one open backend per pid at a time."""

    def __init__(self) -> None:
        self.log = ServerLog()
        self.open: dict[int, Session] = {}  # authorized, not ended
        self.received: dict[int, tuple[float, str | None]] = {}  # received, not authorized
        self.backend: dict[int, Backend] = {}  # the latest backend of each pid

    def feed(self, rec: Record) -> None:
        log = self.log
        log.records += 1
        log.start = rec.ts if log.start is None else log.start
        log.end = rec.ts
        if rec.level == "LOG":
            self._log_message(rec)
        elif rec.level in ("FATAL", "PANIC"):
            self._fatal(rec)

    def _log_message(self, rec: Record) -> None:
        msg = rec.message
        if match := _RECEIVED.match(msg):
            self._close(rec.pid, rec.ts, rec.line, "lost")
            client = f"{match['host']}:{match['port']}" if match["port"] else match["host"]
            self.received[rec.pid] = (rec.ts, client)
            self.backend[rec.pid] = Backend(rec.pid, rec.ts)
            self.log.backends.append(self.backend[rec.pid])
        elif match := _AUTHORIZED.match(msg):
            self._close(rec.pid, rec.ts, rec.line, "lost")
            received_at, client = self.received.pop(rec.pid, (None, None))
            session = Session(
                pid=rec.pid,
                user=match["user"],
                database=match["database"],
                application_name=(match["app"] or "")[:NAMEDATALEN_BYTES],
                authorized_at=rec.ts,
                received_at=received_at,
                client=client,
                authorized_line=rec.line,
            )
            self.log.sessions.append(session)
            self.open[rec.pid] = session
            if (backend := self.backend.get(rec.pid)) is not None:
                backend.authorized, backend.database = True, session.database
                backend.application_name = session.application_name
        elif match := _DISCONNECTION.match(msg):
            ended = self.open.get(rec.pid)
            if ended is not None:
                ended.session_time_s = (
                    int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])
                )
                self._close(rec.pid, rec.ts, rec.line, "disconnection")
        elif match := _PROCESS_ENDED.search(msg):
            self._close(int(match["pid"]), rec.ts, rec.line, "killed")
        elif msg.startswith(_ALL_ENDED):
            for pid in list(self.open):
                self._close(pid, rec.ts, rec.line, "server_stopped")
            self.received.clear()

    def _fatal(self, rec: Record) -> None:
        session = self.open.get(rec.pid)
        if rec.sqlstate == TOO_MANY_CONNECTIONS:
            self.log.refusals.append(
                Refusal(
                    ts=rec.ts,
                    pid=rec.pid,
                    message=rec.message,
                    user=session.user if session else None,
                    database=session.database if session else None,
                    application_name=session.application_name if session else None,
                    line=rec.line,
                )
            )
            if (backend := self.backend.get(rec.pid)) is not None:
                backend.refused = refusal_reason(rec.message)
        self.received.pop(rec.pid, None)
        if session is not None:
            # a session that finished starting logs its disconnection after this; until
            # then it counts as a start-up that failed here
            session.error = f"{rec.sqlstate} {rec.message}"
            session.ended_at, session.ended_line, session.end = rec.ts, rec.line, "startup_failed"

    def _close(self, pid: int, ts: float, line: int, how: str) -> None:
        """End pid's open session; a disconnection overrides a FATAL logged just before it."""
        session = self.open.pop(pid, None)
        if session is not None and (how == "disconnection" or session.end is None):
            session.ended_at, session.ended_line, session.end = ts, line, how


class _Lines:
    """The lines of a log, holding back a last line without its newline (cut mid-write)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = lines
        self.cut = False

    def __iter__(self) -> Iterator[str]:
        previous: str | None = None
        for line in self.lines:
            if previous is not None:
                yield previous
            previous = line
        if previous is not None:
            if previous.endswith("\n"):
                yield previous
            else:
                self.cut = True


def parse_log(text: str | Iterable[str]) -> ServerLog:
    """Sessions and refusals from the text of a postgres.log (a str or an iterable of lines)."""
    lines = _Lines(text.splitlines(keepends=True) if isinstance(text, str) else text)
    reader = _Reader()
    for rec in records(lines):
        if rec is None:
            reader.log.unparsed_lines += 1
        else:
            reader.feed(rec)
    reader.log.cut = lines.cut
    return reader.log


def read_log(path: str | os.PathLike[str]) -> ServerLog:
    """parse_log of a file; a one-line PoolbenchError when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_log(f)
    except OSError as exc:
        raise PoolbenchError(f"cannot read the server log {path}: {exc.strerror}") from None
